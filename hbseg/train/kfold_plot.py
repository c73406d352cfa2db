"""The k-fold picture, ``DIR/kfold.png``: every fold's validation curve, and each class's
best Dice across folds (matplotlib's Agg back-end, no display)."""

from __future__ import annotations

from pathlib import Path

from hbseg.atomic import atomic_savefig

__all__ = ["plot_kfold"]

_CURVES_HEIGHT = 3.2  # inches, as one run's curves.png
_CLASS_ROW = 0.22  # inches per class in the per-class panel: 29 hand bones stay legible


def plot_kfold(summary: dict, curves: dict[str, list[dict]], path: str | Path,
               title: str | None = None) -> Path:
    """Plot ``summary`` (as ``summarize_kfold`` returns it) and each fold's metrics.jsonl
    records (``curves``: fold → records, ``[]`` for a fold with none yet).

    Top: validation mean Dice per epoch, one line per fold, its best marked. Bottom: per
    class, the mean over folds of each fold's best-epoch Dice, min–max whiskers and a dot
    per fold. Folds without validation records are named in a note, not drawn.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI back-end

    classes = summary.get("classes") or []
    class_height = 0.8 + _CLASS_ROW * len(classes) if classes else 1.0
    fig = Figure(figsize=(8, _CURVES_HEIGHT + class_height), dpi=80)
    ax_curves, ax_classes = fig.subplots(
        2, 1, gridspec_kw={"height_ratios": [_CURVES_HEIGHT, class_height]})
    _curves_panel(ax_curves, summary, curves)
    _classes_panel(ax_classes, summary, classes)
    return atomic_savefig(fig, path, title)


def _fold_color(k: str) -> str:
    """By fold number, so a fold's dots below match its curve above."""
    return f"C{int(k) % 10}"


def _fold_label(k: str, fold: dict | None, epochs: int) -> str:
    if fold is None or fold["finished"]:
        return f"fold {k}"
    return f"fold {k} ({fold['epochs_done']}/{epochs} epochs)"


def _curves_panel(ax, summary: dict, curves: dict[str, list[dict]]) -> None:
    from matplotlib.ticker import MaxNLocator

    folds = summary["folds"]
    unseen = []
    for k, records in sorted(curves.items(), key=lambda kv: int(kv[0])):
        dice = [(r["epoch"], r["mean_dice"]) for r in records if r.get("mean_dice") is not None]
        if not dice:
            unseen.append(f"fold {k} ({'no validation yet' if records else 'no metrics yet'})")
            continue
        color = _fold_color(k)
        ax.plot(*zip(*dice, strict=True), marker=".", color=color,
                label=_fold_label(k, folds.get(k), summary["epochs"]))
        best_epoch, best = max(dice, key=lambda d: d[1])
        ax.plot([best_epoch], [best], marker="*", markersize=12, color=color,
                markeredgecolor="black", linestyle="none")
    if unseen:
        ax.text(0.01, 0.02, "not drawn: " + ", ".join(unseen), transform=ax.transAxes,
                fontsize=7, va="bottom", ha="left", color="dimgray")
    if summary["mean_dice"] is None:
        ax.set_title("no fold has a validation record yet", fontsize=9)
    else:
        ax.set_title(f"mean of the folds' best: {summary['mean_dice']:.4f} "
                     f"({summary['folds_scored']} folds; * marks each fold's best)", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean Dice (val, t=0.5)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)


def _classes_panel(ax, summary: dict, classes: list[str]) -> None:
    scored = {k: f for k, f in summary["folds"].items() if f["dice"] is not None}
    if not classes or not scored:
        ax.text(0.5, 0.5, "per-class Dice: no validation records yet", ha="center",
                va="center", fontsize=9, transform=ax.transAxes)
        ax.set_axis_off()
        return
    rows = range(len(classes))
    per_fold = [[f["dice"][c] for c in classes] for f in scored.values()]
    lows = [min(col) for col in zip(*per_fold, strict=True)]
    highs = [max(col) for col in zip(*per_fold, strict=True)]
    means = [summary["per_class"][c] for c in classes]
    ax.errorbar(means, rows, xerr=[[m - lo for m, lo in zip(means, lows, strict=True)],
                                   [hi - m for m, hi in zip(means, highs, strict=True)]],
                fmt="o", color="black", markersize=4, capsize=2, linewidth=1)
    for k, dice in zip(scored, per_fold, strict=True):
        ax.scatter(dice, rows, s=10, color=_fold_color(k), alpha=0.7, zorder=3)
    ax.set_yticks(list(rows), classes, fontsize=7)
    ax.set_ylim(len(classes) - 0.5, -0.5)  # first class on top, as listed
    ax.set_xlim(0, 1)
    ax.set_xlabel("best-epoch Dice per class (val)")
    ax.set_title(f"per class: mean over {len(scored)} folds, whiskers min–max, dots per fold",
                 fontsize=9)
    ax.grid(alpha=0.3, axis="x")
