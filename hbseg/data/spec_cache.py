"""The mask cache of a described data set (``DatasetSpec``): same layout as the hands'.

``index.csv`` has the same columns, ``meta.json`` the same keys plus ``dataset`` (the
description), masks the same bit-packed PNGs with bit ``c`` = class ``c`` of the
description's list. Every loader therefore reads it as it reads the hands' cache; only the
number of planes to unpack (``len(classes)``) and the image channels differ.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from hbseg.atomic import remove_leftovers

from .cache_store import (
    _build_lock,
    _old_index,
    _stamp,
    check_cache_root,
    reusable_rows,
    write_cache,
)
from .masks import pack_masks, write_packed_png
from .spec import DatasetSpec, cache_spec

__all__ = ["build_spec_cache"]


def _rasterise_one(job) -> str:
    spec_dict, image_path, source, label_path, mask_path, h, w, verify = job
    spec = DatasetSpec.from_dict(spec_dict)
    if verify:
        from .formats.images import read_image

        img = read_image(image_path, spec.channels)
        h, w = img.shape[:2]
    from .formats.masks import read_masks

    masks = read_masks(spec, source, h, w, Path(image_path).name, label_path)
    Path(mask_path).parent.mkdir(parents=True, exist_ok=True)
    write_packed_png(mask_path, pack_masks(masks))
    return mask_path


def _source_files(spec: DatasetSpec, src, json_path: str) -> list[str]:
    if spec.format == "class-png":  # every class file of the image (none: an empty image)
        return [p for _, p in src]
    return [json_path]  # the label file, or the one COCO file


def build_spec_cache(
    root: str | Path,
    spec: DatasetSpec,
    cache_dir: str | Path | None = None,
    exclude: Iterable[str] = (),
    workers: int | None = None,
    verify_images: bool = True,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Rasterise a described data set's labels into packed masks (see ``build_cache``).

    Masks whose image or label files changed are redrawn; a cache built from another
    description (other classes, format or folders) is rebuilt whole.
    """
    from .formats.scan import scan_dataset

    data_root = Path(root)
    cache_dir = Path(cache_dir) if cache_dir is not None else data_root / "hbseg-cache"
    exclude = tuple(exclude)
    df, sources = scan_dataset(spec, data_root, exclude)
    df["source_stamp"] = [
        _stamp(i, *_source_files(spec, s, j))
        for i, s, j in zip(df["image_path"], sources, df["json_path"], strict=True)]
    rel = lambda p: os.path.relpath(p, data_root) if p else ""  # noqa: E731
    df["image_path"] = df["image_path"].map(rel)
    df["json_path"] = df["json_path"].map(rel)
    df["mask_path"] = [f"masks/{i}/{Path(n).stem}.png" for i, n in zip(df["id"], df["image_name"], strict=True)]

    check_cache_root(cache_dir, data_root, force)
    with _build_lock(cache_dir):  # one builder per cache (shared with the hands' cache)
        return _build(df, sources, spec, data_root, cache_dir, exclude, workers, verify_images,
                      force, progress)


def _build(df, sources, spec, data_root, cache_dir, exclude, workers, verify_images, force,
           progress) -> dict:
    old = None if force or cache_spec(cache_dir) != spec else _old_index(cache_dir)
    reusable = reusable_rows(df, cache_dir, old)
    if old is not None and set(old["image_path"]) == set(df["image_path"]) and len(reusable) == len(df):
        remove_leftovers(cache_dir)  # of a killed build; safe, as we hold the lock
        return {"cache_dir": str(cache_dir), "images": len(df), "rasterised": 0, "up_to_date": True}
    spec_dict = spec.to_dict()

    def make_jobs(todo, tmp):
        return [(spec_dict, str(data_root / r.image_path), sources[k],
                 str(data_root / r.json_path) if r.json_path else "",
                 str(tmp / r.mask_path), int(r.height), int(r.width), verify_images)
                for k, r in zip(todo.index, todo.itertuples(index=False), strict=True)]

    meta = {"data_root": os.path.relpath(data_root, cache_dir.parent), "classes": list(spec.classes),
            "exclude": list(exclude), "images": len(df), "dataset": spec_dict}
    drawn = write_cache(df, cache_dir, reusable, make_jobs, _rasterise_one, meta, workers, progress)
    return {"cache_dir": str(cache_dir), "images": len(df), "rasterised": drawn, "up_to_date": False}
