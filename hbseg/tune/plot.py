"""What tuning did, per class, as one PNG (matplotlib's Agg back-end, no display):

1. mean Dice untuned → tuned, cross-validated (the figure to trust; in sample when the OOF
   covers a single fold), with the optimistic in-sample figure as a tick beside it;
2. the chosen threshold, with each held-out fold's own choice (a spread means the
   threshold does not generalise);
3. the chosen minimum object size, likewise (only when sizes were tuned).

Everything is read from the report ``build_report`` returns (tune-report.json).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hbseg.atomic import atomic_savefig

__all__ = ["plot_tune_report"]

_GAIN, _LOSS, _SAME, _UNTUNED = "tab:green", "tab:red", "0.45", "0.6"
_INCH_PER_CLASS = 0.22  # 29 hand classes: about 8 inches, every label legible at 7 pt


def _gain_colour(delta: float) -> str:
    return _GAIN if delta > 1e-6 else _LOSS if delta < -1e-6 else _SAME


def plot_tune_report(report: dict, path: str | Path, title: str | None = None) -> Path:
    """Draw ``report`` (tune-report.json) into ``path``; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI back-end

    classes = report["classes"]
    rows = [report["per_class"][c] for c in classes]
    mean = report["mean"]
    cross_validated = mean["step2_cv"] is not None
    tuned_key = "step2_cv" if cross_validated else "step2_in_sample"
    base = np.array([r["baseline"] for r in rows], float)
    tuned = np.array([r[tuned_key] for r in rows], float)
    in_sample = np.array([r["step2_in_sample"] for r in rows], float)
    per_fold = report.get("chosen_per_held_out_fold") or {}
    sizes_tuned = len(report["candidates"]["min_sizes"]) > 1

    y = np.arange(len(classes))
    panels = 3 if sizes_tuned else 2
    fig = Figure(figsize=(4.5 + 2.2 * panels, 2.0 + _INCH_PER_CLASS * len(classes)), dpi=80)
    axes = fig.subplots(1, panels, sharey=True,
                        gridspec_kw={"width_ratios": [2.2, 1, 1][:panels]})
    ax = axes[0]
    delta = tuned - base
    colours = [_gain_colour(d) for d in delta]
    ax.hlines(y, base, tuned, colors=colours, lw=1.5)
    ax.scatter(base, y, s=18, color=_UNTUNED, zorder=3, label="untuned")
    which = "cross-validated" if cross_validated else "in sample (single fold)"
    ax.scatter(tuned, y, s=22, c=colours, zorder=4)
    ax.scatter([], [], s=22, color=_GAIN, label=f"tuned, {which} (red: worse)")
    if cross_validated:
        ax.scatter(in_sample, y, s=40, marker="|", color="tab:blue", alpha=0.6, zorder=2,
                   label="tuned, in sample (optimistic)")
    # the Dice axis spans the data, not 0…1: gains of 0.001 must be visible
    values = np.concatenate([base, tuned, in_sample])
    lo, hi = float(values.min()), float(values.max())
    span = max(hi - lo, 0.02)
    ax.set_xlim(max(0.0, lo - 0.05 * span), hi + 0.05 * span)
    ax.set_yticks(y, classes, fontsize=7)
    ax.set_ylim(len(classes) - 0.5, -0.5)  # first class on top, as in tune-report.txt
    change = ax.secondary_yaxis("right")  # each class's change, on the class's row
    change.set_yticks(y, [f"{d:+.4f}" for d in delta], fontsize=6)
    for label, colour in zip(change.get_yticklabels(), colours, strict=True):
        label.set_color(colour)
    ax.set_xlabel("Dice", fontsize=8)
    suffix = (f"cross-validated ({mean['step2_in_sample']:.4f} in sample)" if cross_validated
              else "in sample (single fold: no cross-validation)")
    ax.set_title(f"mean Dice {mean['baseline']:.4f} → {mean[tuned_key]:.4f} {suffix}", fontsize=8)
    _legend_below(ax)

    default = report["config"]["default_threshold"]
    _chosen(axes[1], y, [r["threshold"] for r in rows],
            [v["thresholds"] for v in per_fold.values()])
    axes[1].axvline(default, color=_UNTUNED, ls="--", lw=1, label=f"untuned {default:g}")
    axes[1].set_xlim(0, 1)
    axes[1].set_title("threshold" if report["config"]["tune_thresholds"] else
                      "threshold (not tuned)", fontsize=8)
    _legend_below(axes[1])
    if sizes_tuned:
        biggest = max(report["candidates"]["min_sizes"])
        _chosen(axes[2], y, [r["min_size"] for r in rows],
                [v["min_sizes"] for v in per_fold.values()])
        axes[2].set_xscale("symlog", linthresh=1)  # 0 (keep everything) stays on the axis
        axes[2].set_xlim(-0.5, biggest * 1.5)  # a size of 0 off the spine
        axes[2].set_title("minimum object size (pixels)", fontsize=8)
        _legend_below(axes[2])
    for a in axes:
        a.grid(axis="x", alpha=0.3)
        a.tick_params(axis="x", labelsize=7)
    return atomic_savefig(fig, path, title)


def _legend_below(ax) -> None:
    """Under the axis labels, never over the data: with 3 classes there is no free corner."""
    from matplotlib.transforms import offset_copy

    below = offset_copy(ax.transAxes, ax.figure, y=-26, units="points")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below, fontsize=6,
              ncol=1, frameon=False)


def _chosen(ax, y: np.ndarray, chosen: list, folds: list[list]) -> None:
    """The value chosen on all images, and under it each held-out fold's own choice."""
    if folds:
        xs = np.array(folds, float)  # [folds, classes]
        ax.scatter(xs.ravel(), np.tile(y, len(folds)), s=10, marker="x", color="0.5",
                   alpha=0.6, zorder=2, label="chosen without one fold")
    ax.scatter(chosen, y, s=22, color="tab:blue", zorder=3, label="chosen")
