"""The data a training run uses: its mask cache (built or refreshed first), its index, its
folds, its data set description, and the checks that tie settings to the data.

Kept apart from the trainer so that what prepares a run's data (pseudo-labels, k-fold,
OOF prediction) can use it without importing the training loop.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from hbseg.errors import ConfigError

from . import ddp
from .config import TrainConfig

__all__ = ["run_cache_dir", "check_run_cache_root", "prepare_index", "split_folds",
           "check_against_index", "dataset_spec"]


def run_cache_dir(cfg: TrainConfig, spec=None) -> Path:
    """The run's mask cache: ``--cache``, else ``DATA/hbseg-cache`` for a described data set
    (``spec``), else the hands' default beside their JSON."""
    from hbseg.data import default_cache_dir

    return Path(cfg.cache) if cfg.cache else default_cache_dir(cfg.data, spec)


def check_run_cache_root(cfg: TrainConfig, cache_dir: Path, spec=None) -> None:
    """A ``--cache`` must hold the masks of ``--data``: another data set's cache would train
    on that data, in silence (``hbseg.data.cache.check_cache_root``)."""
    if not cfg.cache:
        return  # the default cache lies in the data root: its own
    from hbseg.data.cache import check_cache_root
    from hbseg.data.layout import resolve_split

    check_cache_root(cache_dir, cfg.data if spec is not None
                     else resolve_split(cfg.data, "train").parent)


def prepare_index(cfg: TrainConfig, main: bool = True) -> pd.DataFrame:
    """The mask-cache index for ``cfg.data``; the cache is built first if it is missing
    (by rank 0 only; the other ranks wait and get rank 0's error if it fails)."""
    from hbseg.data import load_cache_index
    from hbseg.data.spec import check_cache_spec, resolve_spec

    spec = resolve_spec(cfg.data, cfg.spec)
    cache_dir = run_cache_dir(cfg, spec)
    check_cache_spec(cache_dir, spec)
    check_run_cache_root(cfg, cache_dir, spec)
    from hbseg.data.cache import refresh_cache, stale_reason

    # missing, from another hbseg, or a JSON/PNG changed since (size+mtime): (re)build, so
    # that training never uses masks that no longer match their polygons
    stale = ddp.broadcast_object(stale_reason(cache_dir) if main else None)
    if stale is not None:
        err = None
        if main:
            try:
                exists = (cache_dir / "index.csv").is_file()
                print(f"updating the mask cache in {cache_dir} ({stale})" if exists
                      else f"building the mask cache in {cache_dir}", file=sys.stderr)
                refresh_cache(cfg.data, cache_dir, workers=max(1, cfg.workers_for()), progress=cfg.progress,
                            spec=spec)
            except Exception as e:  # noqa: BLE001 - forwarded to every rank
                err = e
        err = ddp.broadcast_object(err)
        if err is not None:
            raise err
    return load_cache_index(cache_dir)


def split_folds(index: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(train, val): the rows of ``fold`` validate; ``fold == -1`` trains on everything."""
    if fold == -1:
        return index.reset_index(drop=True), None
    present = sorted(int(f) for f in index["fold"].unique())
    if fold not in present:
        raise ConfigError(f"--fold {fold} has no images in this data set; folds present: "
                          f"{', '.join(map(str, present))} (or -1 to train on all)")
    val = index[index["fold"] == fold].reset_index(drop=True)
    train = index[index["fold"] != fold].reset_index(drop=True)
    if train.empty:
        raise ConfigError(f"every image is in fold {fold}; nothing is left to train on")
    return train, val


def check_against_index(cfg: TrainConfig, index: pd.DataFrame) -> None:
    """Settings that depend on the data: a crop must fit inside every image."""
    if cfg.crop is not None:
        side = index[["height", "width"]].min(axis=1)
        i = int(side.idxmin())
        if cfg.crop > int(side[i]):
            row = index.loc[i]
            raise ConfigError(
                f"--crop {cfg.crop} is larger than the smallest image ({row['image_name']}: "
                f"{row['height']}x{row['width']}); use --crop {int(side[i])} or less"
            )


def dataset_spec(cfg: TrainConfig):
    """The run's ``DatasetSpec`` (``None``: the hands): ``--spec``, else the cache's, else
    ``DATA/hbseg-dataset.yaml``."""
    from hbseg.data.spec import cache_spec, resolve_spec

    if cfg.spec is None and cfg.cache and (Path(cfg.cache) / "meta.json").is_file():
        return cache_spec(cfg.cache)
    return resolve_spec(cfg.data, cfg.spec)
