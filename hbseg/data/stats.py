"""What a data set's labels look like before training on it: how often each class occurs,
how large it is when it does, in how many pieces, and the image sizes and folds.

Everything is read from the mask cache (built or updated first, as ``hbseg-data cache``
does), so the hands and every described data set (``ROOT/hbseg-dataset.yaml``) are
measured the same way, on exactly the masks that training will see.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from hbseg.atomic import atomic_savefig, atomic_write_text
from hbseg.errors import ConfigError, DataError
from hbseg.progress import map_with_progress

__all__ = ["dataset_stats", "summarize_masks", "stats_out_dir", "format_stats_table", "plot_stats",
           "write_stats"]

STATS_JSON = "stats.json"
STATS_PNG = "stats.png"


def _resolve_cache(root: str | Path, spec) -> tuple[object, Path]:
    """The description (``None``: the hands) and the mask cache folder of ``root``."""
    from .cache import default_cache_dir
    from .spec import check_cache_spec, resolve_spec

    spec = resolve_spec(root, spec)
    cache_dir = default_cache_dir(root, spec)
    # `hbseg-data cache` would silently rebuild a cache of another description; a summary
    # must not destroy the cache another data set's training relies on
    check_cache_spec(cache_dir, spec)
    return spec, cache_dir


def _measure_mask(job: tuple[str, int, int, int]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """One cached mask → (pixels per class, connected components per class, height, width)."""
    import cv2

    from .masks import read_packed_png

    mask_path, num_classes, height, width = job
    packed = read_packed_png(mask_path)
    h, w = packed.shape[:2]
    if (h, w) != (height, width):
        raise DataError(f"mask is {w}x{h} but the cache index says {width}x{height}; rebuild the "
                        "cache with `hbseg-data cache ROOT --force`", mask_path)
    areas = np.zeros(num_classes, np.int64)
    parts = np.zeros(num_classes, np.int32)
    for c in range(num_classes):
        # one class plane at a time: all 29 planes of a 2048² mask at once are 120 MB per worker
        plane = (packed[..., c // 8] >> np.uint8(c % 8)) & np.uint8(1)
        area = int(np.count_nonzero(plane))
        if area:
            areas[c] = area
            parts[c] = cv2.connectedComponents(plane, connectivity=8)[0] - 1  # minus background
    return areas, parts, h, w


def _quantiles(values: np.ndarray) -> dict:
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    return {"min": int(values.min()), "median": float(median), "max": int(values.max()),
            "q25": float(q25), "q75": float(q75)}


def summarize_masks(classes, areas: np.ndarray, parts: np.ndarray, heights, widths) -> dict:
    """The per-class and image-size part of ``dataset_stats`` from per-image measurements:
    ``areas`` and ``parts`` are [images, classes] pixel and connected-component counts."""
    classes = list(classes)
    areas, parts = np.asarray(areas, np.int64), np.asarray(parts, np.int64)
    heights, widths = np.asarray(heights, np.int64), np.asarray(widths, np.int64)
    n = len(heights)
    if areas.shape != (n, len(classes)) or parts.shape != areas.shape or widths.shape != (n,):
        raise ValueError(f"expected [{n}, {len(classes)}] areas and parts for {n} images, got "
                         f"{areas.shape} and {parts.shape}")
    pixels = heights * widths
    fraction = areas / pixels[:, None]
    rows = []
    for c, name in enumerate(classes):
        present = areas[:, c] > 0
        row = {"name": name, "images": int(present.sum()), "share": float(present.mean()) if n else 0.0,
               # of every pixel in the data set: the balance a pixel-wise loss sees
               "pixel_share": float(areas[:, c].sum() / pixels.sum()) if n else 0.0,
               "area_mean": None, "area_median": None, "area_q25": None, "area_q75": None,
               "parts_median": None, "parts_max": None}
        if present.any():
            f = fraction[present, c]
            q25, median, q75 = np.percentile(f, [25, 50, 75])
            row.update(area_mean=float(f.mean()), area_median=float(median), area_q25=float(q25),
                       area_q75=float(q75), parts_median=float(np.median(parts[present, c])),
                       parts_max=int(parts[present, c].max()))
        rows.append(row)
    sizes = pd.DataFrame({"height": heights, "width": widths}).value_counts().reset_index(name="images")
    return {
        "images": n,
        "image_size": {"height": _quantiles(heights), "width": _quantiles(widths)} if n else None,
        "sizes": [{"height": int(h), "width": int(w), "images": int(k)}
                  for h, w, k in sizes[["height", "width", "images"]].itertuples(index=False)],
        "classes": rows,
        "absent": [r["name"] for r in rows if r["images"] == 0],
    }


def dataset_stats(root: str | Path, spec=None, workers: int | None = None, progress: bool = True) -> dict:
    """A summary of the labels of the data set in ``root`` (the hands, or the one described by
    ``spec`` or ``ROOT/hbseg-dataset.yaml``), as a JSON-ready dict.

    Per class (``classes``, in class order): ``images`` where it is present and their
    ``share``; ``pixel_share`` of all pixels; the area as a fraction of the image where
    present (``area_mean``, ``area_median``, quartiles ``area_q25``/``area_q75``); the
    connected components (8-connectivity) per image where present (``parts_median``,
    ``parts_max``); the area and part fields are ``None`` for a class that never appears.
    Overall: ``images``, ``groups`` (distinct ``id``), ``folds`` (images per fold),
    ``image_size`` (min/median/max height and width), ``sizes`` (each distinct size and
    its image count), ``absent`` (classes that never appear). The mask cache is built or
    updated first, with the exclusions it was built with.
    """
    from .cache import load_cache_index, refresh_cache
    from .classes import CLASSES

    spec, cache_dir = _resolve_cache(root, spec)
    built = refresh_cache(root, cache_dir, workers=workers, progress=progress, spec=spec)
    index = load_cache_index(cache_dir)
    if index.empty:
        raise DataError("the mask cache holds no images", cache_dir)
    classes = list(CLASSES) if spec is None else list(spec.classes)
    jobs = [(p, len(classes), int(h), int(w))
            for p, h, w in zip(index["mask_path"], index["height"], index["width"], strict=True)]
    measured = map_with_progress(_measure_mask, jobs, workers=workers, desc="measuring masks",
                                 progress=progress, chunksize=4)
    areas, parts, heights, widths = zip(*measured, strict=True)
    summary = summarize_masks(classes, np.stack(areas), np.stack(parts), heights, widths)
    folds = index.groupby("fold").size()
    return {
        "dataset": "hands" if spec is None else spec.name,
        "cache_dir": str(cache_dir),
        "rasterised": int(built["rasterised"]),
        "images": summary["images"],
        "groups": int(index["id"].nunique()),
        "folds": {str(int(f)): int(k) for f, k in folds.items()},
        **{k: v for k, v in summary.items() if k != "images"},
    }


def stats_out_dir(root: str | Path, out: str | Path | None = None, spec=None) -> Path:
    """Where the summary goes: ``out``, or ``hbseg-stats`` beside the mask cache (ROOT/hbseg-stats).
    A folder inside a described data set's images or labels is refused: its ``stats.png``
    would be read as an image (or label) the next time the set is scanned."""
    from .cache import default_cache_dir
    from .spec import resolve_spec

    spec = resolve_spec(root, spec)
    folder = Path(out) if out is not None else default_cache_dir(root, spec).parent / "hbseg-stats"
    if spec is not None:
        where = folder.resolve()
        for key, sub in (("images", spec.images), ("labels", spec.labels)):
            inside = (Path(root) / sub).resolve()
            if where == inside or inside in where.parents:
                raise ConfigError(f"the summary folder lies inside the data set's {key} folder "
                                  f"({sub!r}), where stats.png would be read as data; give "
                                  "another --out", folder)
    return folder


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.3g}%"


def format_stats_table(stats: dict) -> str:
    """The summary as text: an overview line, one row per class, and a warning line for
    classes that never appear."""
    size = stats["image_size"]
    folds = ", ".join(f"{f}: {k}" for f, k in stats["folds"].items())
    lines = [f"{stats['dataset']}: {stats['images']} images in {stats['groups']} groups; images per "
             f"fold {{{folds}}}",
             "image height {min}..{max} (median {median:g}), ".format(**size["height"])
             + "width {min}..{max} (median {median:g})".format(**size["width"]), ""]
    width = max(len("class"), *(len(r["name"]) for r in stats["classes"]))
    head = (f"{'class':<{width}}  {'images':>9}  {'share':>6}  {'pixel share':>11}  {'area mean':>9}  "
            f"{'area median':>11}  {'parts median':>12}  {'parts max':>9}")
    lines += [head, "-" * len(head)]
    n = stats["images"]
    for r in stats["classes"]:
        parts_median = "-" if r["parts_median"] is None else f"{r['parts_median']:g}"
        parts_max = "-" if r["parts_max"] is None else str(r["parts_max"])
        lines.append(f"{r['name']:<{width}}  {r['images']:>4}/{n:<4}  {_percent(r['share']):>6}  "
                     f"{_percent(r['pixel_share']):>11}  {_percent(r['area_mean']):>9}  "
                     f"{_percent(r['area_median']):>11}  {parts_median:>12}  {parts_max:>9}")
    if stats["absent"]:
        k = len(stats["absent"])
        lines.append(f"warning: {k} class{'es' if k > 1 else ''} never appear{'' if k > 1 else 's'}: "
                     f"{', '.join(stats['absent'])}")
    return "\n".join(lines)


def plot_stats(stats: dict, path: str | Path) -> Path:
    """Three panels as one PNG: the share of images where each class is present, its area
    when present (median and quartiles, log scale), and the image sizes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI back-end

    rows = stats["classes"]
    names = [r["name"] for r in rows]
    y = np.arange(len(rows))
    fig = Figure(figsize=(13, max(3.5, 0.24 * len(rows) + 1.4)), dpi=80)
    ax_share, ax_area, ax_size = fig.subplots(1, 3)

    ax_share.barh(y, [r["share"] for r in rows], color="tab:blue")
    for k, r in enumerate(rows):
        if r["images"] == 0:
            ax_share.text(0.01, k, "never present", va="center", fontsize=8, color="tab:red")
    ax_share.set_xlim(0, 1.05)
    ax_share.set_xlabel("share of images where present")

    shown = [(k, r) for k, r in enumerate(rows) if r["area_median"] is not None]
    if shown:
        ks, rs = zip(*shown, strict=True)
        med = np.array([r["area_median"] for r in rs])
        err = np.array([[m - r["area_q25"] for m, r in zip(med, rs, strict=True)],
                        [r["area_q75"] - m for m, r in zip(med, rs, strict=True)]])
        ax_area.errorbar(med, ks, xerr=err, fmt="o", markersize=4, capsize=2, color="tab:orange")
        ax_area.set_xscale("log")
    ax_area.set_xlabel("area when present (fraction of image)\nmedian, whiskers: quartiles")
    for ax in (ax_share, ax_area):
        ax.set_yticks(y, names if ax is ax_share else [""] * len(rows), fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.5)  # the first class on top
        ax.grid(axis="x", alpha=0.3)

    sizes = stats["sizes"]
    counts = np.array([s["images"] for s in sizes])
    ax_size.scatter([s["width"] for s in sizes], [s["height"] for s in sizes],
                    s=15 + 120 * counts / counts.max(), alpha=0.6, color="tab:green")
    if len(sizes) <= 8:
        for s in sizes:
            ax_size.annotate(f"{s['images']}", (s["width"], s["height"]), fontsize=8,
                             xytext=(4, 4), textcoords="offset points")
    ax_size.set_xlabel("image width (px)")
    ax_size.set_ylabel("image height (px)")
    ax_size.set_title("image sizes (marker: number of images)", fontsize=9)
    ax_size.grid(alpha=0.3)
    title = f"{stats['dataset']}: {stats['images']} images, {len(rows)} classes"
    return atomic_savefig(fig, path, title)


def write_stats(stats: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """``stats.json`` and ``stats.png`` in ``out_dir`` (created if needed), each written
    atomically; returns their paths."""
    out_dir = Path(out_dir)
    png = plot_stats(stats, out_dir / STATS_PNG)
    js = out_dir / STATS_JSON
    atomic_write_text(js, json.dumps(stats, indent=2) + "\n")
    return js, png
