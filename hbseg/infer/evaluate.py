"""``hbseg-eval``: Dice of a submission CSV against the JSON ground truth, at original size.

Dice = 2|A∩B| / (|A| + |B|) per image and class, 1.0 when both masks are empty; a class's
score is the mean over images, the mean Dice the mean over classes.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hbseg.atomic import atomic_write_text
from hbseg.data.layout import resolve_split, scan_split
from hbseg.errors import DataError
from hbseg.progress import map_with_progress

from .config import EvalConfig
from .csv_io import Submission, read_submission

__all__ = ["dice_scores", "evaluate", "format_table", "write_result"]


def dice_scores(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-class Dice of [C, H, W] masks (any 0/1 dtype); empty-empty scores 1.0."""
    c = pred.shape[0]
    p = np.asarray(pred).reshape(c, -1) != 0
    g = np.asarray(gt).reshape(c, -1) != 0
    inter = np.logical_and(p, g).sum(1, dtype=np.int64)
    total = p.sum(1, dtype=np.int64) + g.sum(1, dtype=np.int64)
    return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))


def _score_one(job) -> np.ndarray:
    from hbseg.data import rasterize, read_polygons

    sub, name, height, width, json_path, *mask_path = job
    pred = sub.masks(name, height, width)
    if mask_path:  # a described data set: the ground truth is its mask cache
        from hbseg.data.masks import read_packed_png, unpack_masks

        gt = unpack_masks(read_packed_png(mask_path[0]), len(sub.class_names))
    else:
        gt = rasterize(read_polygons(json_path, width, height), height, width)
    return dice_scores(pred, gt)


def _described(data, spec=None) -> tuple:
    """``(index, class names)`` of a described data set's mask cache (built if missing),
    or ``(None, None)`` for the hands. ``spec``: the description, if already read."""
    from hbseg.data.spec import resolve_spec

    spec = spec if spec is not None else resolve_spec(data)
    if spec is None:
        return None, None
    from hbseg.data.cache import build_cache, load_cache_index

    cache = Path(data) / "hbseg-cache"
    build_cache(data, cache, workers=1, progress=False, spec=spec)  # a no-op when up to date
    return load_cache_index(cache), spec.classes


def _select(cfg: EvalConfig, df):
    if cfg.ids:
        unknown = sorted(set(cfg.ids) - set(df["id"]))
        if unknown:
            raise DataError(f"--ids: no patient {unknown[0]} in the data", cfg.data)
        df = df[df["id"].isin(cfg.ids)]
    if cfg.fold is not None:
        df = df[df["fold"] == cfg.fold]
        if df.empty:
            raise DataError(f"--fold {cfg.fold}: no images in that fold", cfg.data)
    return df


def _check_coverage(sub: Submission, df_all, df) -> None:
    known = set(df_all["image_name"])
    for name in sub.images:
        if name not in known:
            described = "mask_path" in df_all.columns
            where = f"no labelled image {name} in its cache" if described else f"no DCM/ID*/{name}"
            raise DataError(f"line {sub.line_of(name, 0)}: image {name!r} is not in the data "
                            f"folder ({where})", sub.path)
    missing = [n for n in df["image_name"] if n not in sub.rles]
    if missing:
        raise DataError(
            f"missing rows: no rows for image {missing[0]!r}"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + f" ({len(missing)} of {len(df)} images); pass --ids or --fold to score a subset",
            sub.path,
        )


def evaluate(cfg: EvalConfig) -> dict:
    """Score ``cfg.pred`` on the labelled images of ``cfg.data`` (optionally some IDs or a
    fold); returns mean, per-class and per-image Dice."""

    df_all, names = _described(cfg.data)
    if df_all is None:
        df_all = scan_split(resolve_split(cfg.data, "train"), labelled=True, exclude=())
    df = _select(cfg, df_all)
    sub = read_submission(cfg.pred) if names is None else read_submission(cfg.pred, names)
    _check_coverage(sub, df_all, df)
    jobs = []
    for r in df.itertuples(index=False):
        one = Submission(sub.path, sub.class_names, {r.image_name: sub.rles[r.image_name]},
                         {r.image_name: sub.lines[r.image_name]})
        extra = () if names is None else (r.mask_path,)
        jobs.append((one, r.image_name, int(r.height), int(r.width), r.json_path, *extra))
    scores = np.stack(map_with_progress(_score_one, jobs, workers=cfg.workers, desc="scoring",
                                        progress=cfg.progress, chunksize=2))  # [N, C]
    per_class = scores.mean(0)
    return {
        "pred": str(cfg.pred),
        "data": str(cfg.data),
        "images": len(jobs),
        "mean_dice": float(per_class.mean()),
        "per_class": {c: float(v) for c, v in zip(sub.class_names, per_class, strict=True)},
        "per_image": {n: float(v) for n, v in zip(df["image_name"], scores.mean(1), strict=True)},
    }


def format_table(result: dict, class_names: Sequence[str] | None = None) -> str:
    names = list(class_names or result["per_class"])
    width = max(len(n) for n in [*names, "mean"])
    lines = [f"{'class':<{width}}  dice", f"{'-' * width}  ------"]
    lines += [f"{n:<{width}}  {result['per_class'][n]:.4f}" for n in names]
    lines += [f"{'-' * width}  ------", f"{'mean':<{width}}  {result['mean_dice']:.4f}",
              f"({result['images']} images)"]
    return "\n".join(lines)


def write_result(result: dict, path: str | Path) -> Path:
    """``.json``: the whole result; ``.csv``: ``class,dice`` rows then ``mean``. Atomic."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["class", "dice"])
        for c, v in result["per_class"].items():
            w.writerow([c, f"{v:.6f}"])
        w.writerow(["mean", f"{result['mean_dice']:.6f}"])
        atomic_write_text(path, buf.getvalue())
    elif path.suffix.lower() == ".json":
        atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    else:
        raise DataError("result file must end in .json or .csv", path)
    return path
