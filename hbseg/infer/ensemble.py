"""``hbseg-ensemble``: combine finished predictions.

* Hard vote of submission CSVs: a pixel is kept for a class when at least ``min_votes``
  CSVs have it. RLEs carry no image size, so sizes come from a data folder's PNG headers
  or one ``H x W`` for every image (2048 x 2048, the competition's). The classes are the
  CSVs' own (all must have the same), or the data set description's when ``data`` has one.
* Soft vote of ``--save-probs`` folders: the weighted mean of the float16 probabilities,
  then thresholds and small-object removal, exactly as ``hbseg-infer`` does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from hbseg.data.classes import CLASSES
from hbseg.errors import ConfigError, DataError
from hbseg.progress import bar_disabled

from .class_weights import class_weight_table, load_class_weights
from .config import EnsembleConfig, config_path, save_config
from .csv_io import Submission, SubmissionWriter, read_submission, submission_classes
from .postprocess import (
    load_min_sizes,
    load_thresholds,
    postprocess,
    remove_small_objects,
    resolve_min_sizes,
    resolve_thresholds,
)
from .rle import encode_masks

__all__ = ["hard_vote", "soft_vote", "run_ensemble", "read_probs_index", "load_class_weights",
           "vote_classes"]


def _min_sizes(cfg: EnsembleConfig, class_names) -> tuple[int, ...]:
    if not cfg.min_sizes_file:
        return resolve_min_sizes(cfg.min_size, class_names)
    per_class = load_min_sizes(cfg.min_sizes_file, class_names)
    return resolve_min_sizes({c: per_class.get(c, cfg.min_size) for c in class_names}, class_names)


def _same_images(names: list[str], others: dict[Path, list[str]], first: Path) -> None:
    ref = set(names)
    for path, imgs in others.items():
        extra = sorted(set(imgs) - ref)
        if extra:
            raise DataError(f"image {extra[0]!r} is not in {first}; every member must cover "
                            "the same images", path)
        lacking = sorted(ref - set(imgs))
        if lacking:
            raise DataError(f"no rows for image {lacking[0]!r}, which {first} has; every member "
                            "must cover the same images", path)


def _sizes(cfg: EnsembleConfig, names: list[str]) -> dict[str, tuple[int, int]]:
    if cfg.data is None:
        return {n: tuple(cfg.size) for n in names}
    from .infer import list_images

    df = list_images(cfg.data)
    known = {r.image_name: (int(r.height), int(r.width)) for r in df.itertuples(index=False)}
    for n in names:
        if n not in known:
            raise DataError(f"image {n!r} of the submissions is not in this folder", cfg.data)
    return {n: known[n] for n in names}


def _data_spec(data: str | None):
    """The description of the data set under ``data``; ``None`` for the hands or no data."""
    if data is None:
        return None
    from hbseg.data.spec import resolve_spec

    return resolve_spec(data)


def _show(names) -> str:
    names = sorted(names)
    return ", ".join(map(repr, names[:4])) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _same_classes(have, want, path, want_from: str) -> None:
    extra, lacking = set(have) - set(want), set(want) - set(have)
    if extra:
        raise DataError(f"has class(es) {_show(extra)}, which {want_from} lacks; every "
                        "member must have the same classes", path)
    if lacking:
        raise DataError(f"lacks class(es) {_show(lacking)}, which {want_from} has; every "
                        "member must have the same classes", path)


def vote_classes(cfg: EnsembleConfig) -> tuple[str, ...]:
    """The classes a hard vote reads and writes: the described data set's when ``cfg.data``
    has a description, else the CSVs' own, in the order of the first's rows (the hands'
    order when they are the 29 bones). Members with other classes than the first (or than
    the data set) are a DataError naming the CSV."""
    found = [(Path(p), submission_classes(p)) for p in cfg.csvs]
    first, names = found[0]
    for path, other in found[1:]:
        _same_classes(other, names, path, str(first))
    spec = _data_spec(cfg.data)
    if spec is not None:
        _same_classes(names, spec.classes, first, f"the data set {spec.name!r} ({spec.source})")
        return spec.classes
    return CLASSES if set(names) == set(CLASSES) else names


def hard_vote(cfg: EnsembleConfig) -> dict:
    from tqdm.auto import tqdm

    class_names = vote_classes(cfg)
    subs: list[Submission] = [read_submission(p, class_names) for p in cfg.csvs]
    names = subs[0].images
    _same_images(names, {s.path: s.images for s in subs[1:]}, subs[0].path)
    sizes = _sizes(cfg, names)
    k = cfg.votes_needed
    min_sizes = _min_sizes(cfg, class_names)
    with SubmissionWriter(cfg.out, class_names) as w:
        for name in tqdm(names, desc="voting", unit="img", disable=bar_disabled(cfg.progress)):
            h, wd = sizes[name]
            votes = np.zeros((len(class_names), h, wd), dtype=np.uint8)
            for s in subs:
                votes += s.masks(name, h, wd)
            masks = remove_small_objects(torch.from_numpy(votes >= k), min_sizes)
            w.write(name, encode_masks(masks))
    return {"images": len(names), "members": len(subs), "min_votes": k, "classes": len(class_names)}


def read_probs_index(folder: str | Path) -> dict:
    folder = Path(folder)
    from hbseg.regular_files import read_text_regular

    from .infer import PROBS_INDEX

    try:
        doc = json.loads(read_text_regular(folder / PROBS_INDEX, f"a JSON {PROBS_INDEX}"))
    except FileNotFoundError:
        raise DataError(f"no {PROBS_INDEX}; is this a --save-probs folder of hbseg-infer?", folder) from None
    except (OSError, ValueError) as e:
        raise DataError(f"unreadable {PROBS_INDEX} ({e})", folder) from None
    if not isinstance(doc, dict) or "images" not in doc or "class_names" not in doc:
        raise DataError(f"{PROBS_INDEX} lacks 'images' or 'class_names'", folder)
    return doc


def _load_probs(folder: Path, entry: dict, n_classes: int) -> np.ndarray:
    from hbseg.regular_files import open_regular

    path = folder / entry["file"]
    try:
        with open_regular(path, "rb", "a .npy probability map") as f:
            arr = np.load(f)
    except FileNotFoundError:
        raise DataError("probability map listed in index.json is missing", path) from None
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"unreadable probability map ({e})", path) from None
    want = (n_classes, entry["height"], entry["width"])
    if arr.shape != want:
        raise DataError(f"probability map has shape {arr.shape}, expected {want}", path)
    check_probabilities(arr, path)
    return arr


def check_probabilities(arr: np.ndarray, path: Path) -> None:
    """A probability map holds floats in [0, 1]: NaN, infinities or values outside would
    pass through the weighted mean into every threshold comparison unnoticed."""
    if arr.dtype.kind != "f":
        raise DataError(f"probability map holds {arr.dtype} values; expected floats in [0, 1] "
                        "(as hbseg-infer --save-probs writes them)", path)
    bad = ~np.isfinite(arr)
    if bad.any():
        c, y, x = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(f"probability map holds {int(bad.sum())} non-finite values ({arr[c, y, x]} "
                        f"first, class plane {c} at row {y}, column {x}); expected floats in "
                        "[0, 1]", path)
    if arr.size and (float(arr.min()) < 0 or float(arr.max()) > 1):
        lo, hi = float(arr.min()), float(arr.max())
        raise DataError(f"probability map holds values from {lo:g} to {hi:g}; expected [0, 1]", path)


def soft_vote(cfg: EnsembleConfig, device: str = "cpu") -> dict:
    from tqdm.auto import tqdm

    folders = [Path(p) for p in cfg.probs]
    docs = [read_probs_index(f) for f in folders]
    class_names = tuple(docs[0]["class_names"])
    for f, d in zip(folders[1:], docs[1:], strict=True):
        _same_classes(d["class_names"], class_names, f, str(folders[0]))
        if tuple(d["class_names"]) != class_names:
            raise DataError(f"the classes of {folders[0]} in another order", f)
    spec = _data_spec(cfg.data)
    if spec is not None:
        _same_classes(class_names, spec.classes, folders[0], f"the data set {spec.name!r} ({spec.source})")
    names = list(docs[0]["images"])
    _same_images(names, {f: list(d["images"]) for f, d in zip(folders[1:], docs[1:], strict=True)}, folders[0])
    weights = np.asarray(cfg.weights or [1.0] * len(folders), dtype=np.float64)
    if (weights <= 0).any():
        raise ConfigError(f"--weights must be positive, got {list(weights)}")
    per_class = None
    if cfg.class_weights_file:
        per_class = load_class_weights(cfg.class_weights_file, class_names, len(folders))
    table = class_weight_table(weights, class_names, per_class, cfg.class_weights_file)
    thr: float | dict = cfg.threshold
    if cfg.thresholds_file:
        thr = load_thresholds(cfg.thresholds_file, class_names)
    thresholds = resolve_thresholds(thr, class_names, default=cfg.threshold)
    min_sizes = _min_sizes(cfg, class_names)
    with SubmissionWriter(cfg.out, class_names) as w:
        for name in tqdm(names, desc="soft voting", unit="img", disable=bar_disabled(cfg.progress)):
            acc = None
            for f, d, wt in zip(folders, docs, table, strict=True):
                entry = d["images"][name]
                p = torch.from_numpy(_load_probs(f, entry, len(class_names))).to(device).float()
                p.mul_(torch.as_tensor(wt, dtype=p.dtype, device=p.device).view(-1, 1, 1))
                acc = p if acc is None else acc.add_(p)
            w.write(name, encode_masks(postprocess(acc, thresholds, min_sizes)))
    return {"images": len(names), "members": len(folders),
            "weights": (weights / weights.sum()).tolist(),
            "class_weights": bool(cfg.class_weights_file)}


def run_ensemble(cfg: EnsembleConfig, device: str = "cpu") -> dict:
    """Hard or soft vote, as ``cfg`` says; writes ``cfg.out`` and its config beside it."""
    start = time.perf_counter()
    summary = hard_vote(cfg) if cfg.csvs else soft_vote(cfg, device)
    summary.update(mode="hard" if cfg.csvs else "soft", out=str(cfg.out),
                   seconds=round(time.perf_counter() - start, 3))
    save_config(cfg, config_path(cfg.out), summary=summary)
    return summary
