"""Out-of-fold (OOF) probabilities: each fold's model on its own validation images.

    OOF/oof.csv    image_name, id, fold, height, width, file, mask_path (one row per image)
    OOF/oof.json   class names, the quantisation, the checkpoint of each fold, the options
    OOF/ID/<stem>.npy   [C, H, W] uint8: round(p * 255), at the image's original size

uint8 rather than float16: half the disk (the hands' 29 classes: 29 MB for a 2048² image
instead of 58), and the tuner bins probabilities into 256 levels anyway. ``C`` is the
class count of the data the folds were trained on (the hands' 29, or a description's).
A threshold ``t`` of hbseg-infer (``p > t``) is ``q > 255 t`` here, exact to half a level
(0.002).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hbseg.atomic import atomic_path, atomic_write_text, check_writable_dir
from hbseg.errors import ConfigError, DataError
from hbseg.progress import bar_disabled

__all__ = ["OofConfig", "OofSet", "predict_oof", "load_oof", "quantize", "OOF_INDEX", "OOF_META",
           "LEVELS"]

OOF_INDEX = "oof.csv"
OOF_META = "oof.json"
LEVELS = 255  # q = round(p * LEVELS)
_NPY_HEADER = 128


@dataclass(frozen=True)
class OofConfig:
    """``hbseg-kfold oof``: the same inference options as ``hbseg-infer``."""

    kfold_dir: str
    out: str
    folds: tuple[int, ...] | None = None  # default: every fold folder with the checkpoint
    checkpoint: str = "best.pt"
    device: str = "auto"
    batch_size: int = 4
    loader: str = "auto"
    window: int | None = None
    stride: int | None = None
    sigma: float = 0.125
    tta_hflip: bool = False
    scales: tuple[float, ...] = (1.0,)
    amp: bool | None = None
    threads: int = 2
    overwrite: bool = False
    progress: bool = True

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def quantize(probs) -> np.ndarray:
    """Probabilities (torch or numpy, any device) → uint8 ``round(p * 255)`` on the CPU."""
    import torch

    t = torch.as_tensor(probs)
    return t.float().mul(LEVELS).round_().clamp_(0, LEVELS).to(torch.uint8).cpu().numpy()


def _kfold_data(base):
    """The mask cache the folds were trained on and the data set's description (``None``:
    the hands), as ``prepare_index`` chooses them."""
    from hbseg.data.spec import check_cache_spec
    from hbseg.train.run_data import check_run_cache_root, dataset_spec, run_cache_dir

    spec = dataset_spec(base)
    cache_dir = run_cache_dir(base, spec)
    check_cache_spec(cache_dir, spec)
    check_run_cache_root(base, cache_dir, spec)
    return cache_dir, spec


def _check_checkpoints(ckpts: dict[int, Path], classes: tuple[str, ...], channels: int) -> None:
    """Every fold's model must predict the data set's classes from its channels; checked on
    the cards before any fold runs, so a stray checkpoint stops nothing half-way."""
    from hbseg.data.spec import check_same_classes
    from hbseg.errors import CheckpointError
    from hbseg.models import ModelCard, read_checkpoint

    for ck in ckpts.values():
        card = ModelCard.from_dict(read_checkpoint(ck)["card"])
        check_same_classes(card.class_names, classes, ck)
        if card.in_channels != channels:
            raise CheckpointError(f"the checkpoint takes {card.in_channels}-channel images but "
                                  f"the k-fold run's data has {channels}-channel images", ck)


def _oof_rows(cfg: OofConfig) -> tuple[pd.DataFrame, dict[int, Path], tuple[str, ...]]:
    """The validation rows of every fold to predict, each fold's checkpoint, and the class
    names of the data the folds were trained on."""
    from hbseg.data import load_cache_index
    from hbseg.data.classes import CLASSES
    from hbseg.data.split import apply_split
    from hbseg.train.kfold import list_fold_dirs, load_kfold_config

    base = load_kfold_config(cfg.kfold_dir)
    cache_dir, spec = _kfold_data(base)
    # the hands' 29 grey classes, or the description's
    classes, channels = (tuple(CLASSES), 1) if spec is None else (spec.classes, spec.channels)
    index = load_cache_index(cache_dir)
    # the folds the models were trained on
    index = apply_split(index, base.split, base.data, described=spec is not None)
    runs = list_fold_dirs(cfg.kfold_dir)
    if cfg.folds is None:
        folds = [k for k, run in runs.items() if (run / cfg.checkpoint).is_file()]
        if not folds:
            raise DataError(f"no fold-K/{cfg.checkpoint} here; train with hbseg-kfold train first",
                            cfg.kfold_dir)
    else:
        folds = sorted(set(cfg.folds))
    ckpts = {}
    for k in folds:
        ck = Path(cfg.kfold_dir) / f"fold-{k}" / cfg.checkpoint
        if not ck.is_file():
            raise DataError(f"fold {k} has no {cfg.checkpoint}", ck.parent)
        ckpts[k] = ck
    _check_checkpoints(ckpts, classes, channels)
    rows = index[index["fold"].isin(folds)].copy()
    if rows.empty:
        raise DataError(f"folds {folds} hold no images in the mask cache", cfg.kfold_dir)
    rows["file"] = [f"{i}/{Path(n).stem}.npy" for i, n in zip(rows["id"], rows["image_name"], strict=True)]
    return rows.reset_index(drop=True), ckpts, classes


def _check_kept(out: Path, classes: tuple[str, ...], overwrite: bool) -> None:
    """Files already in ``out`` are kept, so they must be of the same class list."""
    if overwrite or not (out / OOF_META).is_file():
        return
    try:
        had = tuple(json.loads((out / OOF_META).read_text())["class_names"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # unreadable: rewritten at the end, and each .npy's shape is checked on load
    if had != classes:
        raise DataError(f"holds OOF probabilities of another class list ({len(had)} classes; "
                        f"this k-fold run has {len(classes)}); pass --overwrite or another --out",
                        out)


def _fingerprints(rows: pd.DataFrame) -> dict[str, str]:
    """Each truth cache's labels fingerprint now (see ``check_truth``)."""
    from hbseg.data.cache import META_NAME

    out = {}
    for cache in _truth_caches(rows):
        try:
            out[str(cache)] = json.loads((cache / META_NAME).read_text())["labels_fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return out


def estimate_bytes(rows: pd.DataFrame, num_classes: int) -> int:
    return int((rows["height"].astype(np.int64) * rows["width"] * num_classes + _NPY_HEADER).sum())


def predict_oof(cfg: OofConfig, echo: Callable[[str], None] = print) -> dict:
    """Predict every validation image of every fold with that fold's checkpoint; write
    ``cfg.out``. Images already there are kept unless ``cfg.overwrite``. One process at a
    time writes ``cfg.out`` (``hbseg.locks``): a second is refused, naming the first."""
    from hbseg.locks import folder_lock

    with folder_lock(cfg.out, "OOF folder"):
        return _predict_oof(cfg, echo)


def _predict_oof(cfg: OofConfig, echo: Callable[[str], None]) -> dict:
    import torch
    from tqdm.auto import tqdm

    from hbseg.data.spec import check_same_classes
    from hbseg.infer.predictor import Predictor
    from hbseg.infer.preprocess import open_loader

    rows, ckpts, classes = _oof_rows(cfg)
    out = check_writable_dir(cfg.out)
    _check_kept(out, classes, cfg.overwrite)
    need = estimate_bytes(rows, len(classes))
    todo = rows if cfg.overwrite else rows[[not (out / f).is_file() for f in rows["file"]]]
    need_now = estimate_bytes(todo, len(classes)) if len(todo) else 0
    free = shutil.disk_usage(out).free
    echo(f"OOF: {len(rows)} images in folds {sorted(ckpts)}: {need / 1e6:.1f} MB as uint8 "
         f"({need_now / 1e6:.1f} MB still to write; {free / 1e9:.1f} GB free in {out})")
    if need_now > free:
        raise DataError(f"needs {need_now / 1e9:.2f} GB but only {free / 1e9:.2f} GB is free", out)
    bar = tqdm(total=len(todo), desc="OOF", unit="img", disable=bar_disabled(cfg.progress))
    start = time.perf_counter()
    described = {}
    for k, ck in ckpts.items():
        fold_rows = todo[todo["fold"] == k]
        predictor = Predictor(
            [str(ck)], device=cfg.device, window=cfg.window, stride=cfg.stride, sigma=cfg.sigma,
            tta_hflip=cfg.tta_hflip, scales=cfg.scales, batch_size=cfg.batch_size, amp=cfg.amp)
        check_same_classes(predictor.class_names, classes, ck)  # the card, as checked above
        described[str(k)] = {"checkpoint": str(ck), **predictor.describe()}
        if fold_rows.empty:
            continue
        by_name = {r.image_name: r for r in fold_rows.itertuples(index=False)}
        if len(by_name) != len(fold_rows):
            raise DataError(f"fold {k} holds two images of the same name", cfg.kfold_dir)
        loader = open_loader(list(fold_rows["image_path"]), predictor.specs[0],
                             batch_size=cfg.batch_size, device=predictor.device,
                             size=predictor.input_size, backend=cfg.loader, threads=cfg.threads)
        for images, hws, names in loader:
            for image, hw, name in zip(images, hws, names, strict=True):
                row = by_name[name]
                if tuple(hw) != (row.height, row.width):
                    raise DataError(f"decoded as {hw[1]}x{hw[0]}, but the cache says "
                                    f"{row.width}x{row.height}", row.image_path)
                q = quantize(predictor.predict_probs(image, hw, row.image_path))
                dest = out / row.file
                dest.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(dest) as tmp, open(tmp, "wb") as f:
                    np.save(f, q)
                bar.update()
        del predictor
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    bar.close()
    cols = ["image_name", "id", "fold", "height", "width", "file", "mask_path"]
    with atomic_path(out / OOF_INDEX) as tmp:
        rows[cols].to_csv(tmp, index=False)
    meta = {"class_names": list(classes), "dtype": "uint8", "levels": LEVELS,
            "kfold_dir": str(cfg.kfold_dir), "options": cfg.to_dict(), "folds": described,
            "labels_fingerprint": _fingerprints(rows)}
    atomic_write_text(out / OOF_META, json.dumps(meta, indent=2) + "\n")
    return {"out": str(out), "images": len(rows), "predicted": len(todo),
            "skipped": len(rows) - len(todo), "folds": sorted(ckpts), "mb": need / 1e6,
            "seconds": round(time.perf_counter() - start, 2)}


@dataclass
class OofSet:
    """One model's OOF folder: ``index`` (a row per image) and the probability files."""

    folder: Path
    index: pd.DataFrame
    class_names: tuple[str, ...]

    def probs(self, i: int) -> np.ndarray:
        """[C, H, W] uint8 of row ``i`` (memory-mapped)."""
        r = self.index.iloc[i]
        path = self.folder / r["file"]
        try:
            arr = np.load(path, mmap_mode="r")
        except FileNotFoundError:
            raise DataError(f"listed in {OOF_INDEX} but missing", path) from None
        except (OSError, ValueError) as e:
            raise DataError(f"unreadable OOF probabilities ({e})", path) from None
        want = (len(self.class_names), int(r["height"]), int(r["width"]))
        if arr.dtype != np.uint8 or arr.shape != want:
            raise DataError(f"holds {arr.dtype} {arr.shape}, expected uint8 {want}", path)
        return arr

    def truth(self, i: int) -> np.ndarray:
        """[C, H, W] uint8 0/1 ground truth of row ``i``, from the mask cache."""
        from hbseg.data import read_packed_png, unpack_masks

        r = self.index.iloc[i]
        try:
            packed = read_packed_png(r["mask_path"])
        except FileNotFoundError:
            raise DataError("mask cache file is missing; rebuild with hbseg-data cache",
                            r["mask_path"]) from None
        gt = unpack_masks(packed, len(self.class_names))
        if gt.shape[1:] != (int(r["height"]), int(r["width"])):
            raise DataError(f"mask is {gt.shape[2]}x{gt.shape[1]}, the OOF index says "
                            f"{r['width']}x{r['height']}", r["mask_path"])
        return gt


def load_oof(folder: str | Path) -> OofSet:
    folder = Path(folder)
    try:
        meta = json.loads((folder / OOF_META).read_text())
        index = pd.read_csv(folder / OOF_INDEX, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"no {OOF_META}/{OOF_INDEX}; is this an hbseg-kfold oof folder?", folder) from None
    except ValueError as e:
        raise DataError(f"unreadable OOF index ({e})", folder) from None
    missing = {"image_name", "fold", "height", "width", "file", "mask_path"} - set(index.columns)
    if missing:
        raise DataError(f"{OOF_INDEX} lacks columns {sorted(missing)}", folder)
    if meta.get("levels") != LEVELS or meta.get("dtype") != "uint8":
        raise ConfigError(f"{OOF_META}: expected uint8 probabilities with {LEVELS} levels", folder)
    if index["image_name"].duplicated().any():
        dup = index["image_name"][index["image_name"].duplicated()].iloc[0]
        raise DataError(f"image {dup!r} appears twice in {OOF_INDEX}", folder)
    check_truth(index, meta, folder)
    return OofSet(folder, index.reset_index(drop=True), tuple(meta["class_names"]))


def _truth_caches(index: pd.DataFrame) -> list[Path]:
    """The mask caches the ground truth comes from (``CACHE/masks/ID/<stem>.png``, beside
    ``CACHE/meta.json``); masks kept elsewhere (written by hand) have none."""
    from hbseg.data.cache import META_NAME

    dirs = {Path(m).parent for m in index["mask_path"] if m}
    return sorted({d.parent.parent for d in dirs
                   if d.parent.name == "masks" and (d.parent.parent / META_NAME).is_file()})


def check_truth(index: pd.DataFrame, meta: dict, folder: Path,
                echo: Callable[[str], None] | None = None) -> None:
    """The OOF index points at masks in the mask cache, which are the truth tuning scores
    against. A label changed since the cache was drawn (its fingerprint, the size and
    mtime of every label file, no longer matches) would be scored as the old label: refused,
    naming the file that changed. A cache redrawn since the OOF run is used as it is (the
    probabilities do not depend on the labels), with a line that says so."""
    from hbseg.data.cache import META_NAME, sources_changed

    echo = echo or (lambda m: print(m, file=sys.stderr))
    for cache in _truth_caches(index):
        reason = sources_changed(cache)
        if reason is not None:
            raise DataError(f"its ground truth, the mask cache {cache}, is out of date ({reason}); "
                            "update the cache with `hbseg-data cache ROOT` (the OOF "
                            "probabilities stay valid), then tune again", folder)
        try:
            now = json.loads((cache / META_NAME).read_text()).get("labels_fingerprint")
        except (OSError, ValueError, AttributeError):
            now = None
        then = (meta.get("labels_fingerprint") or {}).get(str(cache))
        if now and then and now != then:
            echo(f"note: the labels changed after {folder} was predicted (the mask cache {cache} "
                 "was redrawn since); tuning scores against the labels as they are now")
