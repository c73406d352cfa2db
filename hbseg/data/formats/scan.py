"""Index a described data set (``DatasetSpec``): one row per image, with its labels.

    ROOT/<images>/<name>.png           or ROOT/<images>/<group>/<name>.png
    ROOT/<labels>/<name>.png|.json     index-png, polygon-json (same relative path)
    ROOT/<labels>/<class>/<name>.png   class-png (a missing file is an empty class)
    ROOT/<labels>                      coco: one JSON file listing every image

Rows carry the competition layout's columns (``id``, ``image_name``, ``image_path``,
``json_path``, ``height``, ``width``, ``fold``), so the mask cache and every loader work
unchanged. ``id`` groups images for the folds: the sub-folder when images sit in
sub-folders (a patient, a slide), else each image alone. ``json_path`` is the label file
(for coco the COCO file; empty for class-png, whose files are listed in the stamp).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from hbseg.errors import DataError

from ..images import png_header
from ..layout import assign_folds, warn_unmatched
from ..spec import DatasetSpec

__all__ = ["scan_dataset", "scan_images", "label_sources"]


def scan_images(images_dir: str | Path, what: str = "images folder") -> pd.DataFrame:
    """Every ``<name>.png`` or ``<group>/<name>.png`` under ``images_dir``, sorted: columns
    ``id`` (the group, or the image's stem when it has none), ``image_name``,
    ``image_path``, ``rel`` (the path below ``images_dir``), ``height``, ``width``.
    ``what`` names the folder in errors. Names must be unique: submission rows are keyed
    by file name."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DataError(f"{what} not found", images_dir)
    found = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() == ".png" and p.is_file()
                   and len(p.relative_to(images_dir).parts) <= 2)
    if not found:
        raise DataError("no PNG images found (expected <name>.png or <group>/<name>.png)", images_dir)
    rows = []
    for p in found:
        rel, info = p.relative_to(images_dir), png_header(p)
        rows.append({"id": rel.parts[0] if len(rel.parts) > 1 else rel.stem, "image_name": p.name,
                     "image_path": str(p), "rel": rel.as_posix(), "height": info["height"],
                     "width": info["width"]})
    df = pd.DataFrame(rows)
    if df["image_name"].duplicated().any():
        dup = df["image_name"][df["image_name"].duplicated()].iloc[0]
        raise DataError(f"image name {dup!r} appears in more than one folder; submission rows "
                        "are keyed by file name", images_dir)
    return df


def _orphans(label_dir: Path, stems: set[Path], suffix: str) -> None:
    for p in sorted(label_dir.rglob(f"*{suffix}")):
        if p.relative_to(label_dir).with_suffix("") not in stems:
            raise DataError("label has no matching image", p)


def label_sources(spec: DatasetSpec, root: Path, rels: list[Path]) -> list:
    """Per image (``rels``: paths relative to the images folder), what its masks are read
    from: a label path, ``[(class, path), …]`` (class-png) or ``[(class, segmentation), …]``
    (coco). Checks that labels and images match one to one."""
    labels = root / spec.labels
    stems = {r.with_suffix("") for r in rels}
    if spec.format == "coco":
        from .coco import read_coco

        if not labels.is_file():
            raise DataError("COCO label file not found (the description's 'labels')", labels)
        anns = read_coco(labels, spec.classes)
        by_name = {Path(n).name: n for n in anns}
        out = []
        for r in rels:
            key = r.as_posix() if r.as_posix() in anns else by_name.get(r.name)
            if key is None:
                raise DataError(f"image {r.as_posix()!r} is not listed in the COCO file {labels}",
                                root / spec.images / r)
            out.append(anns[key])
        known = {r.as_posix() for r in rels} | {r.name for r in rels}
        extra = [n for n in anns if n not in known and Path(n).name not in known]
        if extra:
            raise DataError(f"the COCO file lists image {extra[0]!r}, which is not in "
                            f"{root / spec.images}", labels)
        return out
    if not labels.is_dir():
        raise DataError("labels folder not found (the data set description's 'labels')", labels)
    if spec.format == "class-png":
        index = {c: i for i, c in enumerate(spec.classes)}
        for d in sorted(p for p in labels.iterdir() if p.is_dir()):
            if d.name not in index:
                close = difflib.get_close_matches(d.name, spec.classes, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise DataError(f"label folder {d.name!r} is not a class of the data set{hint}", d)
            _orphans(d, stems, ".png")
        return [[(index[c], str(labels / c / r.with_suffix(".png"))) for c in spec.classes
                 if (labels / c / r.with_suffix(".png")).is_file()] for r in rels]
    suffix = ".json" if spec.format == "polygon-json" else ".png"
    _orphans(labels, stems, suffix)
    out = []
    for r in rels:
        p = labels / r.with_suffix(suffix)
        if not p.is_file():
            raise DataError(f"image has no label (expected {p})", root / spec.images / r)
        out.append(str(p))
    return out


def scan_dataset(spec: DatasetSpec, root: str | Path,
                 exclude: Iterable[str] = ()) -> tuple[pd.DataFrame, list]:
    """``(index, sources)``: the rows (folds assigned) and each row's label source."""
    root = Path(root)
    images_dir = root / spec.images
    df = scan_images(images_dir, "images folder (the data set description's 'images')")
    sources = label_sources(spec, root, [Path(r) for r in df["rel"]])
    excluded = set(exclude)
    warn_unmatched(excluded, set(df["id"]) | set(df["image_name"]), images_dir)
    keep = [not (g in excluded or n in excluded) for g, n in zip(df["id"], df["image_name"],
                                                                   strict=True)]
    if not any(keep):
        raise DataError("every image was excluded", images_dir)
    kept = [src for src, k in zip(sources, keep, strict=True) if k]
    df = df[keep].drop(columns="rel").reset_index(drop=True)
    df.insert(3, "json_path", ["" if spec.format == "class-png" else
                               str(root / spec.labels) if spec.format == "coco" else str(src)
                               for src in kept])
    df["fold"] = df["id"].map(assign_folds(df["id"])).astype(int)
    return df, kept
