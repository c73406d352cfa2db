"""Exact resume: everything a run needs to continue as if it had never stopped.

``last.pt`` holds, next to the model: optimizer, scheduler and grad-scaler state, the
number of finished epochs, the best metric so far, the RNG states of torch (CPU and
CUDA), numpy and Python for every rank, and the resolved config. Loaders are seeded by
(seed, epoch) through ``set_epoch``, so epoch ``e`` reads the same batches with the same
augmentation whether or not the run stopped before it. On CPU an interrupted and resumed
run therefore ends with the metrics of an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from hbseg.errors import ConfigError

from .config import TrainConfig

__all__ = [
    "RESUMABLE", "get_rng_state", "set_rng_state", "resume_config", "restore_training_state",
    "truncate_metrics", "check_belongs", "check_classes",
]

# What may differ from the saved config on --resume: nothing that changes the model, the
# data, or the optimisation. A different --epochs re-plans the cosine from here on (the
# exact-resume guarantee holds when it is unchanged).
RESUMABLE = frozenset({
    "epochs", "stop_after", "val_every", "val_full_res", "val_batch_size", "workers",
    "progress", "log_every", "data", "cache", "device", "compile", "compile_mode",
    "tensorboard",
})


def get_rng_state() -> dict:
    name, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state = {
        "torch": torch.get_rng_state(),
        # plain ints, not numpy's array: checkpoints hold only what weights_only loads
        "numpy": (name, key.tolist(), pos, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, key, pos, has_gauss, gauss = state["numpy"]  # key: a list, or an array (version 1)
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        saved = state["cuda"]
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved)


def resume_config(saved: TrainConfig, given: dict) -> TrainConfig:
    """The saved config with the options given again on the command line applied.

    ``given`` holds only options the user typed. One that may not change on resume and
    differs from the saved value is a ConfigError naming it; ``stop_after`` is cleared
    unless given (the interruption it caused is over).
    """
    names = {f.name for f in fields(TrainConfig)}
    changed = {k: v for k, v in given.items() if k in names and getattr(saved, k) != v}
    fixed = sorted(k for k in changed if k not in RESUMABLE and k != "out")
    if fixed:
        parts = [f"--{k.replace('_', '-')} (run has {getattr(saved, k)!r}, given {changed[k]!r})"
                 for k in fixed]
        raise ConfigError(
            "cannot change on --resume: " + "; ".join(parts)
            + ". Resume with the same settings, or start a new run with --out"
        )
    changed.pop("out", None)
    changed.setdefault("stop_after", None)
    if given.get("out") is not None:
        # the folder being resumed, as given now: the run may have been moved or copied, or
        # be resumed from another working directory; never write into the old location
        changed["out"] = given["out"]
    return saved.replace(**changed)


def restore_training_state(
    ckpt: dict, optimizer, scheduler, scaler, rank: int, world_size: int
) -> tuple[int, dict | None]:
    """Load optimizer/scheduler/scaler; returns (finished epochs, this rank's RNG state)."""
    optimizer.load_state_dict(ckpt["optimizer"])
    sched = dict(ckpt["scheduler"])
    # the schedule's shape (warmup, total steps) comes from the config, not the file
    sched["lr_lambdas"] = [None] * len(sched.get("lr_lambdas") or [None])
    scheduler.load_state_dict(sched)
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    rngs = ckpt.get("rng") or []
    rng = rngs[rank] if len(rngs) == world_size else None
    return int(ckpt["epoch"]), rng


def truncate_metrics(path: Path, epochs_done: int) -> list[dict]:
    """Keep the metrics lines of finished epochs (a line may have been written for an
    epoch whose checkpoint was not); returns the records kept."""
    from hbseg.atomic import atomic_write_text

    from .metrics_file import read_metrics

    if not path.is_file():
        return []
    kept = [rec for rec in read_metrics(path) if rec.get("epoch", 0) <= epochs_done]
    atomic_write_text(path, "".join(json.dumps(rec) + "\n" for rec in kept))  # as the trainer writes them
    return kept


# Settings a resume may change that say nothing about where the model came from; any other
# difference between last.pt and config.yaml means the two are from different runs.
_RUN_TIME = RESUMABLE - {"data", "cache"} | {"out", "stop_after"}


def check_belongs(run_dir: Path, ckpt: dict, cfg: TrainConfig) -> None:
    """Refuse to resume ``run_dir`` from a ``last.pt`` that is not its own, and a resume that
    would undo finished epochs: ``cfg.epochs`` (or ``stop_after``) below the epochs done.

    Own means: the checkpoint's settings equal ``config.yaml``'s, but for the run-time
    options a resume may change. Both are written from one config by every run, so a
    difference is a checkpoint copied in from elsewhere; resuming it would rewrite
    ``config.yaml`` to the other run's data set and model."""
    from hbseg.errors import CheckpointError

    from .config import CONFIG_NAME, load_config

    last = run_dir / "last.pt"
    done = int(ckpt.get("epoch", 0))
    if cfg.epochs < done:
        raise ConfigError(f"--epochs {cfg.epochs} is fewer than the {done} epochs this run has "
                          f"done; resume with --epochs {done} or more (or start a new run with "
                          "--out)", run_dir)
    if cfg.stop_after is not None and cfg.stop_after <= done:
        raise ConfigError(f"--stop-after {cfg.stop_after}: this run has already done {done} "
                          f"epochs; give a later epoch", run_dir)
    path = run_dir / CONFIG_NAME
    if not path.is_file() or not isinstance(ckpt.get("config"), dict):
        return
    mine, theirs = load_config(path), TrainConfig.from_dict(ckpt["config"])
    differ = [f.name for f in fields(TrainConfig) if f.name not in _RUN_TIME
              and not _same_setting(f.name, getattr(mine, f.name), getattr(theirs, f.name))]
    if differ:
        parts = "; ".join(f"{k}: {getattr(theirs, k)!r} in last.pt, {getattr(mine, k)!r} in "
                          f"{CONFIG_NAME}" for k in differ[:3])
        more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
        raise CheckpointError(f"does not belong to this run folder ({parts}{more}); it was "
                              f"copied from another run. Put the run's own last.pt back, or "
                              f"start a new run with --out", last)


def _same_setting(name: str, a, b) -> bool:
    if name in ("data", "cache", "spec", "weights", "pseudo", "pseudo_data") and a and b:
        return os.path.realpath(a) == os.path.realpath(b)
    return a == b


def check_classes(last: Path, ckpt: dict, class_names) -> None:
    """The checkpoint's model predicts the classes of the run's data, in order."""
    from hbseg.errors import CheckpointError

    have = tuple((ckpt.get("card") or {}).get("class_names") or ())
    want = tuple(class_names)
    if have and have != want:
        show = lambda n: ", ".join(n[:3]) + (", ..." if len(n) > 3 else "")  # noqa: E731
        raise CheckpointError(f"does not belong to this run: its model predicts {len(have)} "
                              f"classes ({show(have)}) but the run's data has {len(want)} "
                              f"({show(want)})", last)


def check_resumable(run_dir: Path) -> Path:
    last = run_dir / "last.pt"
    if not last.is_file():
        raise ConfigError("nothing to resume: no last.pt here (the run never finished an epoch)",
                          run_dir)
    return last
