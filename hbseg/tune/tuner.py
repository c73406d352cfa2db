"""``run_tune``: OOF probabilities + ground truth → thresholds, minimum sizes, weights.

Two passes over the images, each reading every model's OOF map and the mask once:

1. thresholds (and, for several models, per-class soft-vote weights, chosen jointly with
   the threshold because a blend shifts the calibration): Dice of every weight vector at
   every threshold, summed per fold;
2. minimum object sizes, at the thresholds and weights step 1 chose: Dice of every
   candidate size, from one labelling per class.

Each step keeps the untuned setting as a candidate and prefers it on ties, so the
in-sample Dice never falls. That figure is optimistic: the numbers were chosen on the
images they are scored on. The honest one is cross-validated: for each fold, the whole
procedure (both steps) is repeated on the other folds and scored on it.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import torch

from hbseg.errors import DataError
from hbseg.progress import bar_disabled

from .config import TuneConfig
from .curves import blend, component_stats, dice_at_cuts, dice_at_min_sizes, threshold_cuts
from .oof import OofSet, load_oof
from .select import choose, cross_validate

__all__ = ["run_tune", "weight_grid", "min_size_grid", "align_sets"]


def weight_grid(members: int, step: float) -> list[tuple[float, ...]]:
    """Equal weights first (the baseline), then every point of the simplex in ``step``s."""
    equal = tuple([1.0 / members] * members)
    if members == 1:
        return [equal]
    n = round(1 / step)
    grid = [equal]
    for parts in itertools.product(range(n + 1), repeat=members):
        if sum(parts) == n:
            w = tuple(p / n for p in parts)
            if not np.allclose(w, equal):
                grid.append(w)
    return grid


def min_size_grid(areas: np.ndarray, points: int = 20) -> tuple[int, ...]:
    """0, then sizes from 2e-5 to 2e-2 of the median image area, geometrically spaced."""
    a = float(np.median(areas))
    sizes = np.unique(np.round(np.geomspace(max(2.0, 2e-5 * a), max(3.0, 2e-2 * a), points)))
    return (0, *(int(s) for s in sizes))


def align_sets(sets: list[OofSet]) -> list[np.ndarray]:
    """Row of each image in every set, in the first set's order; all must hold the same
    images, classes and folds."""
    first = sets[0]
    rows = [np.arange(len(first.index))]
    for s in sets[1:]:
        if s.class_names != first.class_names:
            raise DataError(f"other classes than {first.folder}", s.folder)
        pos = {n: i for i, n in enumerate(s.index["image_name"])}
        lacking = [n for n in first.index["image_name"] if n not in pos]
        extra = set(pos) - set(first.index["image_name"])
        if lacking or extra:
            what = f"lacks {lacking[0]!r}" if lacking else f"has {sorted(extra)[0]!r} in addition"
            raise DataError(f"{what} compared with {first.folder}; every OOF folder must cover "
                            "the same images", s.folder)
        r = np.array([pos[n] for n in first.index["image_name"]])
        if not np.array_equal(s.index["fold"].to_numpy()[r], first.index["fold"].to_numpy()):
            raise DataError(f"assigns other folds than {first.folder}", s.folder)
        rows.append(r)
    return rows


class _Images:
    """Iterate images as (fold position, [member maps on device], truth on device)."""

    def __init__(self, sets: list[OofSet], rows: list[np.ndarray], fold_pos: np.ndarray,
                 device: torch.device, progress: bool, desc: str):
        self.sets, self.rows, self.fold_pos = sets, rows, fold_pos
        self.device, self.progress, self.desc = device, progress, desc

    def __iter__(self):
        from tqdm.auto import tqdm

        n = len(self.fold_pos)
        for i in tqdm(range(n), desc=self.desc, unit="img", disable=bar_disabled(self.progress)):
            qs = [torch.from_numpy(np.array(s.probs(int(r[i])))).to(self.device)
                  for s, r in zip(self.sets, self.rows, strict=True)]
            gt = torch.from_numpy(self.sets[0].truth(i)).to(self.device)
            yield int(self.fold_pos[i]), qs, gt


def _member_map(qs: list[torch.Tensor], c: int, weights: tuple[float, ...]) -> torch.Tensor:
    return qs[0][c] if len(qs) == 1 else blend([q[c] for q in qs], weights)


def run_tune(cfg: TuneConfig) -> dict:
    """Tune as ``cfg`` says; writes thresholds.json, min_sizes.json, weights.json (several
    models) and the report into ``cfg.out``; returns the report (``report.build_report``).
    One process at a time writes ``cfg.out`` (``hbseg.locks``)."""
    from hbseg.locks import folder_lock

    with folder_lock(cfg.out, "tuning folder"):
        return _run_tune(cfg)


def _run_tune(cfg: TuneConfig) -> dict:
    start = time.perf_counter()
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if cfg.device == "auto" else cfg.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        from hbseg.errors import ConfigError

        raise ConfigError("--device cuda: no CUDA GPU is visible; use --device cpu")
    sets = [load_oof(f) for f in cfg.oof]
    rows = align_sets(sets)
    index = sets[0].index
    classes = sets[0].class_names
    folds = sorted(int(f) for f in index["fold"].unique())
    fold_pos = np.searchsorted(folds, index["fold"].to_numpy())
    n_images, n_folds, n_classes = len(index), len(folds), len(classes)
    # -- the candidates -------------------------------------------------------------
    thresholds = sorted({*(cfg.thresholds if cfg.tune_thresholds else ()), cfg.default_threshold})
    base_t = thresholds.index(cfg.default_threshold)
    cuts = threshold_cuts(thresholds)
    combos = weight_grid(len(sets), cfg.weight_step)
    n_t, n_k = len(thresholds), len(combos)
    sizes = (cfg.min_sizes if cfg.min_sizes is not None else
             min_size_grid((index["height"] * index["width"]).to_numpy()))
    sizes = tuple(sorted({0, *sizes})) if cfg.tune_min_sizes else (0,)
    # -- pass 1: every weight vector at every threshold -----------------------------
    s1 = np.zeros((n_folds, n_classes, n_k * n_t))
    for f, qs, gt in _Images(sets, rows, fold_pos, device, cfg.progress, "thresholds"):
        for k, w in enumerate(combos):
            for c in range(n_classes):
                d = dice_at_cuts(_member_map(qs, c, w)[None], gt[c][None], cuts)[0]
                s1[f, c, k * n_t:(k + 1) * n_t] += d.numpy()
    base1 = base_t  # equal weights (combo 0) at the default threshold
    pick1 = choose(s1.sum(0), base1)
    cv1 = cross_validate(s1, base1) if n_folds > 1 else None
    # -- pass 2: minimum sizes, at each of step 1's choices ----------------------------
    configs = np.stack([pick1, *(cv1[0] if cv1 else [])])  # [1 + F, C] settings of step 1
    s2 = np.zeros((len(configs), n_folds, n_classes, len(sizes)))
    if len(sizes) > 1:
        for f, qs, gt in _Images(sets, rows, fold_pos, device, cfg.progress, "min sizes"):
            for c in range(n_classes):
                g = int(gt[c].sum())
                for setting in np.unique(configs[:, c]):
                    k, t = divmod(int(setting), n_t)
                    mask = _member_map(qs, c, combos[k]) >= int(cuts[t])
                    curve = dice_at_min_sizes(*component_stats(mask, gt[c]), g, sizes)
                    s2[configs[:, c] == setting, f, c] += curve
    else:  # nothing to search: keep step 1's Dice as the table
        for i, conf in enumerate(configs):
            s2[i, :, :, 0] = np.take_along_axis(s1, np.broadcast_to(conf[None, :, None],
                                                                    (n_folds, n_classes, 1)), -1)[..., 0]
    pick2 = choose(s2[0].sum(0), 0)
    cv2 = None
    if cv1 is not None:
        choices2, held = [], np.zeros(n_classes)
        for f in range(n_folds):
            table = s2[1 + f]
            ch = choose(table.sum(0) - table[f], 0)
            choices2.append(ch)
            held += np.take_along_axis(table[f], ch[:, None], -1)[:, 0]
        cv2 = (np.stack(choices2), held)
    from .report import build_report, write_outputs

    report = build_report(
        cfg=cfg, classes=classes, folds=folds, n_images=n_images, thresholds=thresholds,
        combos=combos, sizes=sizes, s1=s1, s2=s2, base1=base1, pick1=pick1, cv1=cv1,
        pick2=pick2, cv2=cv2, members=[str(s.folder) for s in sets], device=str(device),
        seconds=time.perf_counter() - start)
    report["files"] = write_outputs(report, cfg.out)
    return report
