"""TensorBoard event files in ``RUN_DIR/tb``: one scalar per metric per epoch, offline.

Written with tensorboardX (numpy and protobuf only; ``torch.utils.tensorboard`` would pull
in the whole ``tensorboard`` package). Every number of a ``metrics.jsonl`` record becomes
a scalar at step = epoch: ``train/loss``, ``train/lr``, ``val/loss``, ``val/mean_dice``,
``dice/<class>``, ``time/epoch_seconds`` and whatever timing the record carries, so a
metric added to the record appears here without a change. Each record is flushed at once,
so a killed run keeps its curves. On ``--resume`` the events after the checkpoint's epoch
are purged, as ``metrics.jsonl`` is truncated.

To see the curves in WandB: ``wandb sync --sync-tensorboard RUN_DIR/tb`` (or
``wandb.init(sync_tensorboard=True)`` before training); nothing here touches the network.
"""

from __future__ import annotations

from numbers import Real
from pathlib import Path

__all__ = ["TB_DIR", "scalars", "TensorBoardLog"]

TB_DIR = "tb"
# record key → TensorBoard tag; other numeric keys go under time/ (timing and throughput)
_TAGS = {"loss": "train/loss", "lr": "train/lr", "images": "train/images",
         "val_loss": "val/loss", "mean_dice": "val/mean_dice"}
_SKIP = ("epoch", "world_size")


def scalars(record: dict) -> dict[str, float]:
    """The TensorBoard scalars of one ``metrics.jsonl`` record (``None`` values skipped)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in _SKIP or isinstance(value, bool):
            continue
        if isinstance(value, dict) and key == "dice":
            for cls, d in value.items():
                if isinstance(d, Real):
                    out[f"dice/{cls}"] = float(d)
        elif isinstance(value, Real):
            out[_TAGS.get(key, f"time/{key}")] = float(value)
    return out


class TensorBoardLog:
    """``log(record)`` after each epoch; does nothing when disabled (``--no-tensorboard``,
    or a rank other than 0)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, resume_epoch: int | None = None):
        self.writer = None
        if not enabled:
            return
        from tensorboardX import SummaryWriter

        folder = Path(run_dir) / TB_DIR
        if resume_epoch is None and folder.is_dir():  # a fresh run: no stale curves
            for old in folder.glob("events.out.tfevents.*"):
                old.unlink()
        purge = None if resume_epoch is None else resume_epoch + 1
        self.writer = SummaryWriter(logdir=str(folder), purge_step=purge, flush_secs=10)

    def log(self, record: dict) -> None:
        if self.writer is None:
            return
        step = int(record["epoch"])
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
