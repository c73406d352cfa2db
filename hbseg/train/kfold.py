"""k-fold training: one run folder per validation fold, and a summary of them all.

    DIR/kfold-config.yaml   the shared TrainConfig (its ``fold`` and ``out`` are per fold)
    DIR/kfold-plan.json     the folds asked for (by every process sharing DIR) and the data's
    DIR/fold-K/             an ordinary hbseg-train run folder, validated on fold K
    DIR/kfold.json          per-fold best Dice (mean and per class) and their mean
    DIR/kfold.png           every fold's validation Dice curve, and per-class best Dice

Folds train one after another in this process. Several processes may share ``DIR``, one
fold each (one per GPU): each writes only its own ``fold-K`` and rebuilds ``kfold.json``
and ``kfold.png`` from every fold folder on disk, so the last one to finish leaves the
whole summary. ``--resume`` without ``--folds`` trains the folds in the plan, and the
summary names the planned folds that have no finished epoch.
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path

from hbseg.atomic import atomic_write_text
from hbseg.errors import ConfigError, DataError

from .config import TrainConfig, load_config, save_config
from .kfold_plot import plot_kfold
from .metrics_file import read_metrics

__all__ = ["KFOLD_CONFIG", "KFOLD_PLAN", "KFOLD_SUMMARY", "KFOLD_PLOT", "fold_dir", "fold_state",
           "train_kfold", "summarize_kfold", "load_kfold_config", "list_fold_dirs", "load_plan"]

KFOLD_CONFIG = "kfold-config.yaml"
KFOLD_PLAN = "kfold-plan.json"
KFOLD_SUMMARY = "kfold.json"
KFOLD_PLOT = "kfold.png"


def fold_dir(out: str | Path, fold: int) -> Path:
    return Path(out) / f"fold-{fold}"


def list_fold_dirs(out: str | Path) -> dict[int, Path]:
    """``{fold: DIR/fold-K}`` for every fold folder present, in fold order."""
    found = {}
    for p in Path(out).glob("fold-*"):
        tail = p.name[len("fold-"):]
        if p.is_dir() and tail.isdigit():
            found[int(tail)] = p
    return dict(sorted(found.items()))


def load_kfold_config(out: str | Path) -> TrainConfig:
    path = Path(out) / KFOLD_CONFIG
    if not path.is_file():
        raise ConfigError(f"no {KFOLD_CONFIG}: not an hbseg-kfold folder", out)
    return load_config(path)


def load_plan(out: str | Path) -> dict | None:
    """``{"folds": [...], "data_folds": [...]}``: the folds the commands training ``out``
    asked for, and the folds the data has; None for a folder from before plans were kept."""
    from hbseg.settings_file import parse_json, read_text

    path = Path(out) / KFOLD_PLAN
    if not path.is_file():
        return None
    doc = parse_json(read_text(path, "k-fold plan", DataError), path, DataError)
    for key in ("folds", "data_folds"):
        v = doc.get(key) if isinstance(doc, dict) else None
        if not isinstance(v, list) or not all(type(f) is int and f >= 0 for f in v):
            raise DataError(f"k-fold plan: {key!r} is not a list of fold numbers", path)
    return {"folds": sorted(set(doc["folds"])), "data_folds": sorted(set(doc["data_folds"]))}


def _record_plan(out: Path, folds: list[int], data_folds: list[int], join: bool) -> None:
    """Write the folds to train into the plan; ``join``: add them to the folds already
    planned (another process training other folds of the same run, or a resume)."""
    from hbseg.locks import folder_lock

    # processes sharing DIR, one per fold, start together: none may lose another's folds
    with folder_lock(out / KFOLD_PLAN, "k-fold plan", wait=True):
        old = (load_plan(out) if join else None) or {"folds": []}
        plan = {"folds": sorted(set(folds) | set(old["folds"])), "data_folds": data_folds}
        atomic_write_text(out / KFOLD_PLAN, json.dumps(plan) + "\n")


def fold_state(run_dir: Path, epochs: int) -> str:
    """``new`` (nothing to continue), ``partial`` (last.pt short of ``epochs``) or ``done``."""
    last = run_dir / "last.pt"
    if not last.is_file():
        return "new"
    from hbseg.models import read_checkpoint

    return "done" if int(read_checkpoint(last).get("epoch", 0)) >= epochs else "partial"


def _check_same_plan(saved: TrainConfig, base: TrainConfig, out: Path) -> None:
    """A second process joining ``out`` must train the same models as the first."""
    from .resume import RESUMABLE

    skip = RESUMABLE | {"fold", "out"}
    differ = [f.name for f in fields(TrainConfig)
              if f.name not in skip and getattr(saved, f.name) != getattr(base, f.name)]
    if differ:
        parts = [f"--{k.replace('_', '-')} (folder has {getattr(saved, k)!r}, given "
                 f"{getattr(base, k)!r})" for k in differ]
        raise ConfigError(f"{KFOLD_CONFIG} was written with other settings: " + "; ".join(parts)
                          + ". Use the same settings, --resume, or another --out", out)


def train_kfold(
    base: TrainConfig,
    folds: list[int] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    given: dict | None = None,
    index=None,
) -> dict:
    """Train ``base`` once per fold into ``base.out/fold-K``; returns ``summarize_kfold``.

    ``folds``: which to train [default: every fold of the data; on ``resume``, the folds
    the plan holds, i.e. those the first command asked for]. ``resume``: folds whose
    last.pt has all epochs are skipped, partial ones continue from it, the rest start;
    ``given`` holds options typed again on the command line (see ``resume_config``).
    Without ``resume``, a fold folder that already holds a run is an error before any
    training starts, unless ``overwrite``.
    """
    from hbseg.models import read_checkpoint

    from .resume import resume_config
    from .trainer import held_run_files, prepare_index
    from .trainer import train as train_one

    out = Path(base.out)
    given = dict(given or {})
    index = prepare_index(base) if index is None else index
    present = sorted(int(f) for f in index["fold"].unique())
    if not folds and resume:  # the folds the original command asked for
        folds = (load_plan(out) or {}).get("folds")
    folds = present if not folds else sorted(set(folds))
    missing = [f for f in folds if f not in present]
    if missing:
        raise ConfigError(f"fold {missing[0]} has no images; folds present: "
                          f"{', '.join(map(str, present))}", base.data)
    if -1 in folds:
        raise ConfigError("k-fold training needs validation folds; -1 is not one")
    if (out / KFOLD_CONFIG).is_file() and not overwrite:
        _check_same_plan(load_kfold_config(out), base, out)
    if not resume and not overwrite:
        busy = [f for f in folds if held_run_files(fold_dir(out, f))]
        if busy:
            raise ConfigError(f"fold {busy[0]} already holds a run ({fold_dir(out, busy[0])}); "
                              f"continue with --resume, pass --overwrite, or choose another "
                              f"--out", out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(base.replace(fold=folds[0]), out / KFOLD_CONFIG)
    _record_plan(out, folds, [f for f in present if f >= 0], join=not overwrite)
    for k in folds:
        run = fold_dir(out, k)
        state = fold_state(run, base.epochs) if resume else "new"
        if state == "done":
            print(f"fold {k}: complete, skipped", file=sys.stderr)
            continue
        print(f"fold {k}: {'resuming' if state == 'partial' else 'training'} in {run}",
              file=sys.stderr)
        if state == "partial":
            saved = TrainConfig.from_dict(read_checkpoint(run / "last.pt")["config"])
            cfg = resume_config(saved, {**given, "out": str(run)})
            train_one(cfg, resume=True, index=index)
        else:
            # a --resume of a fold that never finished an epoch has nothing worth keeping
            cfg = base.replace(fold=k, out=str(run))
            train_one(cfg, overwrite=overwrite or resume, index=index)
        summarize_kfold(out)
    return summarize_kfold(out)


def _best_record(records: list[dict]) -> tuple[dict | None, int]:
    best, epochs = None, 0
    for rec in records:
        epochs = max(epochs, int(rec.get("epoch", 0)))
        if rec.get("mean_dice") is not None and (best is None or rec["mean_dice"] > best["mean_dice"]):
            best = rec
    return best, epochs


def summarize_kfold(out: str | Path) -> dict:
    """Per-fold best validation Dice (from each ``metrics.jsonl``) and their mean, per class
    too; written to ``DIR/kfold.json``, drawn in ``DIR/kfold.png``, and returned."""
    out = Path(out)
    base = load_kfold_config(out)
    folds: dict[str, dict] = {}
    curves: dict[str, list[dict]] = {}
    for k, run in list_fold_dirs(out).items():
        m = run / "metrics.jsonl"
        curves[str(k)] = read_metrics(m)
        if not m.is_file():
            continue
        best, epochs = _best_record(curves[str(k)])
        folds[str(k)] = {
            "run_dir": str(run), "epochs_done": epochs, "finished": epochs >= base.epochs,
            "best_epoch": best["epoch"] if best else None,
            "best_mean_dice": best["mean_dice"] if best else None,
            "dice": best["dice"] if best else None,
            "best_pt": str(run / "best.pt") if (run / "best.pt").is_file() else None,
        }
    scored = {k: f for k, f in folds.items() if f["best_mean_dice"] is not None}
    plan = load_plan(out)
    missing = None if plan is None else [k for k in plan["folds"]
                                         if not folds.get(str(k), {}).get("epochs_done")]
    classes = per_class = None
    if scored:
        first = next(iter(scored))
        classes = list(scored[first]["dice"])  # the run's class names, in output order
        for k, f in scored.items():
            if list(f["dice"]) != classes:
                raise DataError(f"fold {k} was validated on other classes than fold {first} "
                                f"({', '.join(f['dice'])} vs {', '.join(classes)})",
                                Path(f["run_dir"]) / "metrics.jsonl")
        per_class = {c: sum(f["dice"][c] for f in scored.values()) / len(scored) for c in classes}
    summary = {
        "out": str(out),
        "epochs": base.epochs,
        "folds": folds,
        "folds_scored": len(scored),
        "mean_dice": (sum(f["best_mean_dice"] for f in scored.values()) / len(scored)
                      if scored else None),
        "classes": classes,
        "per_class": per_class,
        "all_finished": bool(folds) and all(f["finished"] for f in folds.values()) and not missing,
        # None for a folder from before plans were kept
        "folds_planned": None if plan is None else plan["folds"],
        "folds_missing": missing,  # planned, with no finished epoch
        "folds_not_planned": (None if plan is None else
                              [k for k in plan["data_folds"] if k not in plan["folds"]]),
    }
    atomic_write_text(out / KFOLD_SUMMARY, json.dumps(summary, indent=2) + "\n")
    plot_kfold(summary, curves, out / KFOLD_PLOT,
               title=f"{base.arch}/{base.encoder} {base.size}px, {len(curves)} folds: {out.name}")
    return summary
