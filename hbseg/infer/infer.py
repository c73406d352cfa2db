"""``run_inference``: a folder of radiographs → a submission CSV (and probabilities, pictures)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from hbseg.atomic import atomic_path, atomic_write_text, check_writable_dir
from hbseg.data.images import png_header
from hbseg.data.layout import IMAGE_DIR, JSON_DIR, resolve_split, scan_split
from hbseg.errors import ConfigError, DataError
from hbseg.progress import bar_disabled

from .config import InferConfig, config_path, save_config
from .csv_io import SubmissionWriter
from .predictor import Predictor
from .preprocess import open_loader
from .rle import format_runs, mask_runs

__all__ = ["list_images", "run_inference", "save_probs", "PROBS_INDEX"]

PROBS_INDEX = "index.json"


def list_images(data: str | Path) -> pd.DataFrame:
    """Every PNG to predict: columns id, image_name, image_path, json_path, height, width.

    ``data`` is a data root (its ``test/``), a split folder (``DCM/ID*/*.png``), or a plain
    folder of PNGs. Nothing is excluded. ``json_path`` is set where an annotation exists
    (``outputs_json/ID*/<stem>.json``), so pictures can show the ground truth.
    """
    data = Path(data)
    if not data.is_dir():
        raise DataError("data folder not found", data)
    from hbseg.data.spec import find_spec

    if find_spec(data) is not None:
        return _described_images(data)
    flat = sorted(p for p in data.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not (data / IMAGE_DIR).is_dir() and not (data / "test" / IMAGE_DIR).is_dir() and flat:
        rows = []
        for p in flat:
            info = png_header(p)
            rows.append({"id": "", "image_name": p.name, "image_path": str(p), "json_path": "",
                         "height": info["height"], "width": info["width"]})
        return pd.DataFrame(rows)
    split = resolve_split(data, "test")
    df = scan_split(split, labelled=False, exclude=())
    json_root = split / JSON_DIR
    jsons = [json_root / i / f"{Path(n).stem}.json" for i, n in zip(df["id"], df["image_name"], strict=True)]
    df["json_path"] = [str(j) if j.is_file() else "" for j in jsons]
    return df.drop(columns=["fold"])


def _described_images(root: Path) -> pd.DataFrame:
    """Every image of a described data set (``ROOT/hbseg-dataset.yaml``); ``mask_path`` is
    its ground truth in the mask cache where one is built, for the pictures."""
    from hbseg.data.cache import load_cache_index
    from hbseg.data.formats import scan_images
    from hbseg.data.spec import find_spec, load_spec

    spec = load_spec(find_spec(root))
    df = scan_images(root / spec.images, "images folder (the data set description's 'images')")
    masks: dict[str, str] = {}
    if (root / "hbseg-cache" / "index.csv").is_file():
        idx = load_cache_index(root / "hbseg-cache")
        masks = dict(zip(idx["image_name"], idx["mask_path"], strict=True))
    df.insert(3, "json_path", "")
    df["mask_path"] = [masks.get(n, "") for n in df["image_name"]]
    return df.drop(columns="rel")


def check_dataset(data: str | Path, class_names, channels: int, checkpoint) -> None:
    """A model trained on another class list (or channel count) than the described data set
    under ``data`` is an error naming the checkpoint."""
    from hbseg.data.spec import check_same_classes, find_spec, load_spec
    from hbseg.errors import CheckpointError

    found = find_spec(data) if Path(data).is_dir() else None
    if found is None:
        return
    spec = load_spec(found)
    check_same_classes(class_names, spec.classes, checkpoint)
    if channels != spec.channels:
        raise CheckpointError(f"the checkpoint takes {channels}-channel images but the data set "
                              f"{spec.name!r} has {spec.channels}-channel images", checkpoint)


def save_probs(folder: Path, name: str, probs: torch.Tensor) -> str:
    """Write [C, H, W] probabilities as float16 ``<stem>.npy`` (atomically); returns the file name."""
    fname = f"{Path(name).stem}.npy"
    arr = probs.to(torch.float16).cpu().numpy()
    with atomic_path(folder / fname) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)
    return fname


def _shrink_masks(masks: torch.Tensor, max_side: int) -> np.ndarray:
    """[C, H, W] bool on any device → uint8 numpy, area-shrunk to ``max_side`` first."""
    h, w = masks.shape[-2:]
    f = min(1.0, max_side / max(h, w))
    if f < 1.0:
        size = (max(1, round(h * f)), max(1, round(w * f)))
        masks = F.interpolate(masks[None].float(), size=size, mode="area")[0] >= 0.5
    return masks.to(torch.uint8).cpu().numpy()


def _overlay(cfg: InferConfig, row, masks: torch.Tensor, folder: Path,
             class_names=None, channels: int = 1) -> float | None:
    from hbseg.data.classes import CLASSES

    class_names = tuple(class_names or CLASSES)
    from hbseg.data import rasterize, read_polygons
    from hbseg.data.formats.images import read_image
    from hbseg.data.masks import read_packed_png, unpack_masks

    from .evaluate import dice_scores
    from .overlay import write_overlay

    image = read_image(row.image_path, channels)
    h, w = image.shape[:2]
    gt, dice = None, None
    if getattr(row, "mask_path", ""):
        gt = unpack_masks(read_packed_png(row.mask_path), len(class_names))
    elif row.json_path:
        gt = rasterize(read_polygons(row.json_path, w, h), h, w)
    if gt is not None:
        dice = float(np.mean(dice_scores(masks.cpu().numpy(), gt)))
    pred = _shrink_masks(masks, cfg.overlay_max_side)
    write_overlay(folder / f"{Path(row.image_name).stem}.png", image, pred, gt,
                  title=row.image_name, dice=dice, max_side=cfg.overlay_max_side,
                  class_names=class_names)
    return dice


def _check_window(window: int | None, df) -> None:
    """A window larger than an image would predict mostly padding (and take far longer)."""
    if window is None or df.empty:
        return
    longest = df[["height", "width"]].max(axis=1)
    i = int(longest.to_numpy().argmin())
    if window > int(longest.iloc[i]):
        row = df.iloc[i]
        raise ConfigError(f"--window {window} is larger than image {row['image_name']} "
                          f"({row['width']}x{row['height']}); use --window {int(longest.iloc[i])} or "
                          "less, or leave --window out to predict whole images")


def run_inference(cfg: InferConfig) -> dict:
    """Predict every image under ``cfg.data``; write ``cfg.out`` (and probs, overlays).

    Returns a summary: images, seconds, images_per_s, device, loader, outputs.
    """
    from tqdm.auto import tqdm

    from .postprocess import load_min_sizes, load_thresholds

    out = Path(cfg.out)
    if out.is_dir():
        raise DataError("--out is a folder; give a CSV file name", out)
    check_writable_dir(out.parent)
    df = list_images(cfg.data)
    _check_window(cfg.window, df)
    predictor = Predictor(
        list(cfg.checkpoints), weights=cfg.weights, device=cfg.device, window=cfg.window,
        stride=cfg.stride, sigma=cfg.sigma, tta_hflip=cfg.tta_hflip, scales=cfg.scales,
        thresholds=float(cfg.threshold), min_size=cfg.min_size, batch_size=cfg.batch_size,
        amp=cfg.amp,
    )
    names = predictor.class_names  # the checkpoints' classes: the hands' 29 or a data set's
    check_dataset(cfg.data, names, predictor.specs[0].channels, cfg.checkpoints[0])
    if cfg.thresholds_file:
        from .postprocess import resolve_thresholds

        per_class = load_thresholds(cfg.thresholds_file, names)
        predictor.thresholds = resolve_thresholds(
            {c: per_class.get(c, cfg.threshold) for c in names}, names)
    if cfg.class_weights_file:
        from .class_weights import load_class_weights

        predictor.set_class_weights(load_class_weights(
            cfg.class_weights_file, names, len(predictor.members)), cfg.class_weights_file)
    if cfg.min_sizes_file:
        from .postprocess import resolve_min_sizes

        per_class_min = load_min_sizes(cfg.min_sizes_file, names)
        predictor.min_sizes = resolve_min_sizes(
            {c: per_class_min.get(c, cfg.min_size) for c in names}, names)
    probs_dir = check_writable_dir(cfg.save_probs) if cfg.save_probs else None
    overlay_dir = check_writable_dir(cfg.overlays) if cfg.overlays else None
    paths = list(df["image_path"])
    loaders = [open_loader(paths, spec, batch_size=cfg.batch_size, device=predictor.device,
                           size=predictor.input_size, backend=cfg.loader, threads=cfg.threads)
               for spec in predictor.specs]
    rows = {r.image_name: r for r in df.itertuples(index=False)}
    probs_index: dict[str, dict] = {}
    dices: list[float] = []
    sync = torch.cuda.synchronize if predictor.device.type == "cuda" else (lambda: None)
    bar = tqdm(total=len(df), desc="predicting", unit="img", disable=bar_disabled(cfg.progress))
    start = time.perf_counter()
    # Formatting RLE text and writing rows runs in a thread, one image behind the device.
    with SubmissionWriter(out, predictor.class_names) as writer, ThreadPoolExecutor(1) as rows_pool:
        pending = None

        def write_rows(name: str, runs: list[np.ndarray]) -> None:
            writer.write(name, [format_runs(r) for r in runs])

        for batches in zip(*loaders, strict=True):
            names = batches[0][2]
            for b in batches[1:]:
                if b[2] != names:
                    raise RuntimeError(f"loaders went out of step: {b[2]} != {names}")
            for i, name in enumerate(names):
                row = rows[name]
                inputs = {spec: b[0][i] for spec, b in zip(predictor.specs, batches, strict=True)}
                orig_hw = batches[0][1][i]
                if tuple(orig_hw) != (row.height, row.width):
                    raise DataError(f"decoded as {orig_hw[1]}x{orig_hw[0]}, but its header says "
                                    f"{row.width}x{row.height}", row.image_path)
                probs = predictor.predict_probs(inputs, orig_hw, row.image_path)
                masks = predictor.postprocess(probs)
                runs = mask_runs(masks)
                if pending is not None:
                    pending.result()
                pending = rows_pool.submit(write_rows, name, runs)
                if probs_dir is not None:
                    fname = save_probs(probs_dir, name, probs)
                    probs_index[name] = {"file": fname, "height": orig_hw[0], "width": orig_hw[1]}
                if overlay_dir is not None:
                    d = _overlay(cfg, row, masks, overlay_dir, predictor.class_names,
                                 predictor.specs[0].channels)
                    if d is not None:
                        dices.append(d)
                bar.update()
        if pending is not None:
            pending.result()
        sync()
        seconds = time.perf_counter() - start
    bar.close()
    if writer.images != len(df):
        raise RuntimeError(f"the loader gave {writer.images} of {len(df)} images")
    summary = {
        "images": writer.images,
        "seconds": round(seconds, 3),
        "images_per_s": round(writer.images / seconds, 3) if seconds > 0 else None,
        "device": str(predictor.device),
        "loader": loaders[0].backend,
        "out": str(out),
        "save_probs": str(probs_dir) if probs_dir else None,
        "overlays": str(overlay_dir) if overlay_dir else None,
        "overlay_mean_dice": round(float(np.mean(dices)), 4) if dices else None,
    }
    if probs_dir is not None:
        index = {"class_names": list(predictor.class_names), "images": probs_index}
        atomic_write_text(probs_dir / PROBS_INDEX, json.dumps(index, indent=1) + "\n")
    save_config(cfg, config_path(out), predictor=predictor.describe(), summary=summary)
    return summary
