"""The plain PyTorch back-end: cv2 decode and augmentation in DataLoader workers.

It is the reference the DALI graphs are checked against and the fallback where DALI is
missing. It reads samples in the order ``epoch_order`` gives and applies, with OpenCV, the
very augmentation the DALI graph applies: the same draw of :mod:`hbseg.dali_pipes.draw`
(a pure function of seed, epoch and row), the same 2x3 matrix, CLAHE, brightness/contrast
and normalisation. Batches therefore do not depend on the number of workers, and the
``dali`` and ``torch`` back-ends yield the same samples. Masks travel bit-packed
([H, W, 4] uint8, nearest-neighbour warps) from the workers to the device and are unpacked
there: 4 bytes per pixel cross process and PCIe boundaries instead of 29.
"""

from __future__ import annotations

import gc
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hbseg.dali_pipes.config import AugmentConfig, LoaderConfig, NormalizeConfig, as_hw
from hbseg.dali_pipes.draw import (
    SampleDraw,
    Size,
    draw_sample,
    eval_draw,
    sample_matrix,
    to_opencv_matrix,
)
from hbseg.dali_pipes.files import FromFiles
from hbseg.dali_pipes.layout import fit_config, index_layout, mask_encoding
from hbseg.dali_pipes.loader_base import Closable, EpochClock, check_index, epoch_order, num_batches
from hbseg.dali_pipes.outputs import masks_from_packed, read_mask_file
from hbseg.data.classes import NUM_CLASSES
from hbseg.data.formats.images import read_image
from hbseg.errors import ConfigError, DataError

__all__ = ["TorchLoader", "EpochSampler", "apply_draw", "warp_nearest"]

MODES = ("train", "eval")


# --------------------------------------------------------------------------- plumbing
# Shared with the baseline back-end, which must read and fail the same way.


@dataclass(frozen=True)
class SampleFailure:
    """A sample that could not be loaded, carried back from a worker as data.

    DataLoader re-raises worker exceptions as ``type(e)(traceback_text)``, which loses a
    DataError's ``path`` and makes its message a traceback. Returning the failure as a
    value instead lets the main process raise the original, one-line DataError.
    """

    problem: str
    path: str

    def error(self) -> DataError:
        return DataError(self.problem, self.path)


def guard(path: str | Path, fn, *args):
    """Run ``fn(*args)``; turn decode failures into a SampleFailure naming ``path``."""
    try:
        return fn(*args)
    except DataError as e:
        return SampleFailure(e.problem, str(e.path if e.path is not None else path))
    except (cv2.error, OSError) as e:
        return SampleFailure(f"cannot load sample ({type(e).__name__}: {e})", str(path))


class EpochSampler(Sampler):
    """Yields ``(sample index, epoch)`` in ``epoch_order``; the epoch rides along so that
    persistent workers (which hold stale copies of the loader) still seed correctly.
    ``drop_last`` leaves out the samples of a partial last batch of ``batch_size``."""

    def __init__(self, n: int, seed: int, shuffle: bool, shard_id: int, num_shards: int,
                 drop_last: bool = False, batch_size: int = 1):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.shard_id, self.num_shards = shard_id, num_shards
        self.drop_last, self.batch_size = drop_last, batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = epoch_order(self.n, self.epoch, self.seed, self.shuffle, self.shard_id, self.num_shards)
        return iter([(int(i), self.epoch) for i in order[:len(self)]])

    def __len__(self) -> int:
        n = len(range(self.shard_id, self.n, self.num_shards))
        return n // self.batch_size * self.batch_size if self.drop_last else n


class Collate:
    """Stack a batch; masks stay a list when they differ in size (full-resolution eval).
    A failed sample replaces the whole batch, to be raised in the main process."""

    def __init__(self, stack_masks: bool):
        self.stack_masks = stack_masks

    def __call__(self, items: list):
        for it in items:
            if isinstance(it, SampleFailure):
                return it
        images = torch.stack([it[0] for it in items])
        masks = [it[1] for it in items]
        return images, (torch.stack(masks) if self.stack_masks else masks)


def worker_init(worker_id: int) -> None:
    """Seed the global RNGs from torch's per-worker seed, for third-party code that
    draws from them; hbseg's own augmentation draws come from ``draw.draw_sample`` instead.

    OpenCV's thread count is deliberately left alone: ``cv2.setNumThreads`` in a forked
    worker tears down the thread pool inherited from the parent and deadlocks on its
    condition variable (most forks hang once the parent has used cv2). DataLoader
    already limits torch to one thread per worker.

    Ctrl-C reaches the whole process group; a forked worker would run the parent's SIGINT
    handler too (the trainer's "finishing this epoch" note, once per worker), so workers
    ignore it: only the parent speaks, and it stops the workers itself.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def check_mode(mode: str, cfg: LoaderConfig) -> None:
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    if cfg.full_res_mask and mode != "eval":
        raise ConfigError("full_res_mask is for eval mode only (training needs equal-size masks)")


def move_batch(batch, device: torch.device, unpack: bool, num_classes: int = NUM_CLASSES,
               mask_output: str = "planes", encoding: str = "bits"):
    """Host → device copy (non-blocking from pinned memory), then unpack masks there."""
    images, masks = batch
    images = images.to(device, non_blocking=True)

    def one(m: torch.Tensor) -> torch.Tensor:
        m = m.to(device, non_blocking=True)
        if not unpack:
            return m.to(torch.uint8)
        return masks_from_packed(m, num_classes, mask_output, encoding)

    masks = [one(m) for m in masks] if isinstance(masks, list) else one(masks)
    return images, masks


def make_dataloader(dataset: Dataset, sampler: EpochSampler, cfg: LoaderConfig, stack_masks: bool,
                    pin_memory: bool) -> DataLoader:
    workers = max(0, int(cfg.num_threads))
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=Collate(stack_masks),
        pin_memory=pin_memory,
        drop_last=False,  # epoch_order's policy: the last batch is partial
        persistent_workers=workers > 0,
        prefetch_factor=max(1, cfg.prefetch) if workers > 0 else None,
        worker_init_fn=worker_init if workers > 0 else None,
    )


def _fork_safe_iter(loader: DataLoader):
    """``iter(loader)``, with every object that exists when the workers fork frozen out of
    the garbage collector's reach. A forked worker inherits the parent's objects; should it
    collect an unreachable DALI pipeline (a loader dropped in a reference cycle), the
    pipeline's destructor waits forever on threads that do not exist in the child."""
    if loader.num_workers == 0:
        return iter(loader)
    gc.collect()  # what is garbage now is destroyed here, in the parent, safely
    gc.freeze()
    try:
        return iter(loader)
    finally:
        gc.unfreeze()


class LoaderBase(Closable):
    """What the torch-based back-ends share: sampler, DataLoader, device transfer."""

    _unpack = True  # masks arrive as stored (bit-packed, or class indices)
    mask_encoding = "bits"

    def __init__(self, index: pd.DataFrame, cfg: LoaderConfig, mode: str, device: str,
                 dataset: Dataset):
        self.cfg, self.mode = cfg, mode
        self.device = str(device)
        self._device = torch.device(device)
        self.batch_size = cfg.batch_size
        n = len(index)
        self.sampler = EpochSampler(n, cfg.seed, cfg.shuffles(mode), cfg.shard_id, cfg.num_shards,
                                    cfg.drop_last, cfg.batch_size)
        self._clock = EpochClock()
        self.num_samples = len(self.sampler)
        self._len = num_batches(n, cfg.batch_size, cfg.shard_id, cfg.num_shards, cfg.drop_last)
        self._loader = make_dataloader(dataset, self.sampler, cfg, not cfg.full_res_mask,
                                       pin_memory=self._pin_memory())

    def _pin_memory(self) -> bool:
        return self._device.type == "cuda"

    def __len__(self) -> int:
        return self._len

    @property
    def epoch(self) -> int:
        return self._clock.epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration read epoch ``epoch``; later ones follow from there."""
        self._clock.set_epoch(epoch)

    def reset(self) -> None:
        """Rewind: the next iteration reads the current epoch again (DataLoader discards
        the batches a half-read iterator left in flight)."""
        self._clock.rewind()

    def close(self) -> None:
        """Stop the persistent workers now rather than at a garbage collection."""
        it = getattr(self._loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self._loader._iterator = None

    def __iter__(self) -> Iterator:
        self.sampler.set_epoch(self._clock.next_epoch())  # now, not at the first next()
        return self._batches()

    def _batches(self) -> Iterator:
        for batch in _fork_safe_iter(self._loader):
            if isinstance(batch, SampleFailure):
                raise batch.error()
            yield move_batch(batch, self._device, self._unpack, self.cfg.mask_planes,
                             self.cfg.mask_output, self.mask_encoding)


# --------------------------------------------------------------------------- torch back-end


def warp_nearest(packed: np.ndarray, mt: np.ndarray, size: Size) -> np.ndarray:
    """Nearest-neighbour warp of an HWC uint8 mask by a forward 2x3 matrix in DALI's
    convention onto ``size`` (a side or ``(H, W)``): each destination pixel centre, mapped
    back in float32, takes the source pixel that contains it (floor); 0 outside.
    ``cv2.warpAffine`` quantises coordinates to 1/32 px and so breaks the many exact ties
    of a resize differently from DALI."""
    out_h, out_w = as_hw(size)
    inv = np.linalg.inv(np.vstack([np.asarray(mt, np.float64).reshape(2, 3), [0.0, 0.0, 1.0]]))
    inv = inv.astype(np.float32)
    xs = (np.arange(out_w, dtype=np.float32) + np.float32(0.5))[None, :]
    ys = (np.arange(out_h, dtype=np.float32) + np.float32(0.5))[:, None]
    sx = np.floor(inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]).astype(np.int64)
    sy = np.floor(inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]).astype(np.int64)
    h, w = packed.shape[:2]
    inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    out = packed[np.clip(sy, 0, h - 1), np.clip(sx, 0, w - 1)]
    out[~inside] = 0
    return out


def clahe_rgb(image: np.ndarray, clahe) -> np.ndarray:
    """CLAHE on the luminance of an RGB image: OpenCV's on the L channel of LAB, which is
    what DALI's ``fn.clahe(luma_only=True)`` computes (tested equal on CPU)."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def apply_draw(image: np.ndarray, packed: np.ndarray | None, d: SampleDraw, aug: AugmentConfig,
               norm: NormalizeConfig, size: Size, crop: Size | None, roi=None):
    """One sample through the graph's steps, with OpenCV: CLAHE → warp by ``d``'s matrix
    (linear image, nearest packed mask, 0 outside) → brightness/contrast → normalise.
    ``image``: [H, W] grey or [H, W, 3] RGB uint8; ``roi``: the hand's window (see
    ``sample_matrix``). Returns ``(float32 [H, W] or [H, W, 3] normalised image, packed
    mask or None)``."""
    if d.clahe:
        tx, ty = aug.clahe_tile_grid
        clahe = cv2.createCLAHE(clipLimit=aug.clahe_clip_limit, tileGridSize=(tx, ty))
        image = clahe.apply(image) if image.ndim == 2 else clahe_rgb(image, clahe)
    mt = sample_matrix(d, image.shape[:2], size, crop, roi)
    out_h, out_w = as_hw(size)
    image = cv2.warpAffine(image, to_opencv_matrix(mt), dsize=(out_w, out_h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if packed is not None:
        packed = warp_nearest(packed, mt, size)
    if d.alpha != 1.0 or d.beta != 0.0:
        image = np.clip(np.rint(image * np.float32(d.alpha) + np.float32(d.beta * 255.0)), 0, 255)
    if image.ndim == 2:
        image = (image.astype(np.float32) / 255.0 - norm.mean) / norm.std
    else:
        mean, std = (np.asarray(v, np.float32) for v in norm.per_channel(image.shape[2]))
        image = (image.astype(np.float32) / 255.0 - mean) / std
    return image, packed


class TorchDataset(Dataset):
    """One sample: (image [1, H, W] float, packed mask [H, W, 4] uint8) or a SampleFailure."""

    def __init__(self, index: pd.DataFrame, cfg: LoaderConfig, mode: str):
        self.images = [str(p) for p in index["image_path"]]
        self.masks = [str(p) for p in index["mask_path"]]
        self.cfg, self.mode = cfg, mode
        self.full_res = cfg.full_res_mask
        self.half = cfg.normalize.dtype == "float16"
        self._eval = eval_draw(cfg.augment)
        from hbseg.dali_pipes.roi import loader_geometry

        self.geometry = loader_geometry(cfg, index)  # hand ROI windows and flips, if on

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]):
        i, epoch = key
        image = guard(self.images[i], read_image, self.images[i], self.cfg.image_channels)
        if isinstance(image, SampleFailure):
            return image
        packed = guard(self.masks[i], read_mask_file, self.masks[i])
        if isinstance(packed, SampleFailure):
            return packed
        if packed.shape[:2] != image.shape[:2]:
            return SampleFailure(f"mask is {packed.shape[1]}x{packed.shape[0]} but its image is "
                                 f"{image.shape[1]}x{image.shape[0]}; rebuild the mask cache",
                                 self.masks[i])
        c = self.cfg
        train = self.mode == "train"
        d = self.geometry.draw(draw_sample(c.augment, c.seed, epoch, i) if train else self._eval, i)
        image, warped = apply_draw(image, None if self.full_res else packed, d, c.augment,
                                   c.normalize, c.out_hw, c.crop_hw if train else None,
                                   self.geometry.roi(i))
        mask = packed if self.full_res else warped
        img = torch.from_numpy(np.ascontiguousarray(image))
        img = img.unsqueeze(0) if img.ndim == 2 else img.permute(2, 0, 1).contiguous()
        return (img.half() if self.half else img), torch.from_numpy(np.ascontiguousarray(mask))


class TorchLoader(FromFiles, LoaderBase):
    """DataLoader back-end implementing the ``Loader`` protocol.

    ``index``: the mask cache's index (``load_cache_index``), or a subset of its rows; your
    own files go in with :meth:`from_files`. Yields image [B, channels, H, W]
    float32/float16 and mask [B, C, H, W] uint8 0/1 on ``device`` (a list of [C, H_i, W_i]
    with ``cfg.full_res_mask`` in eval mode; [B, H, W] int64 with ``mask_output="index"``).
    Channels and classes come from the cache, as for ``DaliLoader``.
    """

    def __init__(self, index: pd.DataFrame, cfg: LoaderConfig | None = None,
                 mode: str = "train", device: str = "cpu"):
        cfg = LoaderConfig() if cfg is None else cfg
        check_mode(mode, cfg)
        check_index(index, ("image_path", "mask_path"))
        layout = index_layout(index)
        cfg = fit_config(cfg, layout)
        self.mask_encoding = mask_encoding(layout)  # how the cache stores the masks
        super().__init__(index, cfg, mode, device, TorchDataset(index, cfg, mode))
