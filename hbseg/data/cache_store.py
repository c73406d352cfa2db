"""What every mask cache shares, whatever made its masks: the index and meta files, source
stamps, the one-builder lock, rebuilding atomically beside the old cache while reusing the
masks whose sources did not change, and the record of the data root it was built from.

``hbseg.data.cache`` (the hands' JSON polygons) and ``hbseg.data.spec_cache`` (a described
data set's label files) build on it; neither imports the other for these.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pandas as pd

from hbseg.atomic import atomic_dir
from hbseg.errors import DataError
from hbseg.progress import map_with_progress

CACHE_VERSION = 1
INDEX_NAME = "index.csv"
META_NAME = "meta.json"


def _stamp(*paths: str | Path) -> str:
    parts = []
    for p in paths:
        st = os.stat(p)
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def _old_index(cache_dir: Path) -> pd.DataFrame | None:
    try:
        meta = json.loads((cache_dir / META_NAME).read_text())
        if meta.get("version") != CACHE_VERSION:
            return None
        return pd.read_csv(cache_dir / INDEX_NAME, keep_default_na=False, encoding_errors="surrogateescape")
    except (OSError, ValueError):
        return None


def _build_lock(cache_dir: Path):
    """One builder per cache at a time (``hbseg.locks.folder_lock``, a file beside it): a
    second ``hbseg-data cache`` (or a training run building the cache) waits, then finds the
    cache up to date."""
    from hbseg.locks import folder_lock

    def say(holder: str) -> None:
        print(f"waiting for another process ({holder}) building {cache_dir}", file=sys.stderr)

    return folder_lock(cache_dir, "mask cache", wait=True, on_wait=say)


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: only the parent reports it, in one line
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def reusable_rows(df: pd.DataFrame, cache_dir: Path, old: pd.DataFrame | None) -> set[str]:
    """Image paths whose sources are unchanged since their mask was drawn (same size and
    mtime stamps) and whose mask is still there."""
    if old is None:
        return set()
    old_stamps = dict(zip(old["image_path"], old["source_stamp"], strict=True))
    return {p for p, s, m in zip(df["image_path"], df["source_stamp"], df["mask_path"], strict=True)
            if old_stamps.get(p) == s and (cache_dir / m).is_file()}


def write_cache(df: pd.DataFrame, cache_dir: Path, reusable: set[str], make_jobs, rasterise,
                meta: dict, workers: int | None, progress: bool) -> int:
    """The cache rebuilt atomically beside the old one: reusable masks hard-linked (or
    copied), the others drawn by ``rasterise`` over ``make_jobs(todo_rows, tmp_dir)`` in a
    process pool, then the index and ``meta``. Returns the number of masks drawn."""
    todo = df[~df["image_path"].isin(reusable)]
    with atomic_dir(cache_dir) as tmp:
        for p in df[df["image_path"].isin(reusable)]["mask_path"]:
            (tmp / p).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(cache_dir / p, tmp / p)
            except OSError:
                shutil.copy2(cache_dir / p, tmp / p)
        jobs = make_jobs(todo, tmp)
        map_with_progress(rasterise, jobs, workers=workers, desc="rasterising masks",
                          progress=progress, chunksize=4, initializer=_worker_init)
        # file names that are not UTF-8 keep their bytes (as os.fsdecode gave them)
        df.to_csv(tmp / INDEX_NAME, index=False, errors="surrogateescape")
        meta = {"version": CACHE_VERSION, **meta, "labels_fingerprint": labels_fingerprint(df)}
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2))
    return len(jobs)


def labels_fingerprint(df: pd.DataFrame) -> str:
    """One hash of what the masks were drawn from: every row's image and label file
    (relative paths) with their size and mtime stamps. Equal fingerprints, equal masks; a
    label edited, added or removed changes it."""
    h = hashlib.sha256()
    for row in sorted(zip(df["image_path"], df["json_path"], df["source_stamp"], strict=True)):
        h.update("\t".join(map(str, row)).encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()[:16]


def cache_root(cache_dir: str | Path) -> Path | None:
    """The data root a cache was built from (as its ``meta.json`` records it), or None
    where there is no readable cache."""
    cache_dir = Path(cache_dir)
    try:
        meta = json.loads((cache_dir / META_NAME).read_text())
        return (cache_dir.parent / meta["data_root"]).resolve()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_cache_root(cache_dir: str | Path, data_root: str | Path, force: bool = False) -> None:
    """A cache holds the masks of one data root. Given with the data of another (``--cache
    small/hbseg-cache --data big``) it is refused: used, it would train on the other data;
    rebuilt in passing, it would destroy masks another run relies on. ``force`` rebuilds it
    from ``data_root``, with a line that says so."""
    built, want = cache_root(cache_dir), Path(data_root).resolve()
    if built is None or built == want:
        return
    if force:
        print(f"rebuilding the mask cache {cache_dir} from {want} (it was built from {built})",
              file=sys.stderr)
        return
    raise DataError(f"this mask cache was built from the data in {built}, not {want}; give "
                    f"that data, leave the cache out to use (or build) {want}'s own, or pass "
                    f"another folder for a cache of its own", cache_dir)
