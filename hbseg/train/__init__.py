"""Training core: losses, schedules, AMP, validation Dice, atomic checkpoints, exact resume, DDP.

``train(TrainConfig(...))`` is the library entry point; ``hbseg-train`` is its CLI.
Submodules import torch lazily from here, so ``import hbseg.train`` stays light.
"""

from __future__ import annotations

from hbseg.lazy import lazy_exports

__all__ = ["TrainConfig", "train", "get_loss", "list_losses", "DiceMeter", "resolve_amp",
           "build_scheduler", "plot_curves"]


_WHERE = {
    "TrainConfig": "config", "train": "trainer", "get_loss": "losses", "list_losses": "losses",
    "DiceMeter": "metrics", "resolve_amp": "amp", "build_scheduler": "schedule",
    "plot_curves": "plot",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
