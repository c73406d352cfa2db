"""The tuning report (per class, before and after each step, in sample and cross-validated)
and the files hbseg-infer / hbseg-ensemble read:

    thresholds.json   {"class": threshold}          hbseg-infer/hbseg-ensemble --thresholds
    min_sizes.json    {"class": pixels}             hbseg-infer/hbseg-ensemble --min-sizes
    weights.json      {"class": [w per member]}     hbseg-ensemble --probs … --class-weights
    tune-report.json  everything below; tune-report.txt the table
    tune-report.png   per class: Dice untuned vs tuned, the chosen threshold and min size
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hbseg.atomic import atomic_write_text, check_writable_dir

from .config import TuneConfig
from .plot import plot_tune_report

__all__ = ["build_report", "format_report", "write_outputs", "FILES"]

FILES = ("thresholds.json", "min_sizes.json", "weights.json", "tune-report.json", "tune-report.txt",
         "tune-report.png")


def _at(table: np.ndarray, pick: np.ndarray) -> np.ndarray:
    return np.take_along_axis(table, pick[:, None], -1)[:, 0]


def build_report(*, cfg: TuneConfig, classes, folds, n_images, thresholds, combos, sizes, s1, s2,
                 base1, pick1, cv1, pick2, cv2, members, device, seconds) -> dict:
    n_t = len(thresholds)
    n = float(n_images)
    scores = {
        "baseline": s1.sum(0)[:, base1] / n,
        "step1_in_sample": _at(s1.sum(0), pick1) / n,
        "step1_cv": cv1[1] / n if cv1 else None,
        "step2_in_sample": _at(s2[0].sum(0), pick2) / n,
        "step2_cv": cv2[1] / n if cv2 else None,
    }
    thr = [thresholds[i % n_t] for i in pick1]
    weights = [list(combos[i // n_t]) for i in pick1]
    mins = [int(sizes[i]) for i in pick2]
    kept = _keep_untuned(scores, thr, weights, mins, thresholds[base1 % n_t], combos[base1 // n_t])
    per_class = {}
    for c, name in enumerate(classes):
        row = {k: (None if v is None else round(float(v[c]), 6)) for k, v in scores.items()}
        row.update(threshold=thr[c], min_size=mins[c], kept_untuned=c in kept)
        if len(members) > 1:
            row["weights"] = [round(w, 6) for w in weights[c]]
        per_class[name] = row
    mean = {k: (None if v is None else round(float(np.mean(v)), 6)) for k, v in scores.items()}
    folds_chosen = None
    if cv1:
        folds_chosen = {
            str(fold): {"thresholds": [thresholds[i % n_t] for i in cv1[0][f]],
                        "min_sizes": [int(sizes[i]) for i in cv2[0][f]]}
            for f, fold in enumerate(folds)}
    step1 = "weights+thresholds" if len(members) > 1 else "thresholds"
    return {
        "members": members,
        "images": n_images,
        "folds": folds,
        "classes": list(classes),
        "steps": ["baseline", step1, "min_sizes"],
        "mean": mean,
        "per_class": per_class,
        "thresholds": dict(zip(classes, thr, strict=True)),
        "min_sizes": dict(zip(classes, mins, strict=True)),
        "weights": dict(zip(classes, weights, strict=True)) if len(members) > 1 else None,
        # classes whose tuning lowered the cross-validated Dice: their files hold the
        # untuned settings (default threshold, equal weights, no minimum size)
        "kept_untuned": [classes[c] for c in kept],
        "default_threshold": thresholds[base1 % n_t],
        "chosen_per_held_out_fold": folds_chosen,
        "candidates": {"thresholds": list(thresholds), "min_sizes": list(sizes),
                       "weights": [list(w) for w in combos]},
        "config": cfg.to_dict(),
        "device": device,
        "seconds": round(seconds, 2),
    }


def _keep_untuned(scores: dict, thr: list, weights: list, mins: list, default_t: float,
                  equal: tuple) -> list[int]:
    """Where the cross-validated Dice of tuning fell below the untuned Dice, tuning fitted
    noise: those classes get the untuned settings back (in place). Returns them."""
    cv, base = scores["step2_cv"], scores["baseline"]
    if cv is None:  # one fold: nothing to judge by
        return []
    kept = []
    for c in range(len(thr)):
        changed = thr[c] != default_t or mins[c] != 0 or tuple(weights[c]) != tuple(equal)
        if changed and cv[c] < base[c] - 1e-12:
            thr[c], weights[c], mins[c] = default_t, list(equal), 0
            kept.append(c)
    return kept


def _f(v) -> str:
    return "   -  " if v is None else f"{v:.4f}"


def format_report(r: dict) -> str:
    step1 = r["steps"][1]
    width = max(len(c) for c in [*r["classes"], "mean"])
    many = r["weights"] is not None
    head = (f"{'class':<{width}}  baseline |  thr   {'dice':>6} {'cv':>6} |  min size {'dice':>6} "
            f"{'cv':>6}" + (" | weights" if many else ""))
    lines = [f"step 1: {step1}; step 2: min sizes (at step 1's choice)", head, "-" * len(head)]
    for c in r["classes"]:
        p = r["per_class"][c]
        w = (" | " + ",".join(f"{x:.2f}" for x in p["weights"])) if many else ""
        star = " *" if p.get("kept_untuned") else ""
        lines.append(f"{c:<{width}}  {_f(p['baseline'])}   | {p['threshold']:.2f}  "
                     f"{_f(p['step1_in_sample'])} {_f(p['step1_cv'])} | {p['min_size']:>8} "
                     f"{_f(p['step2_in_sample'])} {_f(p['step2_cv'])}{w}{star}")
    m = r["mean"]
    lines += ["-" * len(head),
              f"{'mean':<{width}}  {_f(m['baseline'])}   |       {_f(m['step1_in_sample'])} "
              f"{_f(m['step1_cv'])} |          {_f(m['step2_in_sample'])} {_f(m['step2_cv'])}",
              "",
              f"mean Dice over {r['images']} images, {len(r['folds'])} folds: "
              f"baseline {_f(m['baseline'])} -> tuned {_f(m['step2_in_sample'])} in sample "
              f"(optimistic: chosen and scored on the same images), "
              f"{_f(m['step2_cv'])} cross-validated (chosen on the other folds, scored on each "
              "held-out fold)."]
    if m["step2_cv"] is None:
        lines.append("no cross-validated figure: the OOF covers a single fold")
    kept = r.get("kept_untuned") or []
    worse = m["step2_cv"] is not None and m["step2_cv"] < m["baseline"]
    if kept or worse:
        lead = (f"tuning lowered the cross-validated mean Dice ({_f(m['baseline'])} -> "
                f"{_f(m['step2_cv'])}); " if worse else "")
        what = ("the files keep the untuned settings wherever it fell" if not kept else
                f"kept the untuned settings (threshold {r['default_threshold']:.2f}, no minimum "
                f"size{', equal weights' if many else ''}) for {len(kept)} "
                f"class{'es' * (len(kept) > 1)} whose cross-validated Dice fell with tuning: "
                f"{', '.join(kept)}; the files hold those, the better choice")
        lines.append(f"* {lead}{what}")
    return "\n".join(lines)


def write_outputs(r: dict, out: str | Path) -> list[str]:
    out = check_writable_dir(out)
    written = []

    def put(name: str, doc) -> None:
        text = doc if isinstance(doc, str) else json.dumps(doc, indent=2) + "\n"
        atomic_write_text(out / name, text)
        written.append(str(out / name))

    put("thresholds.json", r["thresholds"])
    put("min_sizes.json", r["min_sizes"])
    if r["weights"] is not None:
        put("weights.json", r["weights"])
    elif (out / "weights.json").exists():
        (out / "weights.json").unlink()  # a stale file from an ensemble run would mislead
    put("tune-report.json", {k: v for k, v in r.items() if k != "files"})
    put("tune-report.txt", format_report(r) + "\n")
    folds, models = len(r["folds"]), len(r["members"])
    title = (f"hbseg-tune: {r['images']} images, {folds} fold{'s' * (folds > 1)}, "
             f"{models} model{'s' * (models > 1)}")
    written.append(str(plot_tune_report(r, out / "tune-report.png", title)))
    return written
