"""The ``dali-cache`` back-end: decode every image and packed mask once, keep them in GPU
memory as uint8, and feed the training graph from there through ``external_source``.

An epoch then costs no PNG decode at all: CLAHE, the affine warp, brightness/contrast and
normalisation run on the GPU straight from the cache. 800 images of 2048² with their masks
(1 + 4 bytes per pixel) take about 16 GiB, so the loader first estimates the bytes, compares
them with ``torch.cuda.mem_get_info`` and refuses with a :class:`CacheTooLargeError`
(a ConfigError) that suggests ``--loader dali`` when they do not fit;
:func:`dali_cache_or_fallback` turns that refusal into a warning and a ``DaliLoader``.

``device="cpu"`` keeps the same cache in host memory (numpy) and runs the graph on CPU
threads; it exists so the whole back-end is tested without a GPU.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd

from hbseg.errors import ConfigError

from .config import LoaderConfig
from .dali_loader import (
    DaliLoader,
    augment_params,
    check_mode,
    convert_pair,
    epoch_plan,
    resolve_device,
    run_batch,
    runtime_args,
    to_torch,
)
from .files import FromFiles
from .graph import GraphOps
from .layout import fit_config, index_layout, mask_encoding
from .loader_base import check_index
from .pipe_loader import PipelineLoader
from .sources import CachedArraySource, FileSource

__all__ = ["DaliCacheLoader", "CacheTooLargeError", "cache_bytes", "dali_cache_or_fallback"]

BYTES_PER_PIXEL = 1 + 4  # grey image + packed mask


class CacheTooLargeError(ConfigError):
    """The data set does not fit in the memory the cache may use."""


def cache_bytes(index: pd.DataFrame, channels: int = 1) -> int:
    """Bytes the decoded cache will hold: ``H·W·(channels + 4)`` per image."""
    if {"height", "width"} <= set(index.columns):
        h, w = index["height"].to_numpy(np.int64), index["width"].to_numpy(np.int64)
    else:
        from hbseg.data.images import png_header

        hw = [png_header(p) for p in index["image_path"]]
        h = np.array([d["height"] for d in hw], np.int64)
        w = np.array([d["width"] for d in hw], np.int64)
    return int((h * w).sum() * (BYTES_PER_PIXEL - 1 + channels))


def _free_memory(dali_device: str, device_id: int | None) -> tuple[int, int, str]:
    if dali_device == "gpu":
        import torch

        free, total = torch.cuda.mem_get_info(device_id)
        return int(free), int(total), f"cuda:{device_id}"
    page = os.sysconf("SC_PAGE_SIZE")
    return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page, "host memory"


def check_fits(need: int, n: int, dali_device: str, device_id: int | None,
               headroom_bytes: int | None = None) -> None:
    """Raise CacheTooLargeError unless ``need`` bytes fit beside ``headroom_bytes`` (default:
    the larger of 4 GiB and 20 % of the device) kept free for the model and its activations."""
    free, total, where = _free_memory(dali_device, device_id)
    headroom = max(4 << 30, total // 5) if headroom_bytes is None else int(headroom_bytes)
    if need + headroom > free:
        gib = 1 << 30
        raise CacheTooLargeError(
            f"the dali-cache needs {need / gib:.1f} GiB for {n} decoded images and masks, but "
            f"{where} has {free / gib:.1f} GiB free of {total / gib:.1f} GiB and "
            f"{headroom / gib:.1f} GiB must stay free for training; use --loader dali "
            "(decodes every epoch, needs no cache), fewer images, or a larger GPU")


class DaliCacheLoader(FromFiles, PipelineLoader):
    """The ``dali-cache`` back-end, implementing the ``Loader`` protocol like ``DaliLoader``
    (same ``epoch_order``, same draws, same graph, same outputs), after one decode of the
    whole index. One pipeline serves every epoch, as in ``DaliLoader``.

    ``headroom_bytes``: memory to keep free beside the cache (default: see ``check_fits``);
    ``ops``: your own DALI operations, in train mode (see ``graph.augment_pair``).
    """

    supports_ops = True

    def __init__(self, index: pd.DataFrame, cfg: LoaderConfig | None = None,
                 mode: str = "train", device: str = "cuda", headroom_bytes: int | None = None,
                 *, ops: GraphOps | None = None):
        from .pipelines import cache_eval_pipeline, cache_train_pipeline

        cfg = LoaderConfig() if cfg is None else cfg
        check_mode(mode, cfg)
        check_index(index)
        layout = index_layout(index)
        cfg = fit_config(cfg, layout)
        self.mask_encoding = mask_encoding(layout)  # how the cache stores the masks
        if ops is not None and mode != "train":
            raise ConfigError("ops (your own DALI operations) run in train mode only")
        self.cfg, self.mode, self.device = cfg, mode, str(device)
        self._dali_device, device_id = resolve_device(device)
        self._device_id = device_id
        self.batch_size = cfg.batch_size
        self.cache_bytes = cache_bytes(index, cfg.image_channels)
        check_fits(self.cache_bytes, len(index), self._dali_device, device_id, headroom_bytes)
        images, masks, shapes = self._decode_all(index)
        source = CachedArraySource([images, masks], cfg.batch_size,
                                   params=augment_params(cfg, mode, shapes, index),
                                   **epoch_plan(cfg, mode))
        rt = runtime_args(cfg, device_id)
        if mode == "train":
            pipe = cache_train_pipeline(source, device=self._dali_device, size=cfg.out_hw,
                                        aug=cfg.augment, norm=cfg.normalize, ops=ops, **rt)
        else:
            pipe = cache_eval_pipeline(source, device=self._dali_device, size=cfg.out_hw,
                                       aug=cfg.augment, norm=cfg.normalize,
                                       full_res_mask=cfg.full_res_mask, **rt)
        self._start(pipe, source, device_id)

    def _decode_all(self, index: pd.DataFrame):
        """One pass of the decode pipeline (mixed on a GPU) over every row, in index order."""
        from .pipelines import decode_pipeline

        source = FileSource([list(index["image_path"]), list(index["mask_path"])],
                            self.cfg.batch_size, shuffle=False)
        source.channels = self.cfg.image_channels
        pipe = decode_pipeline(source, device=self._dali_device, channels=self.cfg.image_channels,
                               batch_size=self.cfg.batch_size,
                               num_threads=max(1, self.cfg.num_threads),
                               device_id=self._device_id, seed=0)
        images, masks = [], []
        gpu = self._dali_device == "gpu"
        try:
            pipe.build()
            for k in range(len(source)):
                image, mask = run_batch(pipe, k, source, lookahead=2)
                if gpu:
                    images += to_torch(image, self._device_id, per_sample=True)
                    masks += to_torch(mask, self._device_id, per_sample=True)
                else:
                    images += [np.array(image[i]) for i in range(len(image))]
                    masks += [np.array(mask[i]) for i in range(len(mask))]
        finally:
            del pipe
        if gpu:
            import torch
            from nvidia.dali.backend import ReleaseUnusedMemory  # type: ignore[attr-defined]

            torch.cuda.synchronize(self._device_id)
            ReleaseUnusedMemory()  # hand the decoder's pool back for training
        shapes = np.array([im.shape[:2] for im in images], dtype=np.float64)
        return images, masks, shapes

    def _convert(self, outputs, k: int):
        image, mask = outputs
        return convert_pair(image, mask, self._device_id, self.cfg.full_res_mask,
                            self.cfg.mask_planes, self.cfg.mask_output, self.mask_encoding)


def dali_cache_or_fallback(index: pd.DataFrame, cfg: LoaderConfig, mode: str = "train",
                           device: str = "cuda", headroom_bytes: int | None = None):
    """A DaliCacheLoader, or, when the data set does not fit, a warning and a DaliLoader."""
    try:
        return DaliCacheLoader(index, cfg, mode, device, headroom_bytes)
    except CacheTooLargeError as e:
        warnings.warn(f"{e}; falling back to the dali loader", RuntimeWarning, stacklevel=2)
        return DaliLoader(index, cfg, mode, device)
