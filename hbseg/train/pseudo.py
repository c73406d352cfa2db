"""Pseudo-labels: a submission CSV's masks as training labels for the images it covers.

``hbseg-train --pseudo submission.csv --pseudo-data ROOT/test --pseudo-weight 0.5``
decodes the CSV once into the mask cache's format (bit-packed RGBA PNGs) under

    <cache>/../hbseg-pseudo/<csv stem>-<hash of both paths>/{index.csv, meta.json, masks/}

and reuses it while the CSV is unchanged. The images join the training rows (never the
validation ones) as extra index rows with ``image_path``, ``mask_path`` and ``weight``.
Its ``index.csv`` holds both paths relative to that folder, so the cache serves a run
started from any working folder (and moves with the data it sits beside).

The hands' images are ``ROOT/test/DCM/ID*/*.png``. A described data set (``DatasetSpec``)
reads the CSV with its class names, and its unlabelled images are a folder of
``<name>.png`` or ``<group>/<name>.png``, or another described root (its ``images``
folder; its description must have the same classes and channels; its labels are unused).

Why weights are repetition: every loader yields ``(image, mask)`` batches and nothing per
sample, so the loss cannot be weighted per image. A row of weight ``w`` is therefore read
``floor(w)`` times per epoch, plus once more for a seeded fraction ``w - floor(w)`` of such
rows, drawn once per run (the loaders are built once; the same ``--seed`` draws the same
rows, so ``--resume`` continues exactly). ``--pseudo-weight 0.5`` thus trains on a fixed
half of the pseudo-labelled images; ``2`` shows each of them twice per epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from hbseg.errors import ConfigError, DataError

__all__ = ["PSEUDO_VERSION", "pseudo_cache_dir", "build_pseudo_cache", "expand_by_weight",
           "add_pseudo_labels"]

PSEUDO_VERSION = 2  # 2: image paths relative to the cache folder (1: to the working folder)


def pseudo_cache_dir(cache_dir: str | Path, csv_path: str | Path, data: str | Path) -> Path:
    key = f"{Path(csv_path).resolve()}\n{Path(data).resolve()}".encode()
    digest = hashlib.sha1(key).hexdigest()[:8]
    return Path(cache_dir).parent / "hbseg-pseudo" / f"{Path(csv_path).stem}-{digest}"


def _decode_one(job) -> None:
    from hbseg.data.masks import pack_masks, write_packed_png

    sub, name, height, width, mask_path = job
    packed = pack_masks(sub.masks(name, height, width))
    Path(mask_path).parent.mkdir(parents=True, exist_ok=True)
    write_packed_png(mask_path, packed)


def _meta(csv_path: Path, data: Path, spec=None) -> dict:
    st = os.stat(csv_path)
    meta = {"version": PSEUDO_VERSION, "csv": str(csv_path.resolve()),
            "csv_stamp": f"{st.st_size}:{st.st_mtime_ns}", "data": str(data.resolve())}
    if spec is not None:  # another class list decodes the same CSV differently
        meta["classes"] = list(spec.classes)
    return meta


def _images_folder(data: str | Path, spec) -> Path:
    """Where a described data set's unlabelled images are: ``data``, or the ``images``
    folder of the description found in it (which must match the training data's)."""
    from hbseg.data.spec import find_spec, load_spec

    data = Path(data)
    found = find_spec(data) if data.is_dir() else None
    if found is None:
        return data
    theirs = load_spec(found)
    if theirs.classes != spec.classes or theirs.channels != spec.channels:
        raise ConfigError(f"--pseudo-data describes {theirs.num_classes} classes of "
                          f"{theirs.channels}-channel images ({', '.join(theirs.classes[:6])}); the "
                          f"training data {spec.name!r} has {spec.num_classes} of {spec.channels} "
                          f"({', '.join(spec.classes[:6])})", found)
    return data / theirs.images


def _load(out: Path) -> pd.DataFrame:
    df = pd.read_csv(out / "index.csv", keep_default_na=False, encoding_errors="surrogateescape")
    here = out.resolve()
    for col in ("image_path", "mask_path"):
        df[col] = [os.path.normpath(here / p) for p in df[col]]
    return df


def build_pseudo_cache(csv_path: str | Path, data: str | Path, out: str | Path,
                       workers: int = 1, progress: bool = True, spec=None) -> pd.DataFrame:
    """Decode ``csv_path``'s masks for the images under ``data`` into ``out``; returns
    the index (absolute ``image_path`` and ``mask_path``). Nothing is written when ``out``
    already holds this CSV's masks. ``spec``: the training data's ``DatasetSpec`` (its
    class names and image layout); ``None``, the hands."""
    from hbseg.atomic import atomic_dir
    from hbseg.data.layout import resolve_split, scan_split
    from hbseg.data.submission import Submission, read_submission

    csv_path, out = Path(csv_path), Path(out)
    folder = resolve_split(data, "test") if spec is None else _images_folder(data, spec)
    meta = _meta(csv_path, folder, spec) if csv_path.is_file() else None
    try:
        if meta is not None and json.loads((out / "meta.json").read_text()) == meta:
            return _load(out)
    except (OSError, ValueError):
        pass
    if spec is None:
        sub = read_submission(csv_path)
        images = scan_split(folder, labelled=False, exclude=())
    else:
        sub = read_submission(csv_path, spec.classes)
        from hbseg.data.formats import scan_images

        images = scan_images(folder, "--pseudo-data: images folder").drop(columns="rel")
    known = set(images["image_name"])
    for name in sub.images:
        if name not in known:
            where = f"{folder} (no DCM/ID*/{name})" if spec is None else str(folder)
            raise DataError(f"line {sub.line_of(name, 0)}: image {name!r} is not in {where}",
                            csv_path)
    df = images[images["image_name"].isin(set(sub.images))].reset_index(drop=True)
    if df.empty:
        raise DataError("the CSV labels no image", csv_path)
    df["json_path"] = ""
    df["fold"] = -1
    df["mask_path"] = [f"masks/{i}/{Path(n).stem}.png" for i, n in zip(df["id"], df["image_name"], strict=True)]
    here = out.resolve()  # a lexical path from here: ".." cancels no symbolic link
    df["image_path"] = [os.path.relpath(os.path.abspath(p), here) for p in df["image_path"]]
    with atomic_dir(out) as tmp:
        jobs = [(Submission(csv_path, sub.class_names, {r.image_name: sub.rles[r.image_name]},
                            {r.image_name: sub.lines[r.image_name]}),
                 r.image_name, int(r.height), int(r.width), str(tmp / r.mask_path))
                for r in df.itertuples()]
        _run(jobs, workers, progress)
        df.to_csv(tmp / "index.csv", index=False, errors="surrogateescape")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return _load(out)


def _run(jobs: list, workers: int, progress: bool) -> None:
    from hbseg.progress import map_with_progress

    map_with_progress(_decode_one, jobs, workers=workers, desc="decoding pseudo-labels",
                      progress=progress, chunksize=2)


def expand_by_weight(index: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Repeat each row by its ``weight``: ``floor(w)`` times, plus one for a seeded share
    ``w - floor(w)`` of the rows (see the module's docstring)."""
    w = index["weight"].to_numpy(np.float64)
    whole = np.floor(w).astype(np.int64)
    frac = w - whole
    extra = np.zeros(len(w), dtype=np.int64)
    part = np.flatnonzero(frac > 0)
    rng = np.random.default_rng(seed)
    for f in np.unique(frac[part]):  # an exact share of each group of equal weight
        rows = part[frac[part] == f]
        extra[rng.choice(rows, size=int(round(f * len(rows))), replace=False)] = 1
    return index.loc[np.repeat(np.arange(len(index)), whole + extra)].reset_index(drop=True)


def add_pseudo_labels(cfg, train_index: pd.DataFrame, main: bool = True,
                      labelled: pd.DataFrame | None = None) -> pd.DataFrame:
    """``train_index`` plus ``cfg.pseudo``'s images, repeated by ``cfg.pseudo_weight``.
    ``labelled``: every labelled row (validation included, default ``train_index``); a
    pseudo image among them is an error, as it would train on its own label or leak into
    validation.

    Rank 0 decodes the CSV (the other ranks wait and get its error, if any)."""
    from . import ddp
    from .run_data import dataset_spec, run_cache_dir

    spec = dataset_spec(cfg)
    out = pseudo_cache_dir(run_cache_dir(cfg, spec), cfg.pseudo, cfg.pseudo_data)
    err = None
    if main:
        try:
            print(f"pseudo-labels from {cfg.pseudo} in {out}", file=sys.stderr)
            build_pseudo_cache(cfg.pseudo, cfg.pseudo_data, out, max(1, cfg.workers_for()),
                               cfg.progress, spec=spec)
        except Exception as e:  # noqa: BLE001 - forwarded to every rank
            err = e
    err = ddp.broadcast_object(err)
    if err is not None:
        raise err
    pseudo = _load(out)
    labelled = train_index if labelled is None else labelled
    clash = sorted(set(pseudo["image_name"]) & set(labelled["image_name"]))
    if clash:
        where = "ROOT/test" if spec is None else "a folder of them"
        val = set(clash) - set(train_index["image_name"])
        what = ("validation images: their labels would leak into training" if val
                else "labelled training images")
        raise ConfigError(f"--pseudo-data holds {what} ({sorted(val or clash)[0]}, "
                          f"{len(clash)} labelled in all); point it at unlabelled images ({where})")
    from .run_data import check_against_index

    check_against_index(cfg, pseudo)  # a --crop must fit these images too
    real = train_index.assign(weight=1.0, pseudo=False)
    pseudo = pseudo.assign(weight=float(cfg.pseudo_weight), pseudo=True)
    both = pd.concat([real, pseudo[[c for c in real.columns if c in pseudo.columns]]],
                     ignore_index=True)
    expanded = expand_by_weight(both, cfg.seed)
    if not expanded["pseudo"].any():
        raise ConfigError(f"--pseudo-weight {cfg.pseudo_weight} keeps none of the "
                          f"{len(pseudo)} pseudo-labelled images; use a larger weight")
    return expanded
