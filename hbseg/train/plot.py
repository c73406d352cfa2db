"""The loss and Dice curves of a run, as one PNG (matplotlib's Agg back-end, no display)."""

from __future__ import annotations

from pathlib import Path

from hbseg.atomic import atomic_savefig

__all__ = ["plot_curves"]


def plot_curves(records: list[dict], path: str | Path, title: str | None = None) -> Path:
    """Plot train (and validation) loss and mean Dice per epoch from metrics.jsonl records."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI back-end

    epochs = [r["epoch"] for r in records]
    fig = Figure(figsize=(8, 3.2), dpi=80)
    ax_loss, ax_dice = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["loss"] for r in records], marker=".", label="train")
    val = [(r["epoch"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    if val:
        ax_loss.plot(*zip(*val, strict=True), marker=".", label="val")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    dice = [(r["epoch"], r["mean_dice"]) for r in records if r.get("mean_dice") is not None]
    if dice:
        ax_dice.plot(*zip(*dice, strict=True), marker=".", color="tab:green")
        best = max(dice, key=lambda d: d[1])
        ax_dice.set_title(f"best {best[1]:.4f} at epoch {best[0]}", fontsize=9)
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("mean Dice (val, t=0.5)")
    ax_dice.set_ylim(0, 1)
    ax_dice.grid(alpha=0.3)
    return atomic_savefig(fig, path, title)
