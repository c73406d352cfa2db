"""Training core: losses, schedules, AMP, validation Dice, atomic checkpoints, exact resume, DDP.

``train(TrainConfig(...))`` is the library entry point; ``hbseg-train`` is its CLI.
Submodules import torch lazily from here, so ``import hbseg.train`` stays light.
"""

from __future__ import annotations

__all__ = ["TrainConfig", "train", "get_loss", "list_losses", "DiceMeter", "resolve_amp",
           "build_scheduler", "plot_curves"]


def __getattr__(name: str):
    if name == "TrainConfig":
        from .config import TrainConfig

        return TrainConfig
    if name == "train":
        from .trainer import train

        return train
    if name in ("get_loss", "list_losses"):
        from . import losses

        return getattr(losses, name)
    if name == "DiceMeter":
        from .metrics import DiceMeter

        return DiceMeter
    if name == "resolve_amp":
        from .amp import resolve_amp

        return resolve_amp
    if name == "build_scheduler":
        from .schedule import build_scheduler

        return build_scheduler
    if name == "plot_curves":
        from .plot import plot_curves

        return plot_curves
    raise AttributeError(f"module 'hbseg.train' has no attribute {name!r}")
