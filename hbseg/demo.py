"""``make demo``: the whole product in about three minutes on a 2-core CPU.

``run_demo(out_dir, cfg)`` makes a small synthetic data set, trains a UNet with the DALI
loader on CPU until it finds the bones, writes a submission for the test hands, draws a
validation hand (ground truth beside prediction), runs a short loader benchmark
(baseline vs torch vs DALI) and ends with one summary block. Everything it writes lies
under ``out_dir``:

    data/                synthetic hands and their mask cache
    run/                 config.yaml, metrics.jsonl, best.pt, last.pt, curves.png
    submission.csv       RLE predictions for the test hands; overlays/ shows them
    val/                 the validation fold's hands (copied); val-overlays/ shows them
    bench/               loaders-alone.png (the headline), results.json, table.md,
                         loaders.png, logs/
    demo-config.json     the DemoConfig; summary.txt and summary.json: the summary

The defaults were measured so that a newcomer's run is not the lucky one: over seeds 0-4
(data and training) the validation mean Dice was 0.83, 0.86, 0.85, 0.82 and 0.81. They
are: Dice loss (the bce_dice runs of benchmarks/results/quality-cpu-* sat near Dice 0 for
ten epochs), no augmentation (24 epochs leave no time to profit from it), 128 px, a peak
learning rate of 3e-3 with cosine decay.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from hbseg.cli_common import debug_option, main_entry
from hbseg.errors import ConfigError

__all__ = ["DemoConfig", "run_demo", "summary_block", "loader_figures", "plot_loader_alone",
           "main"]

BENCH_LOADERS = ("baseline", "torch", "dali")


@dataclass(frozen=True)
class DemoConfig:
    """Every knob of the demo; the defaults are the measured ones (module doc)."""

    patients: int = 20  # train patients, two hands each; a fifth validate (fold 0)
    test_patients: int = 1
    data_size: int = 256  # side of the synthetic radiographs
    size: int = 128  # training side
    epochs: int = 24
    batch_size: int = 4
    lr: float = 3e-3
    loss: str = "dice"
    arch: str = "unet"
    encoder: str = "resnet18"
    loader: str = "dali"
    augment: bool = False  # the default augmentation (shift/scale/rotate, brightness/contrast)
    workers: int = 2  # DALI CPU threads
    threads: int | None = None  # torch intra-op threads [default: torch's, one per core]
    val_every: int = 2
    seed: int = 0  # synthetic data and training alike
    bench: bool = True
    bench_loaders: tuple[str, ...] = BENCH_LOADERS
    bench_steps: int = 5  # batches per benchmark epoch
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("patients", "data_size", "size", "epochs", "batch_size", "val_every",
                     "bench_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"demo {name} must be at least 1, got {getattr(self, name)}")
        if self.patients < 2:
            raise ConfigError("the demo needs at least 2 patients: one to train on, one to "
                              f"validate, got {self.patients}")
        if self.test_patients < 1:
            raise ConfigError(f"the demo needs a test patient, got {self.test_patients}")
        if self.size > self.data_size:
            raise ConfigError(f"training size {self.size} is larger than the images "
                              f"({self.data_size} px)")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")
        if self.bench and not self.bench_loaders:
            raise ConfigError("bench is on but no loader is named")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bench_loaders"] = list(self.bench_loaders)
        return d


# -- steps -------------------------------------------------------------------------------
class _Clock:
    """Wall and CPU seconds (this process, its threads, and reaped children) per step."""

    def __init__(self, log: Callable[[str], None], total: int):
        self.log, self.total, self.k = log, total, 0
        self.steps: list[dict] = []
        self.t0, self.c0 = time.perf_counter(), self._cpu()

    @staticmethod
    def _cpu() -> float:
        s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

    def step(self, title: str, fn: Callable[[], object]):
        self.k += 1
        self.log(f"[{self.k}/{self.total}] {title} ...")
        t, c = time.perf_counter(), self._cpu()
        result = fn()
        wall, cpu = time.perf_counter() - t, self._cpu() - c
        self.steps.append({"step": title, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)})
        self.log(f"      done in {wall:.1f} s ({cpu:.1f} CPU s)")
        return result

    def totals(self) -> dict:
        return {"wall_s": round(time.perf_counter() - self.t0, 1),
                "cpu_s": round(self._cpu() - self.c0, 1)}


def _make_data(data: Path, cfg: DemoConfig) -> dict:
    from hbseg.data import build_cache
    from hbseg.data.synth import SynthConfig, generate_dataset

    synth = SynthConfig(ids=cfg.patients, size=cfg.data_size, seed=cfg.seed,
                        test_ids=cfg.test_patients)
    # one process each: at demo sizes (1.6 s for 42 hands), starting worker processes
    # costs more than it saves
    made = generate_dataset(data, synth, workers=1, progress=cfg.progress, overwrite=True)
    cache = build_cache(data, workers=1, progress=False)
    return {"images": made["images"], "cached": cache["images"]}


def _train(data: Path, run: Path, cfg: DemoConfig) -> dict:
    from hbseg.dali_pipes.config import AugmentConfig
    from hbseg.train.config import TrainConfig
    from hbseg.train.trainer import train

    # hbseg-train's recipe; without augmentation CLAHE stays (part of the input)
    augment = (AugmentConfig.hand_xray() if cfg.augment
               else AugmentConfig.hand_xray(ssr_p=0.0, brightness_contrast_p=0.0))
    tcfg = TrainConfig(
        out=str(run), data=str(data), loader=cfg.loader, device="cpu", arch=cfg.arch,
        encoder=cfg.encoder, size=cfg.size, batch_size=cfg.batch_size, epochs=cfg.epochs,
        lr=cfg.lr, loss=cfg.loss, fold=0, workers=cfg.workers, seed=cfg.seed,
        val_every=cfg.val_every, progress=cfg.progress, augment=augment,
    )
    return train(tcfg, overwrite=True)


def _copy_fold(data: Path, dest: Path, fold: int) -> int:
    """Copy one fold's patients (images and JSON) into ``dest`` in the split layout, so
    hbseg-infer draws their ground truth beside the prediction; returns the image count."""
    from hbseg.data import default_cache_dir, load_cache_index
    from hbseg.data.layout import IMAGE_DIR, JSON_DIR

    index = load_cache_index(default_cache_dir(data))
    ids = sorted(index.loc[index["fold"] == fold, "id"].unique())
    if dest.exists():
        shutil.rmtree(dest)
    for pid in ids:
        for sub in (IMAGE_DIR, JSON_DIR):
            shutil.copytree(data / "train" / sub / pid, dest / sub / pid)
    return int((index["fold"] == fold).sum())


def _infer(checkpoint: Path, data: Path, csv: Path, overlays: Path, cfg: DemoConfig) -> dict:
    from hbseg.infer.config import InferConfig
    from hbseg.infer.infer import run_inference

    if overlays.exists():
        shutil.rmtree(overlays)
    icfg = InferConfig(checkpoints=(str(checkpoint),), data=str(data), out=str(csv),
                       device="cpu", overlays=str(overlays), overlay_max_side=512,
                       progress=cfg.progress)
    return run_inference(icfg)


def _bench(data: Path, out: Path, cfg: DemoConfig, log: Callable[[str], None]) -> dict:
    from hbseg.benchmarks.config import BenchConfig
    from hbseg.benchmarks.loaders_bench import run_loaders_bench

    # one timed epoch of bench_steps batches per phase: enough to rank the loaders on
    # loading alone, which is the figure the summary quotes; the README's table has medians
    bcfg = BenchConfig(
        data=str(data), loaders=tuple(cfg.bench_loaders), size=cfg.size, arch=cfg.arch,
        encoder=cfg.encoder, batch_size=cfg.batch_size, epochs=1, warmup_epochs=1,
        warmup_steps=0, steps_limit=cfg.bench_steps, amp="off", device="cpu", seed=cfg.seed,
        loss=cfg.loss, timeout_s=600.0,
    )
    return run_loaders_bench(bcfg, out, log=log, command="hbseg-demo",
                             notes=["hbseg-demo: a short run (one timed epoch per phase)"])


# -- the summary -------------------------------------------------------------------------
def loader_figures(results: dict) -> dict:
    """Per loader: loader-alone img/s and CPU s per image, or the failure; plus ratios
    of DALI's loading speed to the others'."""
    per: dict[str, dict] = {}
    for r in results.get("runs", []):
        name = r.get("loader")
        if name in (None, "bound"):
            continue
        if r.get("status") == "ok":
            per[name] = {"images_per_s": r.get("load_images_per_s"),
                         "cpu_s_per_image": r.get("cpu_s_per_sample_load")}
        else:
            per[name] = {"error": str(r.get("error", "failed"))}
    ratios = {}
    dali = per.get("dali", {}).get("images_per_s")
    for other in ("baseline", "torch"):
        rate = per.get(other, {}).get("images_per_s")
        if dali and rate:
            ratios[f"dali_vs_{other}"] = dali / rate
    return {"loaders": per, "ratios": ratios}


def plot_loader_alone(figures: dict, path: str | Path, title: str = "") -> Path | None:
    """Two bar charts, loader alone: images/s (higher is better) and CPU seconds per image
    (lower is better). The short benchmark's training epochs are left out: a few batches
    on a shared CPU time the model, not the loader. None when no loader succeeded."""
    from hbseg.atomic import atomic_savefig

    ok = {k: v for k, v in figures["loaders"].items() if "error" not in v}
    if not ok:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(ok)
    colours = {"baseline": "#9e9e9e", "torch": "#f28e2b", "dali": "#76b900"}
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=100)
    for ax, key, label, fmt in (
        (axes[0], "images_per_s", "images/s, loader alone (higher is better)", "%.0f"),
        (axes[1], "cpu_s_per_image", "CPU s per image (lower is better)", "%.3f"),
    ):
        bars = ax.bar(names, [ok[n][key] for n in names],
                      color=[colours.get(n, "#4e79a7") for n in names])
        ax.bar_label(bars, fmt=fmt, fontsize=8, padding=1)
        ax.set_title(label, fontsize=9)
        ax.margins(y=0.15)
        ax.spines[["top", "right"]].set_visible(False)
    atomic_savefig(fig, path, title)
    plt.close(fig)
    return Path(path)


def summary_block(s: dict) -> str:
    """The short block printed at the end (and saved as summary.txt)."""
    out = Path(s["out_dir"])

    def rel(p) -> str:
        return str(Path(p)) if p else "-"

    lines = [f"== hbseg demo done in {s['wall_s']:.0f} s wall, {s['cpu_s']:.0f} CPU s "
             f"({s['cores']} cores) =="]
    lines.append(f"run folder   {rel(s['run_dir'])}  (config.yaml, metrics.jsonl, best.pt)")
    lines.append(f"curves       {rel(s['curves'])}")
    lines.append(f"submission   {rel(s['submission'])}  ({s['test_images']} test images; "
                 f"pictures in {rel(s['overlays'])})")
    lines.append(f"validation   {rel(s['val_overlay'])}  (ground truth | prediction; all in "
                 f"{rel(s['val_overlays'])})")
    dice, orig = s.get("mean_dice"), s.get("val_dice_original")
    dice_txt = "n/a" if dice is None else f"{dice:.3f}"
    extra = "" if orig is None else f"; {orig:.3f} at the original {s['data_size']} px"
    lines.append(f"mean Dice    {dice_txt} on validation fold 0 ({s['val_images']} images, "
                 f"{s['size']} px, epoch {s['best_epoch']} of {s['epochs']}){extra}")
    bench = s.get("bench")
    if bench is None:
        lines.append("loaders      benchmark skipped")
    else:
        lines.append(f"benchmark    {rel(bench['plot'])}  (table: {rel(bench['table'])})")
        parts, cpu = [], []
        for name, f in bench["loaders"].items():
            if "error" in f:
                parts.append(f"{name} FAILED")
                cpu.append(f"{name} -")
            else:
                parts.append(f"{name} {f['images_per_s']:.0f} img/s")
                cpu.append(f"{name} {f['cpu_s_per_image']:.3f}")
        lines.append("loader alone " + ", ".join(parts))
        lines.append("CPU s/image  " + ", ".join(cpu) + "  (loading only)")
        ratios = bench["ratios"]
        if ratios:
            lines.append("loader ratio " + ", ".join(
                f"dali {v:.1f}x {k.split('_vs_')[1]}" for k, v in ratios.items()))
        else:
            lines.append(f"loader ratio n/a (a loader failed; see {out / 'bench' / 'logs'})")
    return "\n".join(lines)


# -- the run -----------------------------------------------------------------------------
def run_demo(out_dir: str | Path, cfg: DemoConfig = DemoConfig(),
             log: Callable[[str], None] = print) -> dict:
    """Run every step of the demo into ``out_dir``; returns the summary (also written as
    ``summary.json`` and, as text, ``summary.txt``)."""
    from hbseg.atomic import atomic_write_text, check_writable_dir

    out = check_writable_dir(out_dir)
    if cfg.threads is not None:
        import torch

        torch.set_num_threads(cfg.threads)
    atomic_write_text(out / "demo-config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
    data, run = out / "data", out / "run"
    clock = _Clock(log, 6 if cfg.bench else 5)
    made = clock.step(f"synthetic hands: {cfg.patients} patients + {cfg.test_patients} test, "
                      f"{cfg.data_size} px, and their mask cache",
                      lambda: _make_data(data, cfg))
    log(f"      {made['images']} images in {data}")
    trained = clock.step(f"training {cfg.arch}/{cfg.encoder} at {cfg.size} px for {cfg.epochs} "
                         f"epochs with the {cfg.loader} loader on CPU",
                         lambda: _train(data, run, cfg))
    best = run / "best.pt"
    test = clock.step("predicting the test hands",
                      lambda: _infer(best, data, out / "submission.csv", out / "overlays", cfg))
    val_dir = out / "val"
    n_val = clock.step("predicting the validation hands (ground truth beside prediction)",
                       lambda: (_copy_fold(data, val_dir, 0),
                                _infer(best, val_dir, out / "val-predictions.csv",
                                       out / "val-overlays", cfg)))
    val_images, val = n_val
    bench = None
    if cfg.bench:
        results = clock.step(f"loader benchmark: {', '.join(cfg.bench_loaders)} "
                             f"({cfg.bench_steps} batches per epoch)",
                             lambda: _bench(data, out / "bench", cfg, log))
        figures = loader_figures(results)
        machine = results.get("machine", {})
        title = (f"{cfg.data_size} px PNGs -> {cfg.size} px batches of {cfg.batch_size}, "
                 f"{machine.get('cpus_allowed') or len(os.sched_getaffinity(0))} CPU cores, "
                 f"no GPU")
        plot = plot_loader_alone(figures, out / "bench" / "loaders-alone.png", title)
        bench = {"plot": str(plot or out / "bench" / "loaders.png"),
                 "table": str(out / "bench" / "table.md"), **figures}

    def last_step() -> dict:
        overlays = sorted((out / "val-overlays").glob("*.png"))
        return {
            "out_dir": str(out),
            "run_dir": str(run),
            "curves": str(run / "curves.png"),
            "checkpoint": str(best),
            "submission": test["out"],
            "overlays": test["overlays"],
            "test_images": test["images"],
            "val_overlays": val["overlays"],
            "val_overlay": str(overlays[0]) if overlays else None,
            "val_images": val_images,
            "mean_dice": trained["best_mean_dice"],
            "best_epoch": trained["best_epoch"],
            "val_dice_original": val.get("overlay_mean_dice"),
            "epochs": cfg.epochs,
            "size": cfg.size,
            "data_size": cfg.data_size,
            "bench": bench,
        }

    summary = clock.step("summary", last_step)
    summary.update(clock.totals(), steps=clock.steps, cores=len(os.sched_getaffinity(0)),
                   config=cfg.to_dict())
    text = summary_block(summary)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out / "summary.txt", text + "\n")
    log("")
    log(text)
    return summary


# -- the command -------------------------------------------------------------------------
@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo"),
              show_default=True, help="Folder for everything the demo writes.")
@click.option("--patients", type=int, default=DemoConfig.patients, show_default=True,
              help="Synthetic train patients (two hands each; a fifth validate).")
@click.option("--data-size", type=int, default=DemoConfig.data_size, show_default=True,
              help="Side of the synthetic radiographs.")
@click.option("--size", type=int, default=DemoConfig.size, show_default=True,
              help="Training side in pixels.")
@click.option("--epochs", type=int, default=DemoConfig.epochs, show_default=True)
@click.option("--batch-size", type=int, default=DemoConfig.batch_size, show_default=True)
@click.option("--lr", type=float, default=DemoConfig.lr, show_default=True)
@click.option("--loader", type=click.Choice(["dali", "torch", "baseline"]),
              default=DemoConfig.loader, show_default=True, help="Training data loader.")
@click.option("--augment/--no-augment", default=DemoConfig.augment, show_default=True,
              help="Train with the default augmentation.")
@click.option("--seed", type=int, default=DemoConfig.seed, show_default=True,
              help="Seed of the synthetic data and of training.")
@click.option("--threads", type=int, default=None,
              help="torch threads [default: one per core].")
@click.option("--bench/--no-bench", default=True, show_default=True,
              help="Run the short loader benchmark.")
@click.option("--bench-steps", type=int, default=DemoConfig.bench_steps, show_default=True,
              help="Batches per benchmark epoch.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@debug_option
def demo(out: Path, patients: int, data_size: int, size: int, epochs: int, batch_size: int,
         lr: float, loader: str, augment: bool, seed: int, threads: int | None, bench: bool,
         bench_steps: int, progress: bool, debug: bool) -> None:
    """Synthetic hands -> training with DALI on CPU -> submission, pictures -> loader
    benchmark, with a summary at the end (about three minutes on 2 cores)."""
    try:
        cfg = DemoConfig(patients=patients, data_size=data_size, size=size, epochs=epochs,
                         batch_size=batch_size, lr=lr, loader=loader, augment=augment,
                         seed=seed, threads=threads, bench=bench, bench_steps=bench_steps,
                         progress=progress)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    run_demo(out, cfg, log=lambda m: click.echo(m, err=True))


_main = main_entry(demo)


def main() -> None:
    # OpenMP threads that spin while idle take the cores from DALI's threads (and from
    # anyone sharing the machine); must be set before torch is first imported
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _main()


if __name__ == "__main__":
    main()
