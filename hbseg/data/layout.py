"""The competition's folder layout and the data-set index (one row per image, with folds).

    ROOT/train/DCM/IDxxx/<name>.png
    ROOT/train/outputs_json/IDxxx/<name>.json
    ROOT/test/DCM/IDxxx/<name>.png
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from hbseg.errors import DataError
from hbseg.regular_files import check_regular

from .images import png_header

__all__ = [
    "IMAGE_DIR", "JSON_DIR", "NUM_FOLDS", "FOLD_SEED", "DEFAULT_EXCLUDE", "SYNTH_PARTIAL_MARK",
    "resolve_split", "scan_split", "assign_folds", "warn_unmatched",
]

IMAGE_DIR = "DCM"
JSON_DIR = "outputs_json"
NUM_FOLDS = 5
FOLD_SEED = 42
# Present while ``hbseg-data synth`` writes a data set (removed when it is complete).
SYNTH_PARTIAL_MARK = ".hbseg-synth-partial"
# Patients whose images carry known labelling mistakes in the competition data.
DEFAULT_EXCLUDE: tuple[str, ...] = ("ID058", "ID089", "ID325", "ID363", "ID547")


def resolve_split(path: str | Path, split: str) -> Path:
    """Accept either the data root (holding ``train/``, ``test/``) or a split folder itself."""
    path = Path(path)
    if not path.is_dir():
        raise DataError("data folder not found", path)
    if (path / IMAGE_DIR).is_dir():
        return path
    if (path / split / IMAGE_DIR).is_dir():
        return path / split
    raise DataError(
        f"no {IMAGE_DIR}/ folder here or under {split}/ (expected {split}/{IMAGE_DIR}/ID*/*.png)",
        path,
    )


def assign_folds(patient_ids: Iterable[str], num_folds: int = NUM_FOLDS, seed: int = FOLD_SEED) -> dict[str, int]:
    """Patient → fold. Sorted IDs are shuffled with a fixed seed and dealt round-robin,
    so folds are balanced, both hands of a patient share a fold, and the split depends
    only on the set of IDs."""
    ids = sorted(set(patient_ids))
    random.Random(seed).shuffle(ids)
    return {pid: i % num_folds for i, pid in enumerate(ids)}


def warn_unmatched(exclude: Iterable[str], names: set[str], where: Path) -> None:
    """One warning line for exclude-list entries that match no patient (group) folder and
    no image name: most often a typo, which would leave in the images it meant to drop.
    A warning, not an error, so that one list can serve several subsets of a data set. The
    competition's own list (``DEFAULT_EXCLUDE``) is left out: most data lack those IDs."""
    unmatched = sorted(e for e in set(exclude) - names if e not in DEFAULT_EXCLUDE)
    if unmatched:
        one = len(unmatched) == 1
        shown = ", ".join(map(repr, unmatched[:5])) + (f" and {len(unmatched) - 5} more"
                                                       if len(unmatched) > 5 else "")
        print(f"warning: {where}: exclude list {'entry' if one else 'entries'} {shown} "
              f"match{'es' if one else ''} no patient folder or image name; nothing was "
              f"excluded for {'it' if one else 'them'}", file=sys.stderr)


def _check_tree(image_root: Path) -> None:
    """Images the ID*/name.png pattern would silently skip: a PNG lying directly in
    DCM/ (its patient is unknown) and an ID folder that is a broken or looping link."""
    for entry in sorted(image_root.iterdir()):
        if entry.is_symlink() and not entry.exists():
            try:
                target = os.readlink(entry)
            except OSError:
                target = "?"
            raise DataError(f"broken or looping symbolic link (points to {target}); its images "
                            "would be skipped", entry)
        if entry.suffix.lower() == ".png" and entry.is_file():
            raise DataError(f"image is not inside a patient folder (expected {IMAGE_DIR}/ID*/"
                            f"{entry.name})", entry)


def scan_split(
    split_dir: str | Path,
    labelled: bool = True,
    exclude: Iterable[str] = DEFAULT_EXCLUDE,
) -> pd.DataFrame:
    """Index a split folder: columns id, image_name, image_path, json_path, height, width, fold.

    ``exclude`` names patient IDs or image file names to drop. With ``labelled`` every
    image must have its JSON and every JSON its image.
    """
    split_dir = Path(split_dir)
    image_root = split_dir / IMAGE_DIR
    if not image_root.is_dir():
        raise DataError(f"missing {IMAGE_DIR}/ folder", split_dir)
    if (split_dir.parent / SYNTH_PARTIAL_MARK).is_file():
        raise DataError("incomplete data set: hbseg-data synth was interrupted while writing it; "
                        "run it again", split_dir.parent)
    _check_tree(image_root)
    images = sorted(p for p in image_root.glob("*/*") if p.suffix.lower() == ".png")
    for p in images:
        if not p.exists():  # glob lists a dangling link; reading it would say "not found"
            raise DataError(f"broken symbolic link (points to {os.readlink(p)})", p)
        check_regular(p, "a PNG image")  # a FIFO would block its reader for ever
    if not images:
        raise DataError("no PNG images found (expected ID*/<name>.png)", image_root)

    json_root = split_dir / JSON_DIR
    if labelled:
        if not json_root.is_dir():
            raise DataError(f"missing {JSON_DIR}/ folder for a labelled split", split_dir)
        jsons = {p.relative_to(json_root).with_suffix(""): p for p in json_root.glob("*/*.json")}
        for p in jsons.values():  # a FIFO would block its reader for ever
            check_regular(p, "a JSON annotation file")
        pngs = {p.relative_to(image_root).with_suffix("") for p in images}
        orphans = sorted(set(jsons) - pngs)
        if orphans:
            raise DataError("annotation has no matching image", jsons[orphans[0]])
        for p in images:
            if p.relative_to(image_root).with_suffix("") not in jsons:
                raise DataError(
                    f"image has no annotation (expected {JSON_DIR}/{p.parent.name}/{p.stem}.json)", p
                )

    excluded = set(exclude)
    warn_unmatched(excluded, {p.parent.name for p in images} | {p.name for p in images}, image_root)
    rows = []
    for p in images:
        pid = p.parent.name
        if pid in excluded or p.name in excluded:
            continue
        info = png_header(p)
        rows.append({
            "id": pid,
            "image_name": p.name,
            "image_path": str(p),
            "json_path": str(json_root / pid / f"{p.stem}.json") if labelled else "",
            "height": info["height"],
            "width": info["width"],
        })
    if not rows:
        raise DataError("every image was excluded", image_root)
    df = pd.DataFrame(rows)
    names = df["image_name"]
    if names.duplicated().any():
        dup = names[names.duplicated()].iloc[0]
        raise DataError(f"image name {dup!r} appears in more than one ID folder; "
                        "submission rows are keyed by file name", image_root)
    folds = assign_folds(df["id"])
    df["fold"] = df["id"].map(folds).astype(int)
    return df
