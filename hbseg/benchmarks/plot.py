"""``loaders.png``: training epoch time per loader with the no-loading bound drawn as a
line and, when several ``--cpus`` values were measured, throughput versus cores."""

from __future__ import annotations

from pathlib import Path

from hbseg.atomic import atomic_savefig

__all__ = ["plot_loaders"]


def _ok(runs: list[dict], loader: str, cpus) -> dict | None:
    for r in runs:
        if r.get("loader") == loader and r.get("cpus") == cpus and r.get("status") == "ok":
            return r
    return None


def _cores(n) -> str:
    return f"{n} core" if n == 1 else f"{n} cores"


def _idle_panel(ax, runs: list[dict], loaders: list[str], cpus_values: list, colors: list) -> None:
    width = 0.8 / max(1, len(cpus_values))
    kinds = [*loaders, "bound"]
    for j, cpus in enumerate(cpus_values):
        xs, ys = [], []
        for i, kind in enumerate(kinds):
            r = _ok(runs, kind, cpus)
            if r is None or r.get("gpu_idle_fraction") is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(100 * r["gpu_idle_fraction"])
        bars = ax.bar(xs, ys, width=width * 0.9, color=colors[j % len(colors)], label=_cores(cpus))
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_ylabel("GPU idle, % of the training epoch")
    ax.set_title("GPU idle time per loader (lower is better)")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)


def plot_loaders(results: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    cpus_values = list(dict.fromkeys(r.get("cpus") for r in runs))
    loaders = list(dict.fromkeys(r["loader"] for r in runs if r["loader"] != "bound"))
    several = len(cpus_values) > 1
    # On CUDA the figure leads with GPU idle time, the figure that says whether the
    # loader keeps the GPU busy; CPU runs have none and start with epoch time.
    idle = any(r.get("gpu_idle_fraction") is not None for r in runs)
    panels = 1 + int(idle) + int(several)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels + 1.5, 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if idle:
        _idle_panel(axes[0][0], runs, loaders, cpus_values, colors)
    ax = axes[0][int(idle)]
    width = 0.8 / max(1, len(cpus_values))
    ymax = 0.0
    failed: list[float] = []
    for j, cpus in enumerate(cpus_values):
        color = colors[j % len(colors)]
        xs, ys = [], []
        for i, kind in enumerate(loaders):
            x = i - 0.4 + width * (j + 0.5)
            r = _ok(runs, kind, cpus)
            if r is None:
                failed.append(x)
                continue
            xs.append(x)
            ys.append(r["train_epoch_s"])
        bars = ax.bar(xs, ys, width=width * 0.9, color=color, label=_cores(cpus))
        ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=1)
        ymax = max([ymax, *ys])
        b = _ok(runs, "bound", cpus)
        if b is not None:
            ax.axhline(b["train_epoch_s"], color=color, linestyle="--", linewidth=1.2,
                       label=f"no-loading bound, {_cores(cpus)}")
            ymax = max(ymax, b["train_epoch_s"])
    top = ymax * 1.35 if ymax else 1.0
    for x in failed:
        ax.text(x, 0.02 * top, "failed", rotation=90, ha="center", va="bottom", fontsize=9,
                color="firebrick")
    ax.set_xticks(range(len(loaders)), loaders)
    ax.set_ylabel("training epoch time (s, median)")
    ax.set_ylim(0, top)
    ax.set_title("Epoch time per loader (lower is better)")
    ax.legend(fontsize=7, loc="upper center", ncol=2)
    ax.grid(axis="y", alpha=0.3)

    if several:
        ax2 = axes[0][-1]
        numeric = [c for c in cpus_values if c is not None]
        for i, kind in enumerate([*loaders, "bound"]):
            color = "black" if kind == "bound" else colors[i % len(colors)]
            pts = [(c, _ok(runs, kind, c)) for c in numeric]
            pts = [(c, r) for c, r in pts if r is not None]
            if not pts:
                continue
            ax2.plot([c for c, _ in pts], [r["train_images_per_s"] for _, r in pts], marker="o",
                     color=color, linestyle="--" if kind == "bound" else "-",
                     label=f"{kind} (training)")
            load = [(c, r["load_images_per_s"]) for c, r in pts if r.get("load_images_per_s")]
            if load:
                ax2.plot([c for c, _ in load], [v for _, v in load], marker="x", color=color,
                         linestyle=":", alpha=0.7, label=f"{kind} (loader alone)")
        ax2.set_xlabel("CPU cores (--cpus)")
        ax2.set_ylabel("images / s (log scale)")
        ax2.set_yscale("log")
        ax2.set_xticks(numeric)
        ax2.set_title("Throughput versus cores")
        ax2.legend(fontsize=7)
        ax2.grid(alpha=0.3)

    cfg, m = results.get("config", {}), results.get("machine", {})
    fig.suptitle(f"hbseg-bench loaders: {cfg.get('arch')}/{cfg.get('encoder')} at "
                 f"{cfg.get('size')} px, batch {cfg.get('batch_size')}, {cfg.get('device')} — "
                 f"{m.get('gpu_name') or m.get('cpu_model')}", fontsize=9)
    atomic_savefig(fig, path, dpi=90)
    plt.close(fig)
    return Path(path)
