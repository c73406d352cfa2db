"""The one loader interface the training core consumes, whatever the back-end."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from hbseg.errors import DataError

__all__ = ["Loader", "Closable", "EpochClock", "epoch_order", "num_batches", "check_index", "close_loader"]


@runtime_checkable
class Loader(Protocol):
    """Iterating yields ``(image [B, channels, H, W] float, mask [B, C, H, W] uint8 0/1)`` on
    ``device``. With ``full_res_mask`` the mask is a list of [C, H_i, W_i] tensors.

    ``len()`` is the number of batches in one epoch of this shard. Each new iteration is a
    new epoch (reshuffled, new augmentation draws), as with a DataLoader; ``set_epoch(e)``
    pins the next iteration to epoch ``e`` (resume, DDP), and the ones after it follow
    from there. ``reset()`` rewinds: the next iteration reads the current epoch again,
    from its start (an iteration abandoned without ``reset()`` is simply over).
    """

    batch_size: int
    device: str

    @property
    def num_samples(self) -> int: ...

    def __iter__(self) -> Iterator: ...
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...
    def reset(self) -> None: ...


class EpochClock:
    """Which epoch an iteration reads: the first reads epoch 0, each later one the next
    epoch, unless ``set_epoch(e)`` pinned the next iteration to ``e``. Every back-end keeps
    one, so that forgetting ``set_epoch`` never repeats an epoch's order and draws."""

    def __init__(self) -> None:
        self.epoch = 0
        self._pinned = True  # the first iteration reads epoch 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._pinned = int(epoch), True

    def rewind(self) -> None:
        """The next iteration reads the current epoch again (``reset()``)."""
        self._pinned = True

    def next_epoch(self) -> int:
        """The epoch of the iteration that starts now."""
        if not self._pinned:
            self.epoch += 1
        self._pinned = False
        return self.epoch


class Closable:
    """``with loader: ...`` closes it: every back-end's ``close()`` releases what it holds."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
    Last-batch policy: the last batch of a shard is partial (never padded); loaders drop
    it only when asked (``LoaderConfig.drop_last``).
    """
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    return order[shard_id::num_shards]


def num_batches(n: int, batch_size: int, shard_id: int = 0, num_shards: int = 1,
                drop_last: bool = False) -> int:
    shard_len = len(range(shard_id, n, num_shards))
    return shard_len // batch_size if drop_last else math.ceil(shard_len / batch_size)


def check_index(index: pd.DataFrame, columns=("image_path", "mask_path")) -> None:
    """A loader's sample index must have ``columns`` and at least one row."""
    missing = [c for c in columns if c not in index.columns]
    if missing:
        raise DataError(f"the sample index lacks column(s) {missing}; load it with "
                        "hbseg.data.load_cache_index(CACHE)")
    if len(index) == 0:
        raise DataError("the sample index is empty (no images to load)")
