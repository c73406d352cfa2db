"""Epoch-aware ``fn.external_source`` callbacks: one pipeline serves every epoch of a run.

Each source is a batch callback for ``external_source(batch=True, batch_info=True)``:
DALI calls it with a :class:`nvidia.dali.types.BatchInfo` whose ``iteration`` is the batch
index within the current epoch. The source answers with batch ``k`` of the epoch that the
loader selected with :meth:`EpochSource.begin` (rows in ``epoch_order``, the shard's last
batch partial) and raises ``StopIteration`` after it, which ends DALI's epoch;
``pipe.reset()`` then starts the next one with the same pipeline.

Nothing here reads a file: a file source hands DALI the *paths* (``fn.io.file.read`` reads
the bytes on DALI's own threads) and the per-sample augmentation parameters of
:mod:`hbseg.dali_pipes.draw`, so the training thread only launches work. The callbacks
run in the thread that runs the pipeline and cost microseconds per batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from hbseg.errors import DataError

from .config import AugmentConfig
from .draw import Size, batch_params, draw_sample, eval_draw
from .loader_base import epoch_order

__all__ = ["EpochSource", "FileSource", "CachedArraySource", "AugmentParams", "encode_path",
           "PARAM_OUTPUTS"]

# The per-sample argument inputs a training/eval graph takes, in this order.
PARAM_OUTPUTS = ("matrix", "alpha", "beta", "clahe")


def encode_path(path: str) -> np.ndarray:
    """A path as the 1-D uint8 array ``fn.io.file.read`` takes."""
    return np.frombuffer(os.fsencode(path), dtype=np.uint8)  # names that are not UTF-8 too


class AugmentParams:
    """Per-sample argument inputs for rows ``idx`` of ``epoch``: training draws
    (:func:`draw_sample`) or the deterministic eval ones (:func:`eval_draw`).

    ``shapes_hw``: ``[N, 2]`` (H, W) of every row; ``size``: the output, a side or
    ``(H, W)``; ``crop``: a random window (training) or None."""

    def __init__(self, aug: AugmentConfig, shapes_hw: np.ndarray, size: Size | None,
                 crop: Size | None = None, train: bool = True, seed: int = 0, geometry=None):
        self.aug, self.size, self.crop, self.train, self.seed = aug, size, crop, train, seed
        self.shapes_hw = np.asarray(shapes_hw, dtype=np.float64).reshape(-1, 2)
        self._eval = eval_draw(aug)
        self.geometry = geometry  # roi.SampleGeometry: hand ROI windows and flips, or None

    def __call__(self, epoch: int, idx: np.ndarray) -> list[list[np.ndarray]]:
        if self.train:
            draws = [draw_sample(self.aug, self.seed, epoch, int(i)) for i in idx]
        else:
            draws = [self._eval] * len(idx)
        rois = None
        g = self.geometry
        if g is not None and g.active:
            draws = [g.draw(d, int(i)) for d, i in zip(draws, idx, strict=True)]
            rois = [g.roi(int(i)) for i in idx]
        p = batch_params(draws, self.shapes_hw[idx], self.size, self.crop, rois)
        return [p[k] for k in PARAM_OUTPUTS]


class EpochSource:
    """The batch plan every source shares, and the epoch it serves.

    ``begin(epoch)`` selects the epoch (call it before DALI asks for the epoch's first
    batch); ``stop()`` makes the next request end the epoch early, so that a half-read
    epoch is closed after the batches already in flight. ``shuffle``: a new order every
    epoch (``epoch_order``); ``drop_last``: leave out the shard's last batch when partial.
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 shard_id: int = 0, num_shards: int = 1, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if n < 1:
            raise DataError("no samples to read (the index is empty)")
        self.n, self.batch_size = n, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.shard_id, self.num_shards = shard_id, num_shards
        self.begin(0)

    def release(self) -> None:
        """Drop what the source holds in memory (the loader is closing)."""

    def begin(self, epoch: int) -> None:
        self.epoch = int(epoch)
        order = epoch_order(self.n, self.epoch, self.seed, self.shuffle,
                            self.shard_id, self.num_shards)
        if self.drop_last:
            order = order[:len(order) // self.batch_size * self.batch_size]
        self.order = order
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True

    @property
    def num_samples(self) -> int:
        return len(self.order)

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def batch_indices(self, k: int) -> np.ndarray:
        """Row indices of batch ``k`` (the last batch of a shard may be partial)."""
        return self.order[k * self.batch_size:(k + 1) * self.batch_size]

    def _rows(self, info) -> np.ndarray:
        k = info if isinstance(info, int) else info.iteration
        if self._stopped or k >= len(self):
            raise StopIteration
        return self.batch_indices(k)


class FileSource(EpochSource):
    """Paths for one or more columns (image, packed mask), then the augmentation
    parameters when ``params`` is given: outputs ``(*paths, *PARAM_OUTPUTS)``."""

    channels = 1  # image channels, so a file DALI fails on is re-read the same way

    def __init__(self, columns: Sequence[Sequence[str | Path]], batch_size: int, *,
                 params: Callable[[int, np.ndarray], list] | None = None, **plan):
        self.columns = [[str(p) for p in col] for col in columns]
        lengths = {len(c) for c in self.columns}
        if len(lengths) != 1:
            raise ValueError(f"path columns differ in length: {sorted(lengths)}")
        self._encoded = [[encode_path(p) for p in col] for col in self.columns]
        self.params = params
        super().__init__(lengths.pop(), batch_size, **plan)

    @property
    def num_outputs(self) -> int:
        return len(self.columns) + (len(PARAM_OUTPUTS) if self.params else 0)

    def __call__(self, info) -> tuple[list[np.ndarray], ...]:
        idx = self._rows(info)
        paths = [[col[i] for i in idx] for col in self._encoded]
        extra = self.params(self.epoch, idx) if self.params else []
        return (*paths, *extra)

    def batch_files(self, k: int) -> list[tuple[str, ...]]:
        """``(image_path, mask_path, …)`` for each sample of batch ``k``."""
        return [tuple(col[i] for col in self.columns) for i in self.batch_indices(k)]

    def names(self, k: int, column: int = 0) -> list[str]:
        return [Path(self.columns[column][i]).name for i in self.batch_indices(k)]


class CachedArraySource(EpochSource):
    """Decoded arrays already in memory (torch CUDA tensors or numpy).

    Pixels and parameters live on different devices (pixels on the GPU, the argument
    inputs on the CPU), so this source feeds two ``external_source`` nodes over the same
    batch plan: :meth:`pixels` and :meth:`params`. DALI calls both for every batch.
    """

    def __init__(self, arrays: Sequence[Sequence], batch_size: int, *,
                 params: Callable[[int, np.ndarray], list], **plan):
        self.arrays = [list(a) for a in arrays]
        lengths = {len(a) for a in self.arrays}
        if len(lengths) != 1:
            raise ValueError(f"cached arrays differ in length: {sorted(lengths)}")
        self._params = params
        super().__init__(lengths.pop(), batch_size, **plan)

    def release(self) -> None:
        self.arrays = [[] for _ in self.arrays]

    def pixels(self, info) -> tuple[list, ...]:
        idx = self._rows(info)
        return tuple([a[i] for i in idx] for a in self.arrays)

    def params(self, info) -> list[list[np.ndarray]]:
        return self._params(self.epoch, self._rows(info))
