"""``fn.external_source`` feeders: one epoch of one shard, in ``epoch_order``, batch by batch.

Each source is an iterable for ``external_source(source=..., batch=True)``: ``iter()``
rewinds to the epoch's first batch and ``next()`` returns a tuple with one batch (a list
of per-sample arrays) per output, then raises ``StopIteration`` after the shard's last,
partial batch. The order comes from :func:`hbseg.dali_pipes.loader_base.epoch_order`, so
every back-end reads the same samples in the same order; ``batch_indices(k)`` and
``batch_files(k)`` say which rows (and files) batch ``k`` held, so that a decode error
raised later inside DALI can name its file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hbseg.errors import DataError

from .loader_base import epoch_order

__all__ = ["EpochBatches", "EncodedFileSource", "CachedArraySource"]


class EpochBatches:
    """The batch plan shared by every source: which rows each batch of an epoch holds."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int = 0,
                 shard_id: int = 0, num_shards: int = 1, epoch: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if n < 1:
            raise DataError("no samples to read (the index is empty)")
        self.n, self.batch_size = n, batch_size
        self.shuffle, self.seed = shuffle, seed
        self.shard_id, self.num_shards = shard_id, num_shards
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.order = epoch_order(self.n, self.epoch, self.seed, self.shuffle,
                                 self.shard_id, self.num_shards)

    @property
    def num_samples(self) -> int:
        return len(self.order)

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def batch_indices(self, k: int) -> np.ndarray:
        """Row indices of batch ``k`` (the last batch of a shard may be partial)."""
        return self.order[k * self.batch_size:(k + 1) * self.batch_size]


class _BatchIterator:
    """``iter()`` rewinds, ``next()`` makes batch ``k`` with ``make(indices)``."""

    def __init__(self, plan: EpochBatches, make):
        self.plan, self.make, self.k = plan, make, 0

    def __iter__(self):
        self.k = 0
        return self

    def __next__(self):
        if self.k >= len(self.plan):
            raise StopIteration
        idx = self.plan.batch_indices(self.k)
        self.k += 1
        return self.make(idx)


def _read_bytes(path: str) -> np.ndarray:
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except OSError as e:
        raise DataError(f"cannot read file ({e.strerror})", path) from None
    if data.size == 0:
        raise DataError("empty file (0 bytes), expected a PNG", path)
    return data


class EncodedFileSource(EpochBatches):
    """Encoded file bytes (``np.fromfile`` uint8) for one or more path columns.

    ``EncodedFileSource([image_paths, mask_paths], ...)`` feeds an
    ``external_source(num_outputs=2)``; ``[image_paths]`` feeds ``num_outputs=1``.
    """

    def __init__(self, columns: Sequence[Sequence[str | Path]], batch_size: int, **plan):
        self.columns = [[str(p) for p in col] for col in columns]
        lengths = {len(c) for c in self.columns}
        if len(lengths) != 1:
            raise ValueError(f"path columns differ in length: {sorted(lengths)}")
        super().__init__(lengths.pop(), batch_size, **plan)

    def _make(self, idx: np.ndarray) -> tuple[list[np.ndarray], ...]:
        return tuple([_read_bytes(col[i]) for i in idx] for col in self.columns)

    def __iter__(self):
        return iter(_BatchIterator(self, self._make))

    def batch_files(self, k: int) -> list[tuple[str, ...]]:
        """``(image_path, mask_path, …)`` for each sample of batch ``k``."""
        return [tuple(col[i] for col in self.columns) for i in self.batch_indices(k)]

    def names(self, k: int, column: int = 0) -> list[str]:
        return [Path(self.columns[column][i]).name for i in self.batch_indices(k)]


class CachedArraySource(EpochBatches):
    """Decoded arrays already in memory (torch CUDA tensors or numpy), plus their shapes.

    A pipeline needs pixels and shapes in different places (pixels on the GPU, the
    ``[H, W]`` that drives the matrix on the CPU), so this source hands out two iterables
    over the same batch plan: :meth:`pixels` (a tuple of one batch per array list) and
    :meth:`shapes` (one batch of float32 ``[H, W]``).
    """

    def __init__(self, arrays: Sequence[Sequence], shapes_hw: np.ndarray, batch_size: int, **plan):
        self.arrays = [list(a) for a in arrays]
        self.shapes_hw = np.asarray(shapes_hw, dtype=np.float32).reshape(-1, 2)
        lengths = {len(a) for a in self.arrays} | {len(self.shapes_hw)}
        if len(lengths) != 1:
            raise ValueError(f"cached arrays and shapes differ in length: {sorted(lengths)}")
        super().__init__(lengths.pop(), batch_size, **plan)

    def pixels(self) -> _BatchIterator:
        return _BatchIterator(self, lambda idx: tuple([a[i] for i in idx] for a in self.arrays))

    def shapes(self) -> _BatchIterator:
        return _BatchIterator(self, lambda idx: [self.shapes_hw[i] for i in idx])
