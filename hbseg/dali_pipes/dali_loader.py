"""The ``dali`` back-end: PNG files → DALI graph → torch tensors on the device.

One DALI pipeline is built per loader and serves every epoch of the run
(:class:`~hbseg.dali_pipes.pipe_loader.PipelineLoader`). Samples come in ``epoch_order``
(shuffled in train mode or with ``shuffle``, sharded for DDP); the last batch of a shard is
partial unless ``drop_last``, never padded. Each sample's augmentation is drawn in numpy
from ``(seed, epoch, row)``
(:mod:`hbseg.dali_pipes.draw`), so the same seed gives the same batches, resuming at epoch
``e`` reproduces epoch ``e`` exactly, and the torch back-end yields the same samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hbseg.data.classes import NUM_CLASSES
from hbseg.errors import ConfigError

from .config import LoaderConfig
from .files import FromFiles
from .graph import GraphOps
from .layout import fit_config, index_layout, mask_encoding
from .loader_base import check_index
from .pipe_loader import PipelineLoader, run_batch
from .sources import AugmentParams, FileSource

__all__ = ["DaliLoader", "require_dali", "resolve_device", "to_torch", "convert_pair", "run_batch",
           "runtime_args", "index_shapes", "augment_params", "epoch_plan"]

MODES = ("train", "eval")


DALI_MISSING = ("NVIDIA DALI is not installed; install it with `pip install -e '.[cuda12]'` "
                "(CUDA 12 wheel, also runs CPU-only pipelines) or `'.[cuda13]'`, "
                "or use the torch loader (--loader torch)")


def require_dali() -> None:
    """Fail early, with the fix in the message, where DALI cannot be imported."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as e:
        raise ImportError(DALI_MISSING) from e


def resolve_device(device: str) -> tuple[str, int | None]:
    """``"cpu"`` → ``("cpu", None)``; ``"cuda"``/``"cuda:N"`` → ``("gpu", N)``."""
    require_dali()
    device = str(device)
    if device == "cpu":
        return "cpu", None
    if device == "cuda" or device.startswith("cuda:"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but no CUDA GPU is visible; "
                              "use device 'cpu' (DALI runs the same graph on CPU threads)")
        idx = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
        return "gpu", idx
    raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def _gpu_to_torch(t, device_id: int):
    """One dense DALI GPU tensor → a new torch CUDA tensor (copied on torch's current stream,
    so the copy is ordered before any kernel that later reads it)."""
    import torch
    from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

    dev = torch.device("cuda", device_id)
    out = torch.empty(tuple(t.shape()), dtype=to_torch_type[t.dtype], device=dev)
    feed_ndarray(t, out, cuda_stream=torch.cuda.current_stream(dev))
    return out


def to_torch(tl, device_id: int | None = None, per_sample: bool = False) -> Any:
    """A DALI TensorList → one stacked torch tensor (or a list, one per sample), kept on
    the side it lives on: host outputs become CPU tensors, GPU outputs CUDA tensors."""
    import torch
    from nvidia.dali.backend import TensorListGPU

    if isinstance(tl, TensorListGPU):
        if device_id is None:
            raise ValueError("a GPU TensorList needs the device_id it lives on")
        if per_sample:
            return [_gpu_to_torch(tl[i], device_id) for i in range(len(tl))]
        return _gpu_to_torch(tl.as_tensor(), device_id)
    if per_sample:
        return [torch.from_numpy(np.array(tl[i])) for i in range(len(tl))]
    return torch.from_numpy(np.array(tl.as_array()))


def convert_pair(image, mask, device_id: int | None, full_res_mask: bool,
                 num_classes: int = NUM_CLASSES, mask_output: str = "planes",
                 encoding: str = "bits"):
    """Pipeline outputs → ``(image tensor, unpacked mask tensor or list)`` on their device;
    masks are unpacked there (``outputs.masks_from_packed``: stored ``encoding`` →
    ``num_classes`` planes, or the class index with ``mask_output="index"``)."""
    from .outputs import masks_from_packed

    image = to_torch(image, device_id)
    if full_res_mask:
        return image, [masks_from_packed(m, num_classes, mask_output, encoding)
                       for m in to_torch(mask, device_id, per_sample=True)]
    return image, masks_from_packed(to_torch(mask, device_id), num_classes, mask_output,
                                    encoding)


def check_mode(mode: str, cfg: LoaderConfig) -> None:
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    if cfg.full_res_mask and mode != "eval":
        raise ConfigError("full_res_mask is for eval mode only (training needs equal-size masks)")


def runtime_args(cfg: LoaderConfig, device_id: int | None) -> dict[str, Any]:
    """DALI's runtime arguments, kept apart from the graph's. hbseg's own graph draws
    nothing (every random value comes from ``draw``); the seed serves DALI random
    operators in your own ``ops``."""
    return dict(batch_size=cfg.batch_size, num_threads=max(1, cfg.num_threads),
                device_id=device_id, seed=int(cfg.seed) % 2**31,
                prefetch_queue_depth=max(1, cfg.prefetch))


def index_shapes(index: pd.DataFrame) -> np.ndarray:
    """``[N, 2]`` (H, W) of every row: the cache index's columns, or the PNG headers."""
    if {"height", "width"} <= set(index.columns):
        return index[["height", "width"]].to_numpy(np.float64)
    from hbseg.data.images import png_header

    hw = [png_header(p) for p in index["image_path"]]
    return np.array([[d["height"], d["width"]] for d in hw], np.float64)


def augment_params(cfg: LoaderConfig, mode: str, shapes_hw: np.ndarray,
                   index: pd.DataFrame | None = None) -> AugmentParams:
    """``index`` (its names and masks) is needed when the hand ROI or handedness is on."""
    from .roi import loader_geometry

    geometry = None if index is None else loader_geometry(cfg, index, shapes_hw)
    if geometry is None and (cfg.roi_margin is not None or cfg.canonical_hand is not None):
        raise ValueError("augment_params needs the index for the hand ROI and handedness")
    return AugmentParams(cfg.augment, shapes_hw, cfg.out_hw,
                         cfg.crop_hw if mode == "train" else None,
                         train=mode == "train", seed=cfg.seed, geometry=geometry)


def epoch_plan(cfg: LoaderConfig, mode: str) -> dict[str, Any]:
    """The keyword arguments of an ``EpochSource`` for ``cfg`` in ``mode``."""
    return dict(shuffle=cfg.shuffles(mode), seed=cfg.seed, shard_id=cfg.shard_id,
                num_shards=cfg.num_shards, drop_last=cfg.drop_last)


class DaliLoader(FromFiles, PipelineLoader):
    """The ``dali`` back-end, implementing :class:`~hbseg.dali_pipes.loader_base.Loader`.

    ``index``: rows of the mask cache's index (``load_cache_index``); your own image and
    mask files go in with :meth:`from_files`. ``device``: ``"cpu"`` (DALI on CPU threads)
    or ``"cuda[:N]"`` (``mixed`` decoding, GPU operators). Yields ``(image [B, C_in, H, W]
    float, mask [B, C, H, W] uint8 0/1)`` on ``device`` (``(H, W)`` = ``cfg.size``; C_in and
    C: the cache's channels and classes, 1 and 29 for the hands; ``mask_output="index"``
    gives ``[B, H, W]`` int64 instead); with ``cfg.full_res_mask`` (eval) the mask is a list
    of ``[C, H_i, W_i]``. Masks leave DALI bit-packed and are unpacked on the device with
    torch bitwise ops. The pipeline is built here, once (``pipeline_build_s`` says how long
    it took). ``ops``: your own DALI operations, in train mode (see ``graph.augment_pair``).
    """

    supports_ops = True

    def __init__(self, index: pd.DataFrame, cfg: LoaderConfig | None = None,
                 mode: str = "train", device: str = "cpu", *, ops: GraphOps | None = None):
        from .pipelines import eval_pipeline, train_pipeline

        cfg = LoaderConfig() if cfg is None else cfg
        check_mode(mode, cfg)
        check_index(index)
        layout = index_layout(index)
        cfg = fit_config(cfg, layout)
        self.cfg, self.mode, self.device = cfg, mode, str(device)
        self.mask_encoding = mask_encoding(layout)  # how the cache stores the masks
        dali_device, device_id = resolve_device(device)
        self.batch_size = cfg.batch_size
        shapes = index_shapes(index)
        source = FileSource([list(index["image_path"]), list(index["mask_path"])],
                            cfg.batch_size, params=augment_params(cfg, mode, shapes, index),
                            **epoch_plan(cfg, mode))
        source.channels = cfg.image_channels  # for _bad_file's error report
        rt = runtime_args(cfg, device_id)
        if mode == "train":
            pipe = train_pipeline(source, device=dali_device, size=cfg.out_hw, aug=cfg.augment,
                                  norm=cfg.normalize, channels=cfg.image_channels, ops=ops, **rt)
        else:
            if ops is not None:
                raise ConfigError("ops (your own DALI operations) run in train mode only")
            pipe = eval_pipeline(source, device=dali_device, size=cfg.out_hw, aug=cfg.augment,
                                 norm=cfg.normalize, full_res_mask=cfg.full_res_mask,
                                 channels=cfg.image_channels, **rt)
        self._start(pipe, source, device_id)

    def _convert(self, outputs, k: int):
        image, mask = outputs
        return convert_pair(image, mask, self._device_id, self.cfg.full_res_mask,
                            self.cfg.mask_planes, self.cfg.mask_output, self.mask_encoding)
