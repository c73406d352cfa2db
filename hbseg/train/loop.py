"""One training epoch and one validation pass, with timings that measure what they say.

* ``host_wait_s``: host time blocked in ``next(loader)``. On CUDA this is not GPU idle
  time: kernels queued before the wait keep running.
* ``gpu_idle_fraction`` (CUDA only, ``None`` elsewhere): the share of the epoch's wall time
  during which the GPU ran no training step. A CUDA event is recorded on the current
  stream right before each step's forward pass and right after its optimizer step; the
  GPU is busy between the two, so ``1 - Σ elapsed(start_i, end_i) / wall`` is the time the
  stream spent waiting for the host (and the loader). Mask unpacking and DALI's copies
  sit outside the step and count as idle.
* ``first_batch_s``: the first ``next(loader)`` of the epoch, apart from the rest.

The epoch starts and ends with a synchronize so the timed region covers all queued work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from hbseg.errors import HbsegError
from hbseg.progress import bar_disabled

from .amp import AmpSettings
from .ddp import all_reduce_sum
from .metrics import DiceMeter

__all__ = ["NonFiniteLossError", "StepSettings", "StepEvents", "train_one_epoch", "validate"]


class NonFiniteLossError(HbsegError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class StepSettings:
    amp: AmpSettings
    grad_clip: float | None = None
    channels_last: bool = True
    log_every: int = 10
    progress: bool = True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepEvents:
    """CUDA events around each training step, for ``gpu_idle_fraction``; a no-op on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.pairs: list[tuple] = []

    def begin(self) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.pairs.append((ev, None))

    def end(self) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.pairs[-1] = (self.pairs[-1][0], ev)

    def busy_seconds(self) -> float | None:
        """Σ GPU time between each step's two events (call after a synchronize)."""
        if not self.cuda:
            return None
        return sum(a.elapsed_time(b) for a, b in self.pairs if b is not None) / 1000.0


def _prepare(image: torch.Tensor, channels_last: bool) -> torch.Tensor:
    image = image.float() if image.dtype not in (torch.float16, torch.bfloat16, torch.float32) else image
    return image.contiguous(memory_format=torch.channels_last) if channels_last else image


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, disable=bar_disabled(enabled),
                dynamic_ncols=True)


def train_one_epoch(
    model: torch.nn.Module,
    loader,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler,
    settings: StepSettings,
    device: torch.device,
    steps: int,
    desc: str = "train",
) -> dict:
    """Run ``steps`` optimizer steps over ``loader`` (already ``set_epoch``-ed).

    The loss is read back (one device sync) every ``log_every`` steps and at the last
    one; there, a NaN/inf loss on any rank stops every rank with NonFiniteLossError.
    Returns the mean loss over images, the last lr, and timing, summed over ranks.
    """
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    bad = torch.zeros((), dtype=torch.float64, device=device)
    images = 0
    wait = 0.0
    first_batch = None
    events = StepEvents(device)
    lr = optimizer.param_groups[0]["lr"]
    bar = _bar(steps, desc, settings.progress)
    _sync(device)
    start = time.perf_counter()
    it = iter(loader)
    try:
        for step in range(steps):
            t = time.perf_counter()
            image, mask = next(it)
            waited = time.perf_counter() - t
            wait += waited
            first_batch = waited if first_batch is None else first_batch
            events.begin()
            image = _prepare(image, settings.channels_last)
            with settings.amp.autocast():
                logits = model(image)
            loss = loss_fn(logits, mask)  # losses compute in float32
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if settings.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            events.end()

            n = image.shape[0]
            images += n
            detached = loss.detach().to(torch.float64)
            loss_sum += detached * n
            bad += (~torch.isfinite(detached)).to(torch.float64)
            if (step + 1) % settings.log_every == 0 or step + 1 == steps:
                flag = all_reduce_sum(bad.clone())
                if flag.item() > 0:
                    raise NonFiniteLossError(
                        f"the training loss became NaN or infinite by step {step + 1}/{steps} "
                        f"of {desc} (last value here: {float(detached)})"
                    )
                elapsed = time.perf_counter() - start
                bar.set_postfix(loss=f"{float(detached):.4f}", img_s=f"{images / elapsed:.1f}",
                                refresh=False)
            bar.update()
    finally:
        bar.close()
    if steps < len(loader):
        loader.reset()  # DDP lockstep left this shard's last batch unread
    _sync(device)
    seconds = time.perf_counter() - start
    busy = events.busy_seconds()
    totals = all_reduce_sum(torch.tensor(
        [float(loss_sum), images, wait, seconds, first_batch or 0.0, busy or 0.0],
        dtype=torch.float64, device=device)).tolist()
    world = _world()
    return {
        "loss": totals[0] / max(totals[1], 1),
        "lr": lr,
        "images": int(totals[1]),
        "seconds": totals[3] / world,
        "images_per_s": totals[1] / max(totals[3] / world, 1e-9),
        "host_wait_s": totals[2] / world,
        "host_wait_fraction": totals[2] / max(totals[3], 1e-9),
        "first_batch_s": totals[4] / world,
        "gpu_idle_fraction": None if busy is None else min(1.0, max(0.0, 1.0 - totals[5] / max(totals[3], 1e-9))),
    }


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    loader,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    settings: StepSettings,
    device: torch.device,
    num_classes: int,
    desc: str = "val",
) -> dict:
    """Per-class Dice at 0.5 over every image of every rank's shard, and the mean.

    With full-resolution masks (a list per batch) the logits are upsampled on the device
    to each image's size; the loss is then not computed (``val_loss`` is None).
    """
    model.eval()
    meter = DiceMeter(num_classes, device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    images = 0
    full_res = False
    bar = _bar(len(loader), desc, settings.progress)
    _sync(device)
    start = time.perf_counter()
    try:
        for image, mask in loader:
            image = _prepare(image, settings.channels_last)
            with settings.amp.autocast():
                logits = model(image)
            logits = logits.float()
            if isinstance(mask, torch.Tensor):
                loss_sum += loss_fn(logits, mask).to(torch.float64) * image.shape[0]
            else:
                full_res = True
            meter.update(logits, mask)
            images += image.shape[0]
            bar.update()
    finally:
        bar.close()
    _sync(device)
    seconds = time.perf_counter() - start
    meter.all_reduce()
    totals = all_reduce_sum(torch.tensor([float(loss_sum), images], dtype=torch.float64,
                                         device=device)).tolist()
    return {
        "dice": meter.per_class(),
        "mean_dice": meter.mean(),
        "val_loss": None if full_res or totals[1] == 0 else totals[0] / totals[1],
        "val_images": int(totals[1]),
        "val_seconds": seconds,
    }


def _world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
