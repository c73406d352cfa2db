"""The plain PyTorch back-end: cv2 decode + albumentations in DataLoader workers.

It is the reference the DALI graphs are checked against and the fallback where DALI is
missing, so it follows ``AugmentConfig`` to the letter and reads samples in the order
``epoch_order`` gives. Masks travel bit-packed ([H, W, 4] uint8, nearest-neighbour
warps) from the workers to the device and are unpacked there: 4 bytes per pixel cross
process and PCIe boundaries instead of 29.

Reproducibility: every sample's augmentation RNG is seeded from (seed, epoch, sample
index), so batches do not depend on the number of workers or on which worker ran them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hbseg.data.images import read_gray_png
from hbseg.data.masks import read_packed_png, unpack_masks_torch
from hbseg.errors import ConfigError, DataError

from .config import LoaderConfig, clahe_in_eval
from .loader_base import check_index, epoch_order, num_batches

__all__ = ["TorchLoader", "EpochSampler", "build_transform", "sample_rngs"]

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
    persistent workers (which hold stale copies of the loader) still seed correctly."""

    def __init__(self, n: int, seed: int, shuffle: bool, shard_id: int, num_shards: int):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.shard_id, self.num_shards = shard_id, num_shards
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = epoch_order(self.n, self.epoch, self.seed, self.shuffle, self.shard_id, self.num_shards)
        return iter([(int(i), self.epoch) for i in order])

    def __len__(self) -> int:
        return len(range(self.shard_id, self.n, self.num_shards))


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
    draws from them; hbseg's own augmentation draws come from ``sample_rngs`` instead.

    OpenCV's thread count is deliberately left alone: ``cv2.setNumThreads`` in a forked
    worker tears down the thread pool inherited from the parent and deadlocks on its
    condition variable (most forks hang once the parent has used cv2). DataLoader
    already limits torch to one thread per worker.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def sample_rngs(seed: int, epoch: int, index: int) -> tuple[np.random.Generator, random.Random]:
    """The augmentation RNGs of one sample in one epoch, independent of worker layout."""
    ss = np.random.SeedSequence([int(seed), int(epoch), int(index)])
    return np.random.default_rng(ss), random.Random(int(ss.generate_state(1, np.uint64)[0]))


def check_mode(mode: str, cfg: LoaderConfig) -> None:
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    if cfg.full_res_mask and mode != "eval":
        raise ConfigError("full_res_mask is for eval mode only (training needs equal-size masks)")


def move_batch(batch, device: torch.device, unpack: bool):
    """Host → device copy (non-blocking from pinned memory), then unpack masks there."""
    images, masks = batch
    images = images.to(device, non_blocking=True)

    def one(m: torch.Tensor) -> torch.Tensor:
        m = m.to(device, non_blocking=True)
        return unpack_masks_torch(m) if unpack else m.to(torch.uint8)

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


class LoaderBase:
    """What the torch-based back-ends share: sampler, DataLoader, device transfer."""

    _unpack = True  # masks arrive bit-packed

    def __init__(self, index: pd.DataFrame, cfg: LoaderConfig, mode: str, device: str,
                 dataset: Dataset):
        self.cfg, self.mode = cfg, mode
        self.device = str(device)
        self._device = torch.device(device)
        self.batch_size = cfg.batch_size
        n = len(index)
        self.sampler = EpochSampler(n, cfg.seed, mode == "train", cfg.shard_id, cfg.num_shards)
        self.num_samples = len(self.sampler)
        self._len = num_batches(n, cfg.batch_size, cfg.shard_id, cfg.num_shards)
        self._loader = make_dataloader(dataset, self.sampler, cfg, not cfg.full_res_mask,
                                       pin_memory=self._pin_memory())

    def _pin_memory(self) -> bool:
        return self._device.type == "cuda"

    def __len__(self) -> int:
        return self._len

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def reset(self) -> None:
        """Nothing to rewind: every ``iter()`` starts the epoch afresh, and DataLoader
        discards the batches a half-read iterator left in flight."""

    def __iter__(self) -> Iterator:
        for batch in self._loader:
            if isinstance(batch, SampleFailure):
                raise batch.error()
            yield move_batch(batch, self._device, self._unpack)


# --------------------------------------------------------------------------- torch back-end


def build_transform(cfg: LoaderConfig, mode: str):
    """The albumentations pipeline for one mode, omitting steps whose p is 0.

    CLAHE → shift/scale/rotate → (random crop →) resize → flip → brightness/contrast →
    normalise. Eval keeps only what is deterministic: CLAHE when ``clahe_in_eval(clahe_p)``,
    resize and normalise. Masks are warped nearest-neighbour, borders filled with 0.
    """
    import albumentations as A

    aug, norm, size = cfg.augment, cfg.normalize, cfg.size
    train = mode == "train"
    steps: list = []
    clahe_p = aug.clahe_p if train else (1.0 if clahe_in_eval(aug.clahe_p) else 0.0)
    if clahe_p > 0:
        steps.append(A.CLAHE(clip_limit=(aug.clahe_clip_limit, aug.clahe_clip_limit),
                             tile_grid_size=tuple(aug.clahe_tile_grid), p=clahe_p))
    if train and aug.ssr_p > 0:
        # ShiftScaleRotate's meaning, written as Affine (ShiftScaleRotate is deprecated)
        steps.append(A.Affine(
            translate_percent=(-aug.shift_limit, aug.shift_limit),
            scale=(1.0 - aug.scale_limit, 1.0 + aug.scale_limit),
            rotate=(-aug.rotate_limit, aug.rotate_limit),
            interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=aug.ssr_p,
        ))
    if train and cfg.crop is not None:
        steps.append(A.RandomCrop(cfg.crop, cfg.crop, pad_if_needed=True,
                                  border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0))
    # NEAREST_EXACT samples pixel centres, like the linear image resize; plain NEAREST
    # would shift the mask by (scale - 1) / 2 source pixels against the image.
    steps.append(A.Resize(size, size, interpolation=cv2.INTER_LINEAR,
                          mask_interpolation=cv2.INTER_NEAREST_EXACT))
    if train and aug.hflip_p > 0:
        steps.append(A.HorizontalFlip(p=aug.hflip_p))
    if train and aug.brightness_contrast_p > 0:
        steps.append(A.RandomBrightnessContrast(
            brightness_limit=aug.brightness_limit, contrast_limit=aug.contrast_limit,
            p=aug.brightness_contrast_p,
        ))
    steps.append(A.Normalize(mean=norm.mean, std=norm.std, max_pixel_value=255.0))
    return A.Compose(steps)


class TorchDataset(Dataset):
    """One sample: (image [1, H, W] float, packed mask [H, W, 4] uint8) or a SampleFailure."""

    def __init__(self, index: pd.DataFrame, cfg: LoaderConfig, mode: str):
        self.images = [str(p) for p in index["image_path"]]
        self.masks = [str(p) for p in index["mask_path"]]
        self.cfg, self.mode = cfg, mode
        self.full_res = cfg.full_res_mask
        self.half = cfg.normalize.dtype == "float16"
        self.transform = build_transform(cfg, mode)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]):
        i, epoch = key
        image = guard(self.images[i], read_gray_png, self.images[i])
        if isinstance(image, SampleFailure):
            return image
        packed = guard(self.masks[i], read_packed_png, self.masks[i])
        if isinstance(packed, SampleFailure):
            return packed
        if packed.shape[:2] != image.shape:
            return SampleFailure(f"mask is {packed.shape[1]}x{packed.shape[0]} but its image is "
                                 f"{image.shape[1]}x{image.shape[0]}; rebuild the mask cache",
                                 self.masks[i])
        if self.mode == "train":
            self.transform.set_random_state(*sample_rngs(self.cfg.seed, epoch, i))
        if self.full_res:
            out = self.transform(image=image)
            mask = packed
        else:
            out = self.transform(image=image, mask=packed)
            mask = out["mask"]
        img = torch.from_numpy(np.ascontiguousarray(out["image"], dtype=np.float32)).unsqueeze(0)
        return (img.half() if self.half else img), torch.from_numpy(np.ascontiguousarray(mask))


class TorchLoader(LoaderBase):
    """DataLoader back-end implementing the ``Loader`` protocol.

    ``index``: the mask cache's index (``load_cache_index``), or a subset of its rows.
    Yields image [B, 1, S, S] float32/float16 and mask [B, 29, S, S] uint8 0/1 on
    ``device`` (a list of [29, H_i, W_i] with ``cfg.full_res_mask`` in eval mode).
    """

    def __init__(self, index: pd.DataFrame, cfg: LoaderConfig, mode: str = "train",
                 device: str = "cpu"):
        check_mode(mode, cfg)
        check_index(index, ("image_path", "mask_path"))
        super().__init__(index, cfg, mode, device, TorchDataset(index, cfg, mode))
