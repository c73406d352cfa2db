"""Multi-label segmentation losses: every class is its own sigmoid, never a softmax.

Bones overlap at their joints in the annotations, so a pixel may belong to two classes.
All losses take raw logits [B, C, H, W] and 0/1 targets of the same shape, and compute
in float32 whatever the autocast dtype.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from hbseg.errors import ConfigError

__all__ = ["LOSSES", "list_losses", "get_loss", "bce_loss", "dice_loss", "focal_loss"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 − soft Dice per class (summed over batch and pixels), averaged over classes."""
    prob = torch.sigmoid(logits.float())
    target = target.float()
    dims = (0, 2, 3)
    inter = (prob * target).sum(dims)
    denom = prob.sum(dims) + target.sum(dims)
    return 1.0 - ((2.0 * inter + smooth) / (denom + smooth)).mean()


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float | None = None
) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al.), mean over elements."""
    logits, target = logits.float(), target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)  # probability given to the true label
    loss = (1.0 - p_t) ** gamma * bce
    if alpha is not None:
        loss = loss * (alpha * target + (1.0 - alpha) * (1.0 - target))
    return loss.mean()


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return bce_loss(logits, target) + dice_loss(logits, target)


def focal_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # focal terms are ~10x smaller than BCE's; the weight keeps both halves comparable
    return 10.0 * focal_loss(logits, target) + dice_loss(logits, target)


LOSSES: dict[str, LossFn] = {
    "bce": bce_loss,
    "dice": dice_loss,
    "bce_dice": bce_dice_loss,
    "focal_dice": focal_dice_loss,
}


def list_losses() -> list[str]:
    return list(LOSSES)


def get_loss(name: str) -> LossFn:
    key = name.lower().replace("-", "_").replace("+", "_")
    if key in LOSSES:
        return LOSSES[key]
    close = difflib.get_close_matches(key, list(LOSSES), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown loss {name!r}{hint} Valid: {', '.join(LOSSES)}")
