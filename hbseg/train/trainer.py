"""``train(cfg)``: index → folds → loaders → model → epochs → metrics and checkpoints.

Run folder (``cfg.out``; only rank 0 writes):

    config.yaml     the resolved TrainConfig
    metrics.jsonl   one line per epoch: loss, lr, per-class and mean Dice, timing
    last.pt         model + everything needed to resume exactly (written every epoch)
    best.pt         the model at the best validation mean Dice (no optimizer state)
    curves.png      loss and Dice curves, drawn at the end

While a process writes it, the folder is locked (``hbseg.locks``: ``.lock-<name>`` beside
it); a second ``hbseg-train`` on it is refused, naming the first one's pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from hbseg.atomic import append_text
from hbseg.data.classes import CLASSES
from hbseg.errors import ConfigError
from hbseg.models import ModelCard, create_model, read_checkpoint, save_checkpoint
from hbseg.progress import bar_disabled

from . import ddp
from .amp import resolve_amp
from .config import CONFIG_NAME, TrainConfig, save_config
from .interrupt import TrainingInterrupted, graceful_sigint
from .loop import NonFiniteLossError, StepSettings, train_one_epoch, validate
from .losses import get_loss
from .resume import (
    check_belongs,
    check_classes,
    check_resumable,
    get_rng_state,
    restore_training_state,
    set_rng_state,
    truncate_metrics,
)
from .run_data import (  # the names stay importable from here
    check_against_index,
    dataset_spec,
    prepare_index,
    split_folds,
)
from .schedule import build_scheduler

__all__ = ["train", "prepare_index", "split_folds", "check_against_index", "model_card",
           "make_loader", "RUN_FILES", "held_run_files"]

RUN_FILES = ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "curves.png")


def held_run_files(folder: str | Path) -> list[str]:
    """The run files in ``folder`` that a new run would destroy. A ``config.yaml`` alone
    (with ``tb/``) is what a run that failed before its first epoch leaves: nothing worth
    keeping, so a new run may replace it without ``--overwrite``."""
    held = [n for n in RUN_FILES if (Path(folder) / n).exists()]
    return [] if held == ["config.yaml"] else held


# -- data ---------------------------------------------------------------------------------
def make_loader(kind: str, index: pd.DataFrame, lcfg, mode: str, device: str):
    """The loader factory (a seam tests replace with a fake back-end)."""
    from hbseg.loaders import build_loader

    return build_loader(kind, index, lcfg, mode=mode, device=device)


# -- model --------------------------------------------------------------------------------
def model_card(cfg: TrainConfig, spec=None) -> ModelCard:
    a = cfg.augment
    channels = 1 if spec is None else spec.channels
    n = cfg.normalize.for_channels(channels)
    names = CLASSES if spec is None else spec.classes
    return ModelCard(
        arch=cfg.arch, encoder=cfg.encoder, in_channels=channels, classes=len(names),
        class_names=names, normalize={"mean": _plain(n.mean), "std": _plain(n.std)},
        dataset=None if spec is None else spec.to_dict(),
        clahe={"p": a.clahe_p, "clip_limit": a.clahe_clip_limit,
               "tile_grid": list(a.clahe_tile_grid)},
        size=cfg.size, crop=cfg.crop, roi_margin=cfg.roi_crop, canonical_hand=cfg.canonical_hand,
    )


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def _loader_config(cfg: TrainConfig, spec, mode: str, rank: int, world: int):
    """``cfg.loader_config`` with the data set's channels, classes and normalisation."""
    from dataclasses import replace

    lcfg = cfg.loader_config(mode, rank, world)
    if spec is None:
        return lcfg
    return replace(lcfg, channels=spec.channels, num_classes=spec.num_classes,
                   normalize=lcfg.normalize.for_channels(spec.channels))


def _check_size(model: torch.nn.Module, cfg: TrainConfig) -> None:
    if not getattr(model, "requires_divisible_input_shape", True):
        return
    stride = getattr(getattr(model, "encoder", None), "output_stride", 32)
    if cfg.size % stride:
        lo, hi = cfg.size // stride * stride, (cfg.size // stride + 1) * stride
        raise ConfigError(f"--size {cfg.size} must be a multiple of {stride} for "
                          f"{cfg.arch}/{cfg.encoder}; try {lo or hi} or {hi}")


def _unused_parameters(model: torch.nn.Module, cfg: TrainConfig, device: torch.device,
                       in_channels: int = 1) -> list[str]:
    """Parameters one forward/backward leaves without a gradient (pspnet's unused encoder
    stages, a ViT's classifier head). DDP must be told about them, or it waits for their
    gradients forever. Eval mode, so BatchNorm statistics are not touched."""
    model.eval()
    x = torch.zeros(1, in_channels, cfg.size, cfg.size, device=device)
    model(x).float().sum().backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    model.train()
    return unused


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights of convolutions and linear layers; none on biases or norms."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


# -- the run ------------------------------------------------------------------------------
def train(
    cfg: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    index: pd.DataFrame | None = None,
) -> dict:
    """Train as ``cfg`` says; returns a summary (best and last metrics, epochs, seconds).

    ``resume`` continues the run in ``cfg.out`` from its last.pt (``cfg`` should be the
    saved config, see ``resume.resume_config``). Under torchrun every rank calls this.
    """
    info = ddp.init_distributed(cfg.device)
    started_group = info.distributed
    run = None
    try:
        with _run_dir_lock(cfg.out, info.is_main):
            run = _Run(cfg, info, resume, overwrite, index)
            return run.fit()
    finally:
        if run is not None:
            run.close()
        if started_group:
            ddp.cleanup_distributed()


@contextlib.contextmanager
def _run_dir_lock(out: str, main: bool):
    """The run folder's lock (``hbseg.locks``), held by rank 0 from before anything is read
    or deleted until the last file is written: a second ``hbseg-train`` on the same folder
    (fresh, --overwrite or --resume) is refused, naming the holder's pid. Every rank gets
    rank 0's refusal, so none waits for the others."""
    from hbseg.locks import folder_lock

    with contextlib.ExitStack() as stack:
        err = None
        if main:
            try:
                stack.enter_context(folder_lock(out, "run folder"))
            except Exception as e:  # noqa: BLE001 - forwarded to every rank
                err = e
        err = ddp.broadcast_object(err)
        if err is not None:
            raise err
        yield


class _Run:
    def __init__(self, cfg: TrainConfig, info: ddp.DistInfo, resume: bool, overwrite: bool,
                 index: pd.DataFrame | None):
        self.cfg, self.info, self.resume = cfg, info, resume
        self.out = Path(cfg.out)
        self.device = torch.device(info.device)
        self.main = info.is_main
        self._ckpt = None
        if resume:  # checked before anything is read, built or written
            self._ckpt = read_checkpoint(check_resumable(self.out))
            check_belongs(self.out, self._ckpt, cfg)
        # the data, and what depends on it
        index = prepare_index(cfg, self.main) if index is None else index
        self.spec = dataset_spec(cfg)
        if self.spec is not None and cfg.loader == "baseline":
            raise ConfigError("--loader baseline reads the hands' JSON only; use --loader dali or "
                              "torch for this data set")
        self.class_names = CLASSES if self.spec is None else self.spec.classes
        if resume:
            check_classes(self.out / "last.pt", self._ckpt, self.class_names)
        check_against_index(cfg, index)
        from hbseg.data.split import apply_split

        index = apply_split(index, cfg.split, cfg.data, described=self.spec is not None)
        self.train_index, self.val_index = split_folds(index, cfg.fold)
        if cfg.pseudo is not None:  # extra training rows, repeated by weight (pseudo.py)
            from .pseudo import add_pseudo_labels

            self.train_index = add_pseudo_labels(cfg, self.train_index, self.main, labelled=index)
        self.amp = resolve_amp(cfg.amp, self.device)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        # the model: the same seed on every rank (DDP also broadcasts rank 0's weights)
        torch.manual_seed(cfg.seed)
        in_ch = 1 if self.spec is None else self.spec.channels
        raw = create_model(cfg.arch, cfg.encoder, in_ch, len(self.class_names), weights=cfg.weights)
        _check_size(raw, cfg)
        raw = raw.to(self.device)
        if cfg.channels_last:
            raw = raw.to(memory_format=torch.channels_last)
        self.raw = raw
        self.card = model_card(cfg, self.spec)
        self.loss_fn = get_loss(cfg.loss)
        # loaders: one shard per rank
        dev = "cuda" if self.device.type == "cuda" else "cpu"
        W, R = info.world_size, info.rank
        self.train_loader = make_loader(cfg.loader, self.train_index,
                                        _loader_config(cfg, self.spec, "train", R, W), "train", dev)
        self.val_loader = None
        if self.val_index is not None:
            self.val_loader = make_loader(cfg.loader, self.val_index,
                                          _loader_config(cfg, self.spec, "eval", R, W), "eval", dev)
        from hbseg.dali_pipes.loader_base import num_batches

        smallest = num_batches(len(self.train_index), cfg.batch_size, W - 1, W)
        self.steps = min(len(self.train_loader), smallest)  # DDP lockstep, see ddp.py
        if self.steps < 1:
            raise ConfigError(f"{len(self.train_index)} training images cannot feed {W} ranks")
        # optimisation
        from .fast import compile_model, make_optimizer

        self.optimizer = make_optimizer(_param_groups(raw, cfg.weight_decay), cfg.lr,
                                        cfg.weight_decay, self.device)
        self.scheduler = build_scheduler(self.optimizer, self.steps, cfg.epochs,
                                         cfg.warmup_epochs, cfg.min_lr_ratio)
        self.scaler = self.amp.grad_scaler()
        model = raw
        if info.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            unused = _unused_parameters(raw, cfg, self.device, in_ch)
            model = DistributedDataParallel(raw, device_ids=ids,
                                            find_unused_parameters=bool(unused))
        self.eval_model = raw
        if cfg.compile:
            # validation runs the compiled model too: eval shapes are fixed per run (one size,
            # or each image's own at --val-full-res, where dynamo recompiles per shape)
            model = compile_model(model, cfg.compile_mode)
            self.eval_model = compile_model(raw, cfg.compile_mode)
        self.model = model
        self.settings = StepSettings(self.amp, cfg.grad_clip or None, cfg.channels_last,
                                     cfg.log_every, cfg.progress and self.main)
        if not resume:  # last: a run that cannot start leaves an older run untouched
            self._claim_run_dir(overwrite)

    # -- run folder -------------------------------------------------------------------
    def _claim_run_dir(self, overwrite: bool) -> None:
        err = None
        if self.main:
            existing = [n for n in RUN_FILES if (self.out / n).exists()]
            if held_run_files(self.out) and not overwrite:
                err = ConfigError(
                    f"already holds a run ({', '.join(existing)}); continue it with "
                    f"--resume {self.out}, or pass --overwrite, or choose another --out",
                    self.out)
            else:
                try:
                    self.out.mkdir(parents=True, exist_ok=True)
                    for n in existing:
                        (self.out / n).unlink()
                except OSError as e:
                    err = e
        err = ddp.broadcast_object(err)
        if err is not None:
            raise err

    def _state(self, epoch: int, record: dict) -> dict:
        rngs = ddp.gather_objects(get_rng_state())  # collective: every rank calls it
        return {
            "epoch": epoch,
            "best_metric": self.best,
            "best_epoch": self.best_epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rngs,
            "world_size": self.info.world_size,
            "config": self.cfg.to_dict(),
            "metrics": record,
        }

    # -- the epochs -------------------------------------------------------------------
    def close(self) -> None:
        """Release the loaders' pipelines and caches now: a k-fold, tuning or resume in the
        same process must not hold this run's GPU cache beside its own."""
        from hbseg.dali_pipes.loader_base import close_loader

        for loader in (getattr(self, "train_loader", None), getattr(self, "val_loader", None)):
            if loader is not None:
                close_loader(loader)

    def fit(self) -> dict:
        from .plot import plot_curves  # imported up front: a long run must not fail at the end

        cfg, out = self.cfg, self.out
        self.best, self.best_epoch = float("-inf"), 0
        start_epoch = 0
        records: list[dict] = []
        if self.resume:
            ckpt, self._ckpt = self._ckpt, None
            self.raw.load_state_dict(ckpt["state_dict"])
            start_epoch, rng = restore_training_state(
                ckpt, self.optimizer, self.scheduler, self.scaler, self.info.rank,
                self.info.world_size)
            self.best = ckpt.get("best_metric", self.best)
            self.best_epoch = ckpt.get("best_epoch", 0)
            if rng is not None:
                set_rng_state(rng)
            del ckpt
            if self.main:
                records = truncate_metrics(out / "metrics.jsonl", start_epoch)
        if self.main:
            save_config(cfg, out / CONFIG_NAME)
        from .tblog import TensorBoardLog

        self.tb = TensorBoardLog(out, cfg.tensorboard and self.main,
                                 start_epoch if self.resume else None)
        end_epoch = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)

        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs, initial=start_epoch, desc="epochs", unit="ep",
                   disable=bar_disabled(self.settings.progress), dynamic_ncols=True)
        t_run = time.perf_counter()
        stopped_at = None
        try:
            with graceful_sigint(announce=self.main) as stop:
                for epoch in range(start_epoch, end_epoch):
                    record = self._epoch(epoch)
                    records.append(record)
                    self._report(bar, record, tqdm)
                    # every rank must agree, or the ones that go on wait forever
                    if ddp.any_true(stop.requested) and epoch + 1 < end_epoch:
                        stopped_at = epoch + 1
                        break
        except KeyboardInterrupt:
            done = start_epoch + len(records)
            raise TrainingInterrupted(
                f"interrupted during epoch {done + 1}; last.pt holds epoch {done}. "
                f"Continue with: hbseg-train --resume {out}", out / "last.pt") from None
        finally:
            bar.close()
            self.tb.close()
        if self.main and records:
            plot_curves(records, out / "curves.png",
                        title=f"{cfg.arch}/{cfg.encoder} {cfg.size}px fold {cfg.fold}")
        if stopped_at is not None:
            raise TrainingInterrupted(
                f"stopped by Ctrl-C after epoch {stopped_at}, saved. "
                f"Continue with: hbseg-train --resume {out}", out / "last.pt")
        return self._summary(records, end_epoch, t_run)

    def _report(self, bar, record: dict, tqdm) -> None:
        bar.update()
        bar.set_postfix(loss=f"{record['loss']:.4f}",
                        dice="-" if record["mean_dice"] is None else f"{record['mean_dice']:.4f}",
                        img_s=f"{record['images_per_s']:.1f}")
        if self.main:
            tqdm.write(_epoch_line(record, self.cfg.epochs), file=sys.stderr)

    def _summary(self, records: list[dict], end_epoch: int, t_run: float) -> dict:
        cfg, out = self.cfg, self.out
        last = records[-1] if records else None
        return {
            "run_dir": str(out),
            "epochs_done": end_epoch,
            "finished": end_epoch >= cfg.epochs,
            "best_mean_dice": None if self.best == float("-inf") else self.best,
            "best_epoch": self.best_epoch,
            "last": last,
            "seconds": time.perf_counter() - t_run,
        }

    def _pipeline_build_s(self) -> float | None:
        """DALI pipeline build time of the train loader, on the first epoch this process
        runs (built once, before it); 0.0 after, as nothing is rebuilt; None for loaders
        without a pipeline."""
        built = getattr(self.train_loader, "pipeline_build_s", None)
        if built is None:
            return None
        first, self._build_reported = not getattr(self, "_build_reported", False), True
        return built if first else 0.0

    def _epoch(self, epoch: int) -> dict:
        cfg = self.cfg
        t0 = time.perf_counter()
        self.train_loader.set_epoch(epoch)
        try:
            stats = train_one_epoch(
                self.model, self.train_loader, self.loss_fn, self.optimizer, self.scheduler,
                self.scaler, self.settings, self.device, self.steps,
                desc=f"epoch {epoch + 1}/{cfg.epochs}")
        except NonFiniteLossError as e:
            good = self.out / "last.pt"
            kept = (f"the last good checkpoint is {good} ({epoch} epochs done)" if epoch
                    else "no checkpoint was written")
            raise NonFiniteLossError(
                f"{e.problem}; training stopped and {kept}. Try a lower --lr, --grad-clip, "
                f"or --amp off") from None
        val = None
        done = epoch + 1
        if self.val_loader is not None and (done % cfg.val_every == 0 or done == cfg.epochs):
            self.val_loader.set_epoch(epoch)
            val = validate(self.eval_model, self.val_loader, self.loss_fn, self.settings,
                           self.device, len(self.class_names), desc=f"val {done}/{cfg.epochs}")
        record = {
            "epoch": done,
            "loss": stats["loss"],
            "lr": stats["lr"],
            "val_loss": val["val_loss"] if val else None,
            "mean_dice": val["mean_dice"] if val else None,
            "dice": dict(zip(self.class_names, val["dice"], strict=True)) if val else None,
            "epoch_seconds": time.perf_counter() - t0,
            "train_seconds": stats["seconds"],
            "val_seconds": val["val_seconds"] if val else None,
            "images": stats["images"],
            "images_per_s": stats["images_per_s"],
            "host_wait_s": stats["host_wait_s"],
            "host_wait_fraction": stats["host_wait_fraction"],
            "gpu_idle_fraction": stats["gpu_idle_fraction"],
            "first_batch_s": stats["first_batch_s"],
            "pipeline_build_s": self._pipeline_build_s(),
            "amp": self.amp.name,
            "world_size": self.info.world_size,
        }
        improved = val is not None and val["mean_dice"] > self.best
        if improved:
            self.best, self.best_epoch = val["mean_dice"], done
        state = self._state(done, record)  # collective; the metrics line goes first, so
        if self.main:  # a kill between the two leaves a line that resume drops
            append_text(self.out / "metrics.jsonl", json.dumps(record) + "\n")
            self.tb.log(record)
            if improved or self.val_loader is None:
                save_checkpoint(self.out / "best.pt", self.raw, self.card, epoch=done,
                                metrics=record, config=cfg.to_dict())
            save_checkpoint(self.out / "last.pt", self.raw, self.card, **state)
        ddp.barrier()
        return record


def _epoch_line(r: dict, epochs: int) -> str:
    dice = "" if r["mean_dice"] is None else f"  dice {r['mean_dice']:.4f}"
    idle = "" if r["gpu_idle_fraction"] is None else f"  gpu idle {100 * r['gpu_idle_fraction']:.0f}%"
    return (f"epoch {r['epoch']}/{epochs}  loss {r['loss']:.4f}{dice}  lr {r['lr']:.2e}  "
            f"{r['images_per_s']:.1f} img/s  host wait {r['host_wait_s']:.1f}s{idle}  "
            f"first batch {r['first_batch_s']:.2f}s  {r['epoch_seconds']:.1f}s")
