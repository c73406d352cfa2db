"""Learning-rate schedule: linear warmup, then cosine decay, stepped once per optimizer step."""

from __future__ import annotations

import math

import torch

__all__ = ["WarmupCosine", "build_scheduler"]


class WarmupCosine:
    """Multiplier of the base lr at optimizer step ``step`` (a picklable LambdaLR lambda).

    Steps ``0 … warmup-1`` rise linearly to 1 (the first step already moves, at
    1/warmup); then the factor follows a half cosine from 1 down to ``min_ratio`` at
    ``total`` steps, and stays there.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
        self.warmup_steps = max(0, int(warmup_steps))
        self.total_steps = max(1, int(total_steps))
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float,
    min_ratio: float = 0.01,
) -> torch.optim.lr_scheduler.LambdaLR:
    total = steps_per_epoch * epochs
    warmup = min(round(warmup_epochs * steps_per_epoch), max(0, total - 1))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, total, min_ratio))
