"""Build the report folder: ``index.html`` with its script and style, ``data.js`` (the table),
``masks/*.js`` (bit-packed masks, one script per image, loaded when the image is opened),
``img/`` (radiographs at display size) and ``full/`` (at original size, loaded on zoom).

The hands' ground truth is rasterised from their JSON; a described data set's
(``ROOT/hbseg-dataset.yaml``) is its mask cache, with its classes, and its colour images
are shown in colour.

Everything is read by ``<script src>`` and ``<img src>``, the two ways a page opened from
the file system may load its neighbours, so the folder needs no server and no network.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from importlib import resources
from pathlib import Path

import numpy as np

from hbseg.atomic import atomic_dir
from hbseg.data.classes import CLASSES, class_palette
from hbseg.data.layout import resolve_split, scan_split
from hbseg.data.spec import DatasetSpec, resolve_spec
from hbseg.infer.config import EvalConfig
from hbseg.infer.csv_io import Submission, read_submission
from hbseg.infer.evaluate import _check_coverage, _described, _select
from hbseg.infer.overlay import short_name
from hbseg.progress import map_with_progress

from .config import ReportConfig
from .render import ImageJob, render_image

__all__ = ["build_report", "folder_bytes", "model_names", "ASSETS"]

ASSETS = ("index.html", "viewer.js", "png.js", "style.css")


def model_names(paths) -> list[str]:
    """Short, distinct labels for the CSVs: the file stem, with its folder when stems clash."""
    paths = [Path(p) for p in paths]
    names = [p.stem for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}/{p.stem}" for p in paths]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} #{seen[n]}")
    return out


def _jobs(cfg: ReportConfig, df, subs: list[Submission], out: Path, channels: int) -> list[ImageJob]:
    jobs = []
    width = max(4, len(str(len(df))))
    for k, r in enumerate(df.itertuples(index=False)):
        one = tuple(Submission(s.path, s.class_names, {r.image_name: s.rles[r.image_name]},
                               {r.image_name: s.lines[r.image_name]}) for s in subs)
        jobs.append(ImageJob(
            key=str(k + 1).zfill(width), image_name=r.image_name, image_path=r.image_path,
            json_path=r.json_path, height=int(r.height), width=int(r.width), subs=one,
            out=str(out), display_size=cfg.display_size, quality=cfg.quality,
            mask_path=getattr(r, "mask_path", ""), channels=channels,
        ))
    return jobs


def _run(jobs: list[ImageJob], workers: int | None, progress: bool) -> list[dict]:
    return map_with_progress(render_image, jobs, workers=workers, desc="report", progress=progress)


def _page_data(cfg: ReportConfig, df, names: list[str], rows: list[dict],
               class_names=CLASSES, spec: DatasetSpec | None = None) -> dict:
    scores = np.stack([r["dice"] for r in rows])  # [images, models, classes]
    per_class = scores.mean(0)  # the same means hbseg-eval prints
    models = [{
        "name": n, "path": str(p), "mean": round(float(per_class[m].mean()), 5),
        "per_class": [round(float(v), 4) for v in per_class[m]],
    } for m, (n, p) in enumerate(zip(names, cfg.preds, strict=True))]
    images = [{
        "key": r["key"], "name": d.image_name, "id": d.id, "fold": int(d.fold),
        "height": int(d.height), "width": int(d.width), "img": r["img"], "full": r["full"],
        "dice": [[round(float(v), 4) for v in m] for m in r["dice"]],
    } for r, d in zip(rows, df.itertuples(index=False), strict=True)]
    return {
        "title": "hbseg report: " + ", ".join(names),
        "data": str(cfg.data),
        "created": time.strftime("%Y-%m-%d %H:%M"),
        "dataset": "hands" if spec is None else spec.name,
        "classes": list(class_names),
        "short": [short_name(c) for c in class_names],
        "palette": [list(c) for c in class_palette(len(class_names))],
        "unit": "bone" if spec is None else "class",  # the page's word for one class
        "models": models,
        "images": images,
    }


def _dice_csv(page: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image_name", "model", "mean", *page["classes"]])
    for im in page["images"]:
        for m, d in zip(page["models"], im["dice"], strict=True):
            w.writerow([im["name"], m["name"], f"{np.mean(d):.4f}", *(f"{v:.4f}" for v in d)])
    return buf.getvalue()


def _copy_assets(out: Path) -> None:
    pkg = resources.files("hbseg.report") / "assets"
    for name in ASSETS:
        with resources.as_file(pkg / name) as src:
            shutil.copyfile(src, out / name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def folder_bytes(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def build_report(cfg: ReportConfig) -> dict:
    """Write the report folder ``cfg.out`` (replaced whole, only on success); returns a summary
    with the folder's size in bytes."""
    t0 = time.perf_counter()
    spec = resolve_spec(cfg.data)
    if spec is None:
        df_all = scan_split(resolve_split(cfg.data, "train"), labelled=True, exclude=())
        class_names = CLASSES
    else:  # the ground truth is the mask cache (built or refreshed if need be)
        df_all, class_names = _described(cfg.data, spec)
    df = _select(EvalConfig(pred=cfg.preds[0], data=cfg.data, ids=cfg.ids, fold=cfg.fold), df_all)
    subs = [read_submission(p, class_names) for p in cfg.preds]
    for sub in subs:
        _check_coverage(sub, df_all, df)
    names = model_names(cfg.preds)
    with atomic_dir(cfg.out) as tmp:
        # mkdtemp makes a private (0700) folder; a report is meant to be shared and served
        tmp.chmod(0o777 & ~_umask())
        for sub in ("img", "full", "masks"):
            (tmp / sub).mkdir()
        channels = 1 if spec is None else spec.channels
        rows = _run(_jobs(cfg, df, subs, tmp, channels), cfg.workers, cfg.progress)
        page = _page_data(cfg, df, names, rows, class_names, spec)
        # a script, not JSON: see the module docstring
        (tmp / "data.js").write_text("window.HBSEG_DATA = " + json.dumps(page, separators=(",", ":"))
                                     + ";\n", encoding="ascii")
        (tmp / "dice.csv").write_text(_dice_csv(page))
        (tmp / "report.config.json").write_text(json.dumps(
            {"kind": "ReportConfig", **cfg.to_dict()}, indent=2) + "\n")
        _copy_assets(tmp)
        size = folder_bytes(tmp)
    return {
        "out": str(cfg.out), "images": len(rows), "models": names,
        "mean_dice": {m["name"]: m["mean"] for m in page["models"]},
        "bytes": size, "seconds": time.perf_counter() - t0,
    }
