"""The mask cache: every JSON rasterised once into a bit-packed RGBA PNG.

    CACHE/index.csv          one row per image: id, image_name, image_path, json_path,
                             mask_path, height, width, fold, source_stamp
    CACHE/meta.json          format version, data root, classes, exclusions
    CACHE/masks/IDxxx/<stem>.png   [H, W, 4] uint8, bit c of the 32-bit pixel = class c

Why PNG: it is lossless, DALI decodes it natively (``fn.decoders.image`` with
``output_type=ANY_DATA`` keeps all four channels, on CPU and in mixed mode), and masks
compress to a few tens of KB, where raw ``.npy`` would take 16 MB per 2048² image.
Image and JSON paths are stored relative to the data root, so the cache moves with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from hbseg.atomic import remove_leftovers
from hbseg.errors import DataError

from .annotations import read_polygons

# the cache's files and their mechanics, shared with the described data sets' cache
from .cache_store import (
    CACHE_VERSION,
    INDEX_NAME,
    META_NAME,
    _build_lock,
    _old_index,
    _stamp,
    cache_root,
    check_cache_root,
    labels_fingerprint,
    reusable_rows,
    write_cache,
)
from .classes import CLASSES
from .images import read_gray_png
from .layout import DEFAULT_EXCLUDE, resolve_split, scan_split
from .masks import pack_masks, write_packed_png
from .rasterize import rasterize

__all__ = ["CACHE_VERSION", "default_cache_dir", "build_cache", "load_cache_index", "stale_reason",
           "refresh_cache", "check_cache_root", "cache_root", "labels_fingerprint", "sources_changed"]



def default_cache_dir(root: str | Path, spec=None) -> Path:
    """``ROOT/hbseg-cache`` beside ``train/`` (or beside the split folder given); a described
    data set (``spec``, or ``ROOT/hbseg-dataset.yaml``) keeps it in ROOT."""
    from .spec import find_spec

    if spec is not None or (Path(root).is_dir() and find_spec(root) is not None):
        return Path(root) / "hbseg-cache"
    split_dir = resolve_split(root, "train")
    return split_dir.parent / "hbseg-cache"


def _rasterise_one(args: tuple[str, str, str, bool]) -> tuple[str, int, int]:
    image_path, json_path, mask_path, verify_image = args
    if verify_image:
        img = read_gray_png(image_path, verify=True)
        h, w = img.shape
    else:
        from .images import png_header

        info = png_header(image_path)
        h, w = info["height"], info["width"]
    polygons = read_polygons(json_path, w, h)
    packed = pack_masks(rasterize(polygons, h, w))
    Path(mask_path).parent.mkdir(parents=True, exist_ok=True)
    write_packed_png(mask_path, packed)
    return mask_path, h, w


def build_cache(
    root: str | Path,
    cache_dir: str | Path | None = None,
    exclude: Iterable[str] = DEFAULT_EXCLUDE,
    workers: int | None = None,
    verify_images: bool = True,
    force: bool = False,
    progress: bool = True,
    spec=None,
) -> dict:
    """Rasterise the train split's JSON into packed masks; returns a summary dict.

    ``spec``: a ``DatasetSpec`` or its file for a data set other than the hands (found as
    ``ROOT/hbseg-dataset.yaml`` when not given); see ``hbseg.data.spec_cache``.

    Only masks whose image or JSON changed (size or mtime) are redrawn; when nothing
    changed, nothing is written. A new cache is built in a temporary folder and renamed
    into place, so a failed or interrupted build leaves the previous cache untouched.
    """
    from .spec import resolve_spec

    spec = resolve_spec(root, spec)
    if spec is not None:
        from .spec_cache import build_spec_cache

        return build_spec_cache(root, spec, cache_dir, [e for e in exclude if e not in DEFAULT_EXCLUDE],
                                workers, verify_images, force, progress)
    split_dir = resolve_split(root, "train")
    data_root = split_dir.parent
    cache_dir = Path(cache_dir) if cache_dir is not None else data_root / "hbseg-cache"
    exclude = tuple(exclude)
    df = scan_split(split_dir, labelled=True, exclude=exclude)
    df["source_stamp"] = [_stamp(i, j) for i, j in zip(df["image_path"], df["json_path"], strict=True)]
    rel = lambda p: os.path.relpath(p, data_root)  # noqa: E731
    df["image_path"] = df["image_path"].map(rel)
    df["json_path"] = df["json_path"].map(rel)
    df["mask_path"] = [f"masks/{i}/{Path(n).stem}.png" for i, n in zip(df["id"], df["image_name"], strict=True)]

    check_cache_root(cache_dir, data_root, force)
    with _build_lock(cache_dir):
        return _build_locked(df, data_root, cache_dir, exclude, workers, verify_images, force, progress)


def _build_locked(df, data_root, cache_dir, exclude, workers, verify_images, force, progress) -> dict:
    old = None if force else _old_index(cache_dir)
    reusable = reusable_rows(df, cache_dir, old)
    if old is not None:
        same_rows = set(old["image_path"]) == set(df["image_path"]) and len(reusable) == len(df)
        if same_rows and list(old.columns) == list(df.columns):
            remove_leftovers(cache_dir)  # of a killed build; safe, as we hold the lock
            return {"cache_dir": str(cache_dir), "images": len(df), "rasterised": 0, "up_to_date": True}

    def make_jobs(todo, tmp):
        return [(str(data_root / i), str(data_root / j), str(tmp / m), verify_images)
                for i, j, m in zip(todo["image_path"], todo["json_path"], todo["mask_path"], strict=True)]

    meta = {"data_root": os.path.relpath(data_root, cache_dir.parent), "classes": list(CLASSES),
            "exclude": list(exclude), "images": len(df)}
    drawn = write_cache(df, cache_dir, reusable, make_jobs, _rasterise_one, meta, workers, progress)
    return {"cache_dir": str(cache_dir), "images": len(df), "rasterised": drawn, "up_to_date": False}


def load_cache_index(cache_dir: str | Path, check_sources: bool = True) -> pd.DataFrame:
    """The cache's index with absolute ``image_path``, ``json_path`` and ``mask_path``.

    ``check_sources``: compare every image and JSON with the size and mtime recorded when
    its mask was drawn, and that the mask exists (a few stat calls per image), so that
    nothing trains on masks that no longer match their polygons.
    """
    cache_dir = Path(cache_dir)
    try:
        meta = json.loads((cache_dir / META_NAME).read_text())
        df = pd.read_csv(cache_dir / INDEX_NAME, keep_default_na=False, encoding_errors="surrogateescape")
    except FileNotFoundError:
        raise DataError("no mask cache here; build it with `hbseg-data cache ROOT`", cache_dir) from None
    except ValueError as e:
        raise DataError(f"mask cache index is unreadable ({e}); rebuild it with --force", cache_dir) from None
    if meta.get("version") != CACHE_VERSION:
        raise DataError(f"mask cache version {meta.get('version')} != {CACHE_VERSION} (built by another "
                        "hbseg); rebuild it with `hbseg-data cache ROOT`", cache_dir)
    data_root = (cache_dir.parent / meta["data_root"]).resolve()
    for col in ("image_path", "json_path"):
        df[col] = [str(data_root / p) if p else "" for p in df[col]]
    df["mask_path"] = [str(cache_dir.resolve() / p) for p in df["mask_path"]]
    if check_sources:
        reason = _stale_rows(df)
        if reason is not None:
            raise DataError(f"mask cache is stale: {reason}; update it with `hbseg-data cache ROOT`",
                            cache_dir)
    return df


def _stale_rows(df: pd.DataFrame) -> str | None:
    """The first row whose mask no longer matches its sources (size+mtime stamps), or whose
    mask file is gone; None when every row is current."""
    if "source_stamp" not in df.columns:
        return None
    for img, js, mask, stamp in zip(df["image_path"], df["json_path"], df["mask_path"],
                                    df["source_stamp"], strict=True):
        sources = [p for p in (img, js) if p]
        if len(str(stamp).split("|")) != len(sources):
            continue  # a cache stamping other sources (hbseg.data.spec_cache) checks its own
        try:
            now = _stamp(*sources)
        except OSError:
            return f"{img or js} is gone"
        if str(now) != str(stamp):
            return f"{js or img} changed after the cache was built"
        if not os.path.isfile(mask):
            return f"cached mask {mask} is missing"
    return None


def sources_changed(cache_dir: str | Path) -> str | None:
    """Which of the files the cache's masks were drawn from changed since (a label edited,
    an image or label removed, a mask gone), in a few words; None when none did. A cache
    that cannot be read is a DataError naming it."""
    return _stale_rows(load_cache_index(cache_dir, check_sources=False))


def stale_reason(cache_dir: str | Path) -> str | None:
    """Why the cache at ``cache_dir`` cannot be used as it is (missing, another version,
    a source changed, a mask gone), or None when it is current."""
    try:
        load_cache_index(cache_dir)
    except DataError as e:
        return e.problem
    return None


def refresh_cache(root: str | Path, cache_dir: str | Path, **kwargs) -> dict:
    """``build_cache`` with the exclusions the existing cache was built with (so updating
    a cache made with --no-default-exclude keeps those patients)."""
    cache_dir = Path(cache_dir)
    try:
        meta = json.loads((cache_dir / META_NAME).read_text())
        kwargs.setdefault("exclude", tuple(meta["exclude"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return build_cache(root, cache_dir, **kwargs)
