"""One measurement, run inside a fresh subprocess: a loader (alone, then under training)
or the no-loading bound. ``hbseg.benchmarks.worker`` calls these; nothing here spawns.

Timeline of a loader measurement, on the same data and epoch numbers for every loader:

    build the loader                                   (timed apart: ``build_s``, and
                                                        ``pipeline_build_s`` for DALI)
    its first batch, cold                              (``first_batch_s_cold``)
    epochs 0 … W-1        loader only, untimed warm-up
    epochs W … W+E-1      loader only, timed           → img/s, CPU s/sample
    a few training steps, untimed warm-up (cudnn autotune, allocator)
    epochs W+E … W+2E-1   training, timed              → epoch s, host wait, GPU idle,
                                                          first batch, CPU s/sample

Training uses hbseg's own epoch loop (``hbseg.train.loop.train_one_epoch``) with the
model, AdamW, AMP, loss and batch identical across loaders (the model is initialised
from ``seed`` in every subprocess). The bound runs the same loop and the same number of
steps over ``bound_batches`` real batches that were read once and stay on the device.
CUDA is synchronised before and after each timed region.

Start-up is kept in parts (``startup``: CUDA init, model build, loader build, first batch,
the untimed warm-up steps), and ``progress`` receives what is measured so far after each
part and each epoch: a run stopped at its time limit still reports what it measured.

The data set is whatever the cache was built from (``cache_spec``): the hands, or a
described data set whose image channels, class count and normalisation set the loader
and the model exactly as ``hbseg-train`` sets them (``data_layout``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from .affinity import CpuPlan
from .config import BenchConfig
from .cpu_time import ProcessTreeClock
from .gpu_monitor import GpuMonitor

__all__ = ["measure_loader", "measure_bound", "ResidentLoader", "read_resident_batches",
           "DataLayout", "data_layout"]


def _sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


Progress = Callable[[dict], None]


def _ignore(_: dict) -> None:
    pass


def planned_batches(cfg: BenchConfig, steps: int, loader: bool) -> int:
    """Batches one run reads: for a loader its cold first batch and the loader-only epochs,
    then (bound too) the warm-up steps and the timed training epochs."""
    train = min(cfg.warmup_steps, steps) + cfg.epochs * steps
    return train + (1 + (cfg.warmup_epochs + cfg.epochs) * steps if loader else 0)


def train_summary(epochs: list[dict]) -> dict:
    """Medians of the training epochs measured (all of them, or those before a timeout)."""
    return {
        "train_epoch_s": _median(x["seconds"] for x in epochs),
        "train_images_per_s": _median(x["images_per_s"] for x in epochs),
        "host_wait_s": _median(x["host_wait_s"] for x in epochs),
        "host_wait_fraction": _median(x["host_wait_fraction"] for x in epochs),
        "gpu_idle_fraction": _median(x["gpu_idle_fraction"] for x in epochs),
        "first_batch_s": _median(x["first_batch_s"] for x in epochs),
        "cpu_s_per_sample_train": _median(x["cpu_s_per_sample"] for x in epochs),
    }


def load_summary(epochs: list[dict]) -> dict:
    return {
        "load_epoch_s": _median(x["seconds"] for x in epochs),
        "load_images_per_s": _median(x["images_per_s"] for x in epochs),
        "cpu_s_per_sample_load": _median(x["cpu_s_per_sample"] for x in epochs),
    }


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else None


def _epoch_sizes(n: int, batch_size: int, steps_limit: int | None) -> list[int]:
    """Batch sizes of one epoch (last one partial, as every loader does), capped."""
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    return sizes[:steps_limit] if steps_limit else sizes


# --------------------------------------------------------------------------- set-up


@dataclass(frozen=True)
class DataLayout:
    """What loaders and model must agree on for the cached data set: image channels, mask
    planes (classes) and the normalisation (a ``NormalizeConfig``)."""

    channels: int
    num_classes: int
    normalize: object


def data_layout(cache_dir) -> DataLayout:
    """The layout of the data set a cache was built from, as ``hbseg-train`` chooses it:
    the description's channels and classes (the hands': 1 and 29), and the default
    normalisation for that many channels (ImageNet RGB statistics for colour)."""
    from hbseg.dali_pipes.config import NormalizeConfig
    from hbseg.data.classes import NUM_CLASSES
    from hbseg.data.spec import cache_spec

    spec = cache_spec(cache_dir)
    channels = 1 if spec is None else spec.channels
    return DataLayout(channels=channels,
                      num_classes=NUM_CLASSES if spec is None else spec.num_classes,
                      normalize=NormalizeConfig().for_channels(channels))


def _setup_process(plan: CpuPlan, device: str) -> float:
    """Thread pools sized to the plan's cores (affinity was set before torch was imported);
    returns the seconds CUDA's context took to start (0 on CPU)."""
    import cv2
    import torch

    torch.set_num_threads(plan.cpus)
    cv2.setNumThreads(plan.cpus)
    if not device.startswith("cuda"):
        return 0.0
    t0 = time.perf_counter()
    torch.cuda.set_device(torch.device(device).index or 0)
    torch.backends.cudnn.benchmark = True
    torch.zeros(1, device=device)  # the context's own cost, kept out of the builds below
    _sync(device)
    return time.perf_counter() - t0


def _training(cfg: BenchConfig, device: str, steps_per_epoch: int, layout: DataLayout):
    """Model, loss, optimizer, scheduler, scaler and step settings: identical per loader."""
    import torch

    from hbseg.models import create_model
    from hbseg.train.amp import resolve_amp
    from hbseg.train.fast import compile_model, make_optimizer
    from hbseg.train.loop import StepSettings
    from hbseg.train.losses import get_loss
    from hbseg.train.schedule import build_scheduler

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, cfg.encoder, in_channels=layout.channels,
                         classes=layout.num_classes).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp = resolve_amp(cfg.amp, device)
    optimizer = make_optimizer(model.parameters(), cfg.lr, cfg.weight_decay, device)
    model = compile_model(model, cfg.compile)
    scheduler = build_scheduler(optimizer, steps_per_epoch, cfg.epochs + 1, warmup_epochs=0.0)
    settings = StepSettings(amp=amp, grad_clip=1.0, channels_last=cfg.channels_last,
                            log_every=10, progress=False)
    return model, get_loss(cfg.loss), optimizer, scheduler, amp.grad_scaler(), settings


def _run_training(cfg: BenchConfig, device: str, loader, steps: int, first_epoch: int,
                  clock: ProcessTreeClock, monitor: GpuMonitor, layout: DataLayout,
                  startup: dict, progress: Progress = _ignore) -> dict:
    """Untimed warm-up steps, then ``cfg.epochs`` timed training epochs. ``startup`` gets
    the model build and the warm-up steps' seconds (cudnn autotune, allocator)."""
    import torch

    from hbseg.train.loop import train_one_epoch

    t0 = time.perf_counter()
    model, loss_fn, optimizer, scheduler, scaler, settings = _training(cfg, device, steps, layout)
    _sync(device)
    startup["model_build_s"] = time.perf_counter() - t0
    progress({"startup": startup})
    dev = torch.device(device)
    t0 = time.perf_counter()
    if cfg.warmup_steps:
        loader.set_epoch(first_epoch - 1)
        # the first step alone: it carries torch.compile's work and cudnn's autotuning
        train_one_epoch(model, loader, loss_fn, optimizer, scheduler, scaler, settings, dev,
                        steps=1, desc="warm-up")
        _sync(device)
        startup["first_step_s"] = time.perf_counter() - t0
        if min(cfg.warmup_steps, steps) > 1:
            train_one_epoch(model, loader, loss_fn, optimizer, scheduler, scaler, settings, dev,
                            steps=min(cfg.warmup_steps, steps) - 1, desc="warm-up")
    _sync(device)
    startup["warmup_steps_s"] = time.perf_counter() - t0
    warm = min(cfg.warmup_steps, steps)
    progress({"startup": startup, "train_batches_done": warm})
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    epochs = []
    _sync(device)
    t_start = time.perf_counter()
    for k in range(cfg.epochs):
        e = first_epoch + k
        loader.set_epoch(e)
        c0 = clock.read()
        r = train_one_epoch(model, loader, loss_fn, optimizer, scheduler, scaler, settings, dev,
                            steps=steps, desc=f"train {e}")
        d = clock.read() - c0
        epochs.append({
            "epoch": e,
            "seconds": r["seconds"],
            "images": r["images"],
            "images_per_s": r["images_per_s"],
            "host_wait_s": r["host_wait_s"],
            "host_wait_fraction": r["host_wait_fraction"],
            "gpu_idle_fraction": r["gpu_idle_fraction"],
            "first_batch_s": r["first_batch_s"],
            "loss": r["loss"],
            "cpu_s": d.total,
            "cpu_main_s": d.main,
            "cpu_children_s": d.children,
            "cpu_s_per_sample": d.total / max(r["images"], 1),
        })
        progress({"train_epochs": epochs, "train_batches_done": warm + (k + 1) * steps})
    t_end = time.perf_counter()
    gpu = monitor.summary(t_start, t_end)
    if dev.type == "cuda":
        gpu = dict(gpu or {})
        gpu["torch_peak_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        gpu["torch_peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    return {
        "amp": settings.amp.name,
        "compile": cfg.compile,
        "train_epochs": epochs,
        **train_summary(epochs),
        "gpu": gpu,
    }


# --------------------------------------------------------------------------- loader


def _loader_epoch(loader, epoch: int, steps: int, device: str) -> tuple[float, int]:
    """Read ``steps`` batches of ``epoch``; (seconds, images). Nothing else is done with them."""
    loader.set_epoch(epoch)
    _sync(device)
    t0 = time.perf_counter()
    images = 0
    it = iter(loader)
    for _ in range(steps):
        image, _mask = next(it)
        images += int(image.shape[0])
    _sync(device)
    seconds = time.perf_counter() - t0
    del it
    if steps < len(loader):
        loader.reset()
    return seconds, images


def measure_loader(kind: str, cfg: BenchConfig, plan: CpuPlan, cache_dir: str,
                   progress: Progress = _ignore) -> dict:
    """Loader-only throughput, then training epochs through this loader (module doc)."""
    from hbseg.dali_pipes.config import AugmentConfig, LoaderConfig
    from hbseg.data.cache import load_cache_index
    from hbseg.loaders import build_loader

    device = cfg.device
    startup = {"cuda_init_s": _setup_process(plan, device)}
    index = load_cache_index(cache_dir)
    layout = data_layout(cache_dir)
    lcfg = LoaderConfig(size=cfg.size, batch_size=cfg.batch_size, num_threads=plan.num_threads,
                        seed=cfg.seed, channels=layout.channels, num_classes=layout.num_classes,
                        normalize=layout.normalize,
                        augment=AugmentConfig.hand_xray())  # what hbseg-train loads
    with GpuMonitor(device) as monitor:
        clock = ProcessTreeClock(exclude=monitor.pids)
        t0 = time.perf_counter()
        loader = build_loader(kind, index, lcfg, "train", device)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        loader.set_epoch(0)
        first = iter(loader)
        next(first)
        first_batch_s = time.perf_counter() - t0
        loader.reset()
        del first
        steps = min(len(loader), cfg.steps_limit or len(loader))
        startup.update(pipeline_build_s=build_s, first_batch_s=first_batch_s)
        planned = planned_batches(cfg, steps, loader=True)
        progress({"startup": startup, "batches_planned": planned, "load_batches_done": 1,
                  "build_s": build_s, "first_batch_s_cold": first_batch_s,
                  "batches_per_epoch": steps})
        for e in range(cfg.warmup_epochs):
            _loader_epoch(loader, e, steps, device)
            progress({"load_batches_done": 1 + (e + 1) * steps})
        load = []
        for k in range(cfg.epochs):
            e = cfg.warmup_epochs + k
            c0 = clock.read()
            seconds, images = _loader_epoch(loader, e, steps, device)
            d = clock.read() - c0
            load.append({
                "epoch": e, "seconds": seconds, "images": images,
                "images_per_s": images / max(seconds, 1e-9),
                "cpu_s": d.total, "cpu_main_s": d.main, "cpu_children_s": d.children,
                "cpu_s_per_sample": d.total / max(images, 1),
            })
            progress({"load_epochs": load,
                      "load_batches_done": 1 + (cfg.warmup_epochs + k + 1) * steps})
        train = _run_training(cfg, device, loader, steps, cfg.warmup_epochs + cfg.epochs,
                              clock, monitor, layout, startup, progress)
    return {
        "loader": kind,
        "build_s": build_s,
        "pipeline_build_s": getattr(loader, "pipeline_build_s", None),
        "pipeline_builds": getattr(loader, "pipeline_builds", None),
        "first_batch_s_cold": first_batch_s,
        "batches_per_epoch": steps,
        "samples_per_epoch": load[0]["images"] if load else None,
        "dataset_samples": len(index),
        "channels": layout.channels,
        "num_classes": layout.num_classes,
        "load_epochs": load,
        **load_summary(load),
        "batches_planned": planned,
        "startup": startup,
        **train,
    }


# --------------------------------------------------------------------------- bound


class ResidentLoader:
    """Replays batches already on the device, in the ``Loader`` shape: the same batch
    sizes as a real epoch (last one partial), no reading, decoding or copying."""

    def __init__(self, batches: list, sizes: list[int], device: str):
        self.batches, self.sizes, self.device = batches, sizes, device
        self.batch_size = max(sizes)
        self.num_samples = sum(sizes)

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self):
        for i, n in enumerate(self.sizes):
            image, mask = self.batches[i % len(self.batches)]
            yield image[:n], mask[:n]

    def set_epoch(self, epoch: int) -> None:
        pass

    def reset(self) -> None:
        pass


def read_resident_batches(index, cfg: BenchConfig, device: str,
                          layout: DataLayout | None = None) -> list:
    """``cfg.bound_batches`` real batches of the first epoch's samples, read with OpenCV
    (resized, normalised, masks unpacked), stacked and moved to ``device`` once.
    ``layout``: the data set's channels, classes and normalisation (default: the hands')."""
    import cv2
    import numpy as np
    import torch

    from hbseg.dali_pipes.config import NormalizeConfig
    from hbseg.dali_pipes.loader_base import epoch_order
    from hbseg.data.classes import NUM_CLASSES
    from hbseg.data.formats.images import read_image
    from hbseg.data.masks import read_packed_png, unpack_masks_torch

    layout = layout or DataLayout(1, NUM_CLASSES, NormalizeConfig())
    mean, std = (np.asarray(v, np.float32)
                 for v in layout.normalize.per_channel(layout.channels))
    order = epoch_order(len(index), 0, cfg.seed, True, 0, 1)
    paths = list(zip(index["image_path"], index["mask_path"], strict=True))
    s, bs = cfg.size, cfg.batch_size
    batches = []
    for b in range(cfg.bound_batches):
        images, masks = [], []
        for j in range(bs):
            img_path, mask_path = paths[int(order[(b * bs + j) % len(order)])]
            img = cv2.resize(read_image(img_path, layout.channels), (s, s),
                             interpolation=cv2.INTER_LINEAR)
            img = torch.from_numpy((img.astype(np.float32) / 255.0 - mean) / std)
            packed = cv2.resize(read_packed_png(mask_path), (s, s),
                                interpolation=cv2.INTER_NEAREST_EXACT)
            images.append(img[None] if img.ndim == 2 else img.permute(2, 0, 1))  # [C, S, S]
            masks.append(torch.from_numpy(np.ascontiguousarray(packed)))
        image = torch.stack(images).to(device)
        mask = unpack_masks_torch(torch.stack(masks).to(device), layout.num_classes)
        batches.append((image, mask))
    _sync(device)
    return batches


def measure_bound(cfg: BenchConfig, plan: CpuPlan, cache_dir: str,
                  progress: Progress = _ignore) -> dict:
    """The same training epochs as ``measure_loader``, on device-resident batches."""
    from hbseg.data.cache import load_cache_index

    device = cfg.device
    startup = {"cuda_init_s": _setup_process(plan, device)}
    index = load_cache_index(cache_dir)
    layout = data_layout(cache_dir)
    sizes = _epoch_sizes(len(index), cfg.batch_size, cfg.steps_limit)
    with GpuMonitor(device) as monitor:
        clock = ProcessTreeClock(exclude=monitor.pids)
        t0 = time.perf_counter()
        loader = ResidentLoader(read_resident_batches(index, cfg, device, layout), sizes, device)
        build_s = time.perf_counter() - t0
        startup["pipeline_build_s"] = build_s  # reading the resident batches
        planned = planned_batches(cfg, len(sizes), loader=False)
        progress({"startup": startup, "batches_planned": planned, "build_s": build_s,
                  "batches_per_epoch": len(sizes)})
        train = _run_training(cfg, device, loader, len(sizes), cfg.warmup_epochs + cfg.epochs,
                              clock, monitor, layout, startup, progress)
    return {
        "loader": "bound",
        "build_s": build_s,
        "batches_per_epoch": len(sizes),
        "samples_per_epoch": sum(sizes),
        "dataset_samples": len(index),
        "channels": layout.channels,
        "num_classes": layout.num_classes,
        "load_epochs": [],
        "batches_planned": planned,
        "startup": startup,
        "load_epoch_s": None,
        "load_images_per_s": None,
        "cpu_s_per_sample_load": None,
        **train,
    }

