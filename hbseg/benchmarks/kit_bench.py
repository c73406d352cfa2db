"""The kit's ``bench CPUS`` step: ``hbseg-bench loaders`` with each run's time sized from a
calibration, its finished rows kept whatever happens, its parts merged per machine.

The first GPU run gave every loader an equal share of the budget (45 s) while one run's
start-up alone took about 40 s there, and killed the benchmark before it wrote a row. Now:

- each run's limit is its expected time (start-up + batches × seconds per batch) × a margin;
  the expected times add up to the budget. Both
  figures come from ``WORK/bench/calibration.json``, written from the runs this machine
  measured (the bound's start-up and step, each loader's seconds per batch), else from the
  H200 figures of 2026-12-04 (45 s start-up, 108 ms per step at 1024 px, batch 8);
- runs go in order of value (bound, dali-cache, dali, torch, baseline); when they do not
  fit, every run takes fewer batches, and ``baseline`` (about 1 GB of labels per batch) gets
  what is left, capped with ``--loader-steps`` and noted in the table;
- ``hbseg-bench loaders`` rewrites ``results.json`` after each run, so a kill at the budget
  keeps the finished rows, and a run stopped at its own limit keeps what it measured;
- ``--loaders`` picks the runs: one benchmark split over several device commands, each
  part kept in WORK and merged with the others measured on this machine.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from hbseg.atomic import atomic_write_text

from .kit_base import (
    KitConfig,
    _Clock,
    _cores,
    _loaders_for,
    _py,
    _run,
    _tail,
    _threads,
    ensure_data,
)

__all__ = ["Calibration", "RunPlan", "calibration", "plan_runs", "step_bench"]

# the H200 of 2026-12-04: process start, model build and cudnn warm-up before the first
# timed step ~40 s; one bound step of UNet/efficientnet-b2 at 1024 px, batch 8, bf16 108 ms
GPU_STARTUP_S, GPU_STEP_S = 45.0, 0.108
DRY_STARTUP_S, DRY_STEP_S = 20.0, 0.5  # a loaded 2-core CPU runner
# baseline: CPU seconds per 2048² image (JSON, 29 full-size label planes, their resize)
BASELINE_CPU_S_PER_IMAGE = 1.0
ORDER = ("bound", "dali-cache", "dali", "torch", "baseline")  # most telling first
MIN_STEPS = 5
MERGE_S = 20.0  # hbseg-bench report and the bundle, after the runs


@dataclass(frozen=True)
class Calibration:
    startup_s: float  # one run's start, up to its first timed batch
    step_s: float  # one training step of the bound
    batch_s: dict  # loader -> seconds per batch it measured at these cores
    source: str


@dataclass(frozen=True)
class RunPlan:
    runs: tuple[str, ...]  # bound (if measured) and the loaders, in the order they run
    steps: int  # batches per epoch
    loader_steps: tuple[tuple[str, int], ...]  # fewer for a slow loader (baseline)
    timeouts: tuple[tuple[str, float], ...]
    expected_s: float  # what the plan expects the runs to take (limits are × the margin)
    notes: tuple[str, ...]


def _calibration_path(cfg: KitConfig) -> Path:
    return Path(cfg.work) / "bench" / "calibration.json"


def calibration(cfg: KitConfig, cpus: int) -> Calibration:
    """This machine's figures from earlier bench parts, else the defaults."""
    scale = (cfg.size / 1024) ** 2 * cfg.batch_size / 8
    startup, step = (DRY_STARTUP_S, DRY_STEP_S) if cfg.dry else (GPU_STARTUP_S, GPU_STEP_S * scale)
    base_cpu = BASELINE_CPU_S_PER_IMAGE * (cfg.synth_size / 2048) ** 2
    batch_s = {"baseline": base_cpu * cfg.batch_size / max(1, cpus)}
    source = "defaults (H200 2026-12-04)" if not cfg.dry else "defaults (dry run)"
    try:
        saved = json.loads(_calibration_path(cfg).read_text())
    except (OSError, ValueError):
        saved = {}
    if saved.get("startup_s"):
        startup, step = saved["startup_s"], saved["step_s"]
        source = f"measured on this machine ({saved.get('from')})"
    batch_s.update(saved.get("batch_s", {}).get(str(cpus), {}))
    return Calibration(startup, step, batch_s, source)


def _batches(cfg: KitConfig, steps: int, loader: bool) -> int:
    """As ``measure.planned_batches``: the bound only trains, a loader also reads alone."""
    train = min(cfg.bench_warmup_steps, steps) + cfg.bench_epochs * steps
    return train + (1 + (cfg.bench_warmup_epochs + cfg.bench_epochs) * steps if loader else 0)


def _expected(cfg: KitConfig, cal: Calibration, kind: str, steps: int) -> float:
    """Seconds one run should take: start-up, then its batches at the calibrated speed."""
    per_batch = max(cal.step_s, cal.batch_s.get(kind, cal.step_s))
    return cal.startup_s + _batches(cfg, steps, kind != "bound") * per_batch


def plan_runs(cfg: KitConfig, cal: Calibration, kinds: tuple[str, ...], bound: bool,
              available_s: float) -> RunPlan:
    """Runs, batches and time limits that fit ``available_s``: the expected times add up to
    it (fewer batches for all when they would not); each run's limit is its expected time ×
    the margin; the slow baseline runs last, on fewer batches when needed, with all that is
    left as its limit."""
    runs = tuple(k for k in ORDER if k in kinds or (k == "bound" and bound))
    runs += tuple(k for k in kinds if k not in runs)
    main = [k for k in runs if k != "baseline"]
    has_base = "baseline" in runs
    notes = []

    def total(steps: int) -> float:  # the baseline counted at its smallest useful size
        base = _expected(cfg, cal, "baseline", min(steps, MIN_STEPS)) if has_base else 0.0
        return sum(_expected(cfg, cal, k, steps) for k in main) + base

    steps = cfg.bench_steps
    while steps > MIN_STEPS and total(steps) > available_s:
        steps -= 1
    if steps < cfg.bench_steps:
        notes.append(f"{steps} batches per epoch instead of {cfg.bench_steps}, to fit "
                     f"{available_s:.0f} s")
    timeouts = {k: _expected(cfg, cal, k, steps) * cfg.bench_margin for k in main}
    loader_steps = []
    if has_base:
        left = available_s - sum(_expected(cfg, cal, k, steps) for k in main)
        k = steps
        while k > 1 and _expected(cfg, cal, "baseline", k) > left:
            k -= 1
        if k < steps:
            loader_steps.append(("baseline", k))
            notes.append(f"baseline: {k} batches per epoch, not {steps} (about "
                         f"{cal.batch_s['baseline']:.2f} s per batch, {max(0.0, left):.0f} s left)")
        # all that is left, no more: stopped by its own limit rather than by the step's
        # budget, its row keeps what it measured
        timeouts["baseline"] = max(10.0, left)
    expected = sum(_expected(cfg, cal, k, dict(loader_steps).get(k, steps)) for k in runs)
    return RunPlan(runs, steps, tuple(loader_steps), tuple((k, round(timeouts[k], 1)) for k in runs),
                   round(expected, 1), tuple(notes))


def _save_calibration(cfg: KitConfig, cpus: int, runs: list[dict], part: str) -> None:
    """The bound's start-up and step, and each loader's seconds per batch, for the next
    bench part on this machine."""
    path = _calibration_path(cfg)
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = {}
    for r in runs:
        st = r.get("startup") or {}
        elapsed, epochs = r.get("elapsed_s"), r.get("train_epochs") or []
        if r.get("loader") == "bound" and r.get("status") == "ok" and elapsed and epochs:
            timed = sum(e["seconds"] for e in epochs)
            saved["startup_s"] = round(elapsed - timed, 1)  # everything but the timed steps
            saved["step_s"] = timed / max(1, len(epochs) * r["batches_per_epoch"])
            saved["startup_parts"] = st
            saved["from"] = part
    for r in runs:
        done = r.get("batches_done") or r.get("batches_planned")
        if r.get("loader") != "bound" and r.get("elapsed_s") and done and saved.get("startup_s"):
            per = max(0.0, r["elapsed_s"] - saved["startup_s"]) / done
            saved.setdefault("batch_s", {}).setdefault(str(cpus), {})[r["loader"]] = round(per, 4)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(saved, indent=1) + "\n")


def _has_bound(cfg: KitConfig, cpus: int) -> bool:
    """An earlier part on this machine measured the bound at these cores, same plan."""
    for p in (Path(cfg.work) / "bench" / f"cpus-{cpus}").glob("*/results.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            res = json.loads(p.read_text())
            if any(r.get("loader") == "bound" and r.get("status") == "ok" for r in res["runs"]):
                return True
    return False


def step_bench(cfg: KitConfig, d: Path, clock: _Clock, notes: dict, cpus: int) -> tuple[bool, str]:
    have = _cores()
    if cpus > have:
        if not cfg.dry:
            return False, f"{cpus} cores asked for, this machine gives {have}"
        cpus = have
    root = ensure_data(cfg)
    kinds = cfg.bench_loaders or _loaders_for(cfg)
    bound = not (cfg.bench_loaders and _has_bound(cfg, cpus))
    cal = calibration(cfg, cpus)
    # the loaders command's own start (a sysinfo process on CUDA) and the merge come out first
    available = clock.left() - MERGE_S - (0 if cfg.dry else 15)
    plan = plan_runs(cfg, cal, kinds, bound, available)
    notes["calibration"] = asdict(cal)
    notes["plan"] = asdict(plan)
    part = "+".join(plan.runs)
    run = d / "run"
    cmd = _py("hbseg.benchmarks.cli", "loaders", "--data", str(root),
              "--loaders", ",".join(k for k in plan.runs if k != "bound"),
              "--size", str(cfg.size), "--arch", cfg.arch, "--encoder", cfg.encoder,
              "--batch-size", str(cfg.batch_size), "--cpus", str(cpus),
              "--epochs", str(cfg.bench_epochs), "--warmup-epochs", str(cfg.bench_warmup_epochs),
              "--warmup-steps", str(cfg.bench_warmup_steps), "--steps-limit", str(plan.steps),
              "--amp", cfg.amp, "--device", cfg.device.split(":")[0],
              "--timeout", f"{max(t for _, t in plan.timeouts):.0f}",
              "--run-timeout", ",".join(f"{k}={t:.0f}" for k, t in plan.timeouts),
              "--note", f"hbseg-bench kit bench {cpus}; calibration: {cal.source}",
              "--out", str(run))
    if plan.loader_steps:
        cmd += ["--loader-steps", ",".join(f"{k}={n}" for k, n in plan.loader_steps)]
    if not bound:
        cmd.append("--no-bound")
    for note in plan.notes:
        cmd += ["--note", note]
    rc, secs = _run(cmd, d / "loaders.log", clock.left() - MERGE_S / 2, _threads(cfg),
                    notes["commands"])
    try:  # rewritten after each run: whatever finished before a kill is here
        runs = json.loads((run / "results.json").read_text())["runs"]
    except (OSError, ValueError, KeyError):
        return False, f"no results.json (rc {rc}): {_tail(d / 'loaders.log')}"
    keep = Path(cfg.work) / "bench" / f"cpus-{cpus}" / part  # parts this machine measured
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy2(run / "results.json", keep / "results.json")
    _save_calibration(cfg, cpus, runs, f"bench {cpus}: {part}")
    parts = sorted((Path(cfg.work) / "bench").glob("cpus-*/*/results.json"),
                   key=lambda p: p.stat().st_mtime)  # a later part replaces an earlier row
    mrc, _ = _run(_py("hbseg.benchmarks.cli", "report", *map(str, parts), "--out", str(d / "merged")),
                  d / "report.log", max(10.0, clock.left()), _threads(cfg), notes["commands"])
    with contextlib.suppress(OSError):
        notes["table"] = (d / "merged" / "table.md").read_text()
    cells = []
    for r in runs:
        if r.get("status") != "ok":
            cells.append(f"{r.get('loader')} FAILED ({str(r.get('error', ''))[:60]})")
            continue
        ratio = r.get("ratio_to_bound")
        cells.append(f"{r['loader']} {r['train_epoch_s']:.2f} s"
                     + (f" ({ratio:.2f}× bound)" if ratio and r["loader"] != "bound" else ""))
    missing = [k for k in plan.runs if k not in {r.get("loader") for r in runs}]
    if missing:
        cells.append("not reached: " + ", ".join(missing))
    ok = rc == 0 and mrc == 0 and not missing and all(r.get("status") == "ok" for r in runs)
    capped = "".join(f", {k} {n}" for k, n in plan.loader_steps)
    line = (f"{cpus} cores, {plan.steps} steps/epoch{capped}, {secs:.0f} s: " + ", ".join(cells)
            + f"; merged {len(parts)} part(s)" + ("" if rc != 124 else "; budget ended"))
    return ok, line
