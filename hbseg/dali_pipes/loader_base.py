"""The one loader interface the training core consumes, whatever the back-end."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from hbseg.errors import DataError

__all__ = ["Loader", "epoch_order", "num_batches", "check_index", "close_loader"]


@runtime_checkable
class Loader(Protocol):
    """Iterating yields ``(image [B, channels, H, W] float, mask [B, C, H, W] uint8 0/1)`` on
    ``device``. With ``full_res_mask`` the mask is a list of [C, H_i, W_i] tensors.

    ``len()`` is the number of batches in one epoch of this shard; ``set_epoch(e)``
    selects epoch ``e``'s shuffle (call it before iterating, like DistributedSampler);
    ``reset()`` rewinds an epoch that was left half-read.
    """

    batch_size: int
    num_samples: int
    device: str

    def __iter__(self) -> Iterator: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...
    def reset(self) -> None: ...


def close_loader(loader) -> None:
    """Release what ``loader`` holds (pipeline, cached data, workers) now, where it can:
    every hbseg back-end has ``close()``; a user's own loader may not."""
    close = getattr(loader, "close", None)
    if callable(close):
        close()


def epoch_order(n: int, epoch: int, seed: int, shuffle: bool, shard_id: int, num_shards: int) -> np.ndarray:
    """Sample indices this shard reads in ``epoch``.

    Every back-end uses this, so all of them see the same samples in the same order.
    The permutation depends on (seed, epoch) only; shard ``k`` takes every
    ``num_shards``-th sample from position ``k``. Across shards an epoch therefore covers
    every sample exactly once; shard sizes differ by at most one.
    Last-batch policy: the last batch of a shard is partial (never dropped, never padded).
    """
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    return order[shard_id::num_shards]


def num_batches(n: int, batch_size: int, shard_id: int = 0, num_shards: int = 1) -> int:
    shard_len = len(range(shard_id, n, num_shards))
    return math.ceil(shard_len / batch_size)


def check_index(index: pd.DataFrame, columns=("image_path", "mask_path")) -> None:
    """A loader's sample index must have ``columns`` and at least one row."""
    missing = [c for c in columns if c not in index.columns]
    if missing:
        raise DataError(f"the sample index lacks column(s) {missing}; load it with "
                        "hbseg.data.load_cache_index(CACHE)")
    if len(index) == 0:
        raise DataError("the sample index is empty (no images to load)")
