"""The data decide: a loader takes classes, channels and normalisation from the description
its mask cache records, and refuses a ``LoaderConfig`` that contradicts them.

A mask cache (``hbseg-data cache``, ``build_cache``, ``DaliLoader.from_files``) keeps its
``meta.json`` beside ``masks/``; an index row's ``mask_path`` lies below it, so the loader
finds the description from the index alone. An index whose masks lie in no cache (masks
packed by hand) says nothing, and the config's values (or the hands' 1 and 29) stand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from hbseg.errors import ConfigError, DataError

from .config import LoaderConfig

__all__ = ["DataLayout", "cache_layout", "index_layout", "fit_config", "mask_encoding"]

_LEVELS = 3  # CACHE/masks/<group>/<name>.png: meta.json is at most three folders up


@dataclass(frozen=True)
class DataLayout:
    """What a cache says about its data: the class names in mask-bit order, the image
    channels (None where it does not say, as in a pseudo-label cache) and how its masks
    are stored (:mod:`hbseg.dali_pipes.outputs`)."""

    classes: tuple[str, ...]
    channels: int | None
    source: str  # the meta.json it was read from
    mask_encoding: str = "bits"

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def cache_layout(cache_dir: str | Path) -> DataLayout | None:
    """The layout ``CACHE/meta.json`` records, or None when there is no readable one."""
    path = Path(cache_dir) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("classes"), list):
        return None
    dataset = meta.get("dataset")
    if isinstance(dataset, dict):
        channels: int | None = int(dataset.get("channels", 1))
    else:  # the hands' cache (grey) has a data root; other caches say nothing of channels
        channels = 1 if "data_root" in meta else None
    encoding = str(meta.get("mask_encoding", "bits"))
    return DataLayout(tuple(str(c) for c in meta["classes"]), channels, str(path), encoding)


def _cache_of(mask_folder: Path, found: dict[Path, DataLayout | None]) -> DataLayout | None:
    """The layout of the cache that holds ``mask_folder``; ``found`` memoises folders."""
    for folder in [mask_folder, *mask_folder.parents][:_LEVELS]:
        if folder not in found:
            is_cache = (folder / "meta.json").is_file() and (folder / "index.csv").is_file()
            found[folder] = cache_layout(folder) if is_cache else None
        if found[folder] is not None:
            return found[folder]
    return None


def index_layout(index: pd.DataFrame) -> DataLayout | None:
    """The layout of the cache(s) ``index``'s masks come from; None when they lie in none.
    Rows from caches that disagree on the classes or channels are an error."""
    if "mask_path" not in index.columns:
        return None
    found: dict[Path, DataLayout | None] = {}
    seen: dict[Path, DataLayout] = {}
    for folder in {Path(str(p)).parent for p in index["mask_path"] if str(p)}:
        layout = _cache_of(folder, found)
        if layout is not None:
            seen.setdefault(Path(layout.source), layout)
    layouts = list(seen.values())
    if not layouts:
        return None
    classes = {lay.classes for lay in layouts}
    channels = {lay.channels for lay in layouts} - {None}
    encodings = {lay.mask_encoding for lay in layouts}
    if len(classes) > 1 or len(channels) > 1 or len(encodings) > 1:
        a, b = layouts[0], next(lay for lay in layouts[1:] if lay != layouts[0])
        raise DataError(f"the index mixes masks of two data sets: {a.num_classes} classes, "
                        f"{a.channels} channel(s) here and {b.num_classes} classes, "
                        f"{b.channels} channel(s) in {b.source}", a.source)
    channels_known = next(iter(channels), None)
    return DataLayout(layouts[0].classes, channels_known, layouts[0].source,
                      layouts[0].mask_encoding)


def mask_encoding(layout: DataLayout | None) -> str:
    """How the masks of ``layout`` are stored; bits where no cache says."""
    return "bits" if layout is None else layout.mask_encoding


def fit_config(cfg: LoaderConfig, layout: DataLayout | None) -> LoaderConfig:
    """``cfg`` with ``channels`` and ``num_classes`` filled in from ``layout`` (the hands'
    1 and 29 where neither says), ImageNet's RGB statistics for colour; a value the data
    contradict is a ConfigError naming the cache's ``meta.json``."""
    if layout is None:
        return replace(cfg, channels=cfg.image_channels, num_classes=cfg.mask_planes)
    where = layout.source
    if cfg.num_classes is not None and cfg.num_classes != layout.num_classes:
        raise ConfigError(f"num_classes={cfg.num_classes}, but the data set has "
                          f"{layout.num_classes} classes ({', '.join(layout.classes[:6])}"
                          f"{', …' if layout.num_classes > 6 else ''}); leave num_classes "
                          "out to take it from the data", where)
    if (cfg.channels is not None and layout.channels is not None
            and cfg.channels != layout.channels):
        kind = {1: "grey (1 channel)", 3: "colour (3 channels)"}
        raise ConfigError(f"channels={cfg.channels}, but the data set's images are "
                          f"{kind[layout.channels]}; leave channels out to take it from "
                          "the data", where)
    channels = cfg.channels or layout.channels or 1
    try:
        cfg.normalize.for_channels(channels)
    except ValueError as e:
        raise ConfigError(f"{e}; the data set's images have {channels} channel(s)", where) from None
    return replace(cfg, channels=channels, num_classes=layout.num_classes)
