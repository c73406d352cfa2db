"""``hbseg-bench kit STEP``: the named steps of a lent GPU session, each sized to finish
inside one 10-minute device command, each writing what it measured under ``OUT/<step>/``
(``kit.json`` plus the step's own files) and returning one summary line.

Steps: ``env`` (machine and versions), ``test`` (``pytest -m gpu``), ``ops`` (per-operation
costs, pipeline build and first-batch latency per back-end), ``bench CPUS`` (every loader
pinned to CPUS cores, merged with earlier core counts measured on this machine) and
``quality`` (one dali-cache training run, continued across commands).

Data and runs live in a machine-local work folder (``/tmp/hbseg-kit``): ``$OUT`` starts
empty on every device command, but /tmp survives while the machine stays warm. The data
set is generated once per machine and reused while its marker matches; a fresh machine
starts everything from scratch. Every part runs in a subprocess with a timeout, so a hang
costs its share of the budget, never the summary line.

``dry=True`` (``--dry`` or ``HBSEG_GPU_DRY=1``) shrinks every size to a few seconds on
CPU so that the test suite runs every step's code path between GPU sessions.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from hbseg.atomic import atomic_path, atomic_write_text, check_writable_dir
from hbseg.errors import ConfigError
from hbseg.train.metrics_file import read_metrics

from .kit_base import (
    STEPS,
    KitConfig,
    StepResult,
    _base_env,
    _Clock,
    _cores,
    _kill,
    _loaders_for,
    _log,
    _popen,
    _py,
    _run,
    _smi,
    _tail,
    _threads,
    default_out,
    default_work,
    dry_requested,
    ensure_data,
    real_hands_dir,
)
from .kit_bench import step_bench
from .kit_test import step_test

__all__ = ["STEPS", "KitConfig", "StepResult", "run_step", "ensure_data", "real_hands_dir",
           "default_out", "default_work", "dry_requested"]


# --------------------------------------------------------------------------- steps


def _step_env(cfg: KitConfig, d: Path, clock: _Clock, notes: dict) -> tuple[bool, str]:
    from importlib import metadata

    from .sysinfo import machine_info

    info = machine_info(gpu=True)
    extra = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith(("cupy", "nvidia-dali", "nvidia-nvimgcodec", "pynvml", "nvidia-ml-py")):
            extra[name] = dist.version
    info["versions"].update(extra)
    try:
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            info["gpu_free_gb"], info["gpu_total_gb"] = round(free / 2**30, 1), round(total / 2**30, 1)
    except Exception as e:  # noqa: BLE001 - a broken driver is what this step reports
        info["cuda_error"] = f"{type(e).__name__}: {e}"
    smi = shutil.which("nvidia-smi")
    if smi:
        r = subprocess.run([smi], capture_output=True, text=True, timeout=30)
        (d / "nvidia-smi.txt").write_text(r.stdout + r.stderr)
    hands = real_hands_dir()
    info["real_hands"] = {"dir": str(hands), "pngs": len(list(hands.glob("*.png"))) if hands.is_dir() else 0}
    info["nvidia_smi"] = smi
    atomic_write_text(d / "env.json", json.dumps(info, indent=1, default=str) + "\n")
    notes["env"] = info
    v = info["versions"]
    cupy = next((ver for k, ver in extra.items() if k.startswith("cupy")), None)
    mem = (f"{info['gpu_free_gb']}/{info['gpu_total_gb']} GiB free" if "gpu_free_gb" in info
           else "no GPU memory")
    line = (f"{info['gpu_name'] or 'no GPU'}, driver {info['driver']}, CUDA {v.get('cuda')}, "
            f"torch {v.get('torch')}, dali {v.get('dali')}, cupy {cupy}, "
            f"smp {v.get('segmentation_models_pytorch')}, {mem}, {info['cpus_allowed']} cores, "
            f"real hands {info['real_hands']['pngs']}")
    return (cfg.dry or info["gpu_name"] is not None), line


def _latency_main(args_json: str) -> None:
    """Child process of the ``ops`` step: build one back-end, time its first two batches."""
    a = json.loads(args_json)
    t0 = time.perf_counter()
    import torch

    from hbseg.dali_pipes.config import AugmentConfig, LoaderConfig
    from hbseg.data.cache import load_cache_index
    from hbseg.loaders import build_loader

    out = {"loader": a["kind"], "device": a["device"], "import_s": time.perf_counter() - t0}
    cuda = a["device"].startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    t = time.perf_counter()
    if cuda:  # the context's own cost, kept out of the back-end's build time
        torch.zeros(1, device=a["device"])
        sync()
    out["cuda_init_s"] = time.perf_counter() - t
    index = load_cache_index(a["cache"])
    cfg = LoaderConfig(size=a["size"], batch_size=a["batch_size"], num_threads=a["threads"],
                       augment=AugmentConfig.hand_xray())  # what hbseg-train loads
    t = time.perf_counter()
    loader = build_loader(a["kind"], index, cfg, "train", a["device"])
    out["pipeline_build_s"] = time.perf_counter() - t  # the whole constructor
    out["dali_build_s"] = getattr(loader, "pipeline_build_s", None)  # pipe.build() alone
    t = time.perf_counter()
    it = iter(loader)
    image, _ = next(it)
    sync()
    out["first_batch_s"] = time.perf_counter() - t
    t = time.perf_counter()
    next(it)
    sync()
    out["second_batch_s"] = time.perf_counter() - t
    out["batch_shape"] = list(image.shape)
    out["images"] = len(index)
    Path(a["result"]).write_text(json.dumps(out) + "\n")


def _step_ops(cfg: KitConfig, d: Path, clock: _Clock, notes: dict) -> tuple[bool, str]:
    root = ensure_data(cfg)
    threads = _cores()
    cmd = _py("hbseg.benchmarks.cli", "ops", "--data", str(root), "--size", str(cfg.size),
              "--batch-size", str(cfg.batch_size), "--device", cfg.device.split(":")[0],
              "--iters", str(cfg.ops_iters), "--warmup", str(cfg.ops_warmup),
              "--repeats", str(cfg.ops_repeats), "--out", str(d / "ops"))
    rc, secs = _run(cmd, d / "ops.log", clock.left() * 0.6, _threads(cfg), notes["commands"])
    rows = []
    try:
        rows = json.loads((d / "ops" / "ops.json").read_text())["ops"]
    except (OSError, ValueError, KeyError):
        pass
    bad = sum(r.get("status") != "ok" for r in rows)
    kinds = _loaders_for(cfg)
    latency = []
    for i, kind in enumerate(kinds):
        share = clock.left() / (len(kinds) - i)
        result = d / f"latency-{kind}.json"
        args = {"kind": kind, "device": cfg.device, "size": cfg.size, "batch_size": cfg.batch_size,
                "threads": threads, "cache": str(root / "hbseg-cache"), "result": str(result)}
        code = f"from hbseg.benchmarks.kit import _latency_main; _latency_main({json.dumps(json.dumps(args))})"
        lrc, _ = _run([sys.executable, "-c", code], d / f"latency-{kind}.log", share, _threads(cfg),
                      notes["commands"])
        try:
            latency.append(json.loads(result.read_text()))
        except (OSError, ValueError):
            latency.append({"loader": kind, "status": "failed", "rc": lrc,
                            "error": _tail(d / f"latency-{kind}.log")})
    atomic_write_text(d / "latency.json", json.dumps(latency, indent=1) + "\n")
    notes["latency"] = latency
    fmt = ", ".join(f"{r['loader']} {r['pipeline_build_s']:.1f}+{r['first_batch_s']:.1f} s"
                    if "first_batch_s" in r else f"{r['loader']} failed" for r in latency)
    ok = rc == 0 and bad == 0 and all("first_batch_s" in r for r in latency)
    line = (f"{len(rows)} op rows ({bad} failed) in {secs:.0f} s (rc {rc}); build+first batch: {fmt}")
    return ok, line


def _step_quality(cfg: KitConfig, d: Path, clock: _Clock, notes: dict) -> tuple[bool, str]:
    root = ensure_data(cfg)
    run = Path(cfg.work) / "runs" / "quality"
    plan = {"data": json.loads((root / "kit-data.json").read_text()), "loader": cfg.quality_loader,
            "arch": cfg.arch, "encoder": cfg.encoder, "size": cfg.size, "batch_size": cfg.batch_size,
            "epochs": cfg.quality_epochs, "amp": cfg.amp}
    try:
        same = json.loads((run / "kit-run.json").read_text()) == plan
    except (OSError, ValueError):
        same = False
    resume = same and (run / "last.pt").is_file()
    before = len(read_metrics(run / "metrics.jsonl")) if resume else 0
    if before >= cfg.quality_epochs:
        return _quality_report(cfg, run, d, before, 0, "finished")
    if resume:
        cmd = _py("hbseg.train.cli", "--resume", str(run), "--no-progress")
    else:
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        atomic_write_text(run / "kit-run.json", json.dumps(plan) + "\n")
        cmd = _py("hbseg.train.cli", "--data", str(root), "--loader", cfg.quality_loader,
                  "--device", cfg.device, "--arch", cfg.arch, "--encoder", cfg.encoder,
                  "--size", str(cfg.size), "--batch-size", str(cfg.batch_size),
                  "--epochs", str(cfg.quality_epochs), "--amp", cfg.amp,
                  "--workers", str(1 if cfg.dry else _cores()), "--no-progress", "--out", str(run),
                  "--overwrite")
    if cfg.quality_slice_epochs:
        cmd += ["--stop-after", str(before + cfg.quality_slice_epochs)]
    rc = _train_until(cmd, run, d / "train.log", clock, notes, _threads(cfg))
    done = len(read_metrics(run / "metrics.jsonl"))
    state = "finished" if done >= cfg.quality_epochs else "continue with: hbseg-bench kit quality"
    ok, line = _quality_report(cfg, run, d, done, done - before, state)
    notes["quality"] = json.loads((d / "quality.json").read_text())
    return ok and rc in (0, 130) and (done > before), line + f" (rc {rc})"


def _train_until(cmd: list[str], run: Path, log_path: Path, clock: _Clock, notes: dict,
                 env: dict) -> int:
    """Run hbseg-train; once the next epoch would end past the budget, Ctrl-C it: the
    trainer then finishes the epoch in progress, saves last.pt and exits 130. A second
    Ctrl-C at the budget's end stops at once (last.pt keeps the previous epoch)."""
    _log("$ " + " ".join(cmd))
    notes["commands"].append(" ".join(cmd))
    env = {**_base_env(), **env}
    slack = 10.0
    with open(log_path, "w") as log:
        proc = _popen(cmd, log, env)
        asked = 0
        try:
            while proc.poll() is None:
                time.sleep(0.5)
                secs = [r.get("epoch_seconds") or 0 for r in read_metrics(run / "metrics.jsonl")]
                epoch_s = max(secs[-3:]) if secs else 0.0
                if asked == 0 and clock.left() < 1.2 * epoch_s + slack:
                    proc.send_signal(signal.SIGINT)
                    asked = 1
                elif asked == 1 and clock.left() <= 0:
                    proc.send_signal(signal.SIGINT)
                    asked = 2
                elif asked == 2 and clock.left() <= -slack:
                    _kill(proc)
        finally:
            if proc.poll() is None:
                _kill(proc)
        return proc.returncode


def _quality_report(cfg: KitConfig, run: Path, d: Path, done: int, new: int, state: str):
    recs = read_metrics(run / "metrics.jsonl")
    for name in ("metrics.jsonl", "config.yaml", "curves.png", "kit-run.json"):
        if (run / name).is_file():
            shutil.copy2(run / name, d / name)
    dice = [(r["mean_dice"], r["epoch"]) for r in recs if r.get("mean_dice") is not None]
    best = max(dice) if dice else (None, None)
    recent = recs[-new:] if new else recs[-1:]
    med = sorted(r["epoch_seconds"] for r in recent)[len(recent) // 2] if recent else None
    ips = sorted(r["images_per_s"] for r in recent)[len(recent) // 2] if recent else None
    gpu = _smi("name")
    summary = {"epochs_done": done, "epochs": cfg.quality_epochs, "new_epochs": new,
               "best_mean_dice": best[0], "best_epoch": best[1], "epoch_s_median": med,
               "train_images_per_s_median": ips, "device": gpu[0] if gpu else cfg.device,
               "state": state}
    atomic_write_text(d / "quality.json", json.dumps(summary, indent=1) + "\n")
    b = "—" if best[0] is None else f"{best[0]:.4f} at epoch {best[1]}"
    speed = "" if med is None else f", {med:.1f} s/epoch, {ips:.0f} img/s"
    return True, (f"{done}/{cfg.quality_epochs} epochs (+{new} now), best mean Dice {b}{speed}; "
                  f"{state}")


# --------------------------------------------------------------------------- entry


@contextlib.contextmanager
def _exit_on_sigterm():
    """While a step runs, SIGTERM (a device command's time limit) becomes SystemExit, so
    the ``finally`` clauses above kill the step's subprocesses instead of leaving them on
    the GPU for the next command."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_step(step: str, cfg: KitConfig, cpus: int | None = None) -> StepResult:
    """Run one step; everything it measured goes to ``OUT/<step>`` (``OUT/bench-CPUS`` for
    bench), with ``kit.json`` holding the config, the commands and the summary line."""
    if step not in STEPS:
        raise ConfigError(f"unknown kit step {step!r}. Valid: {', '.join(STEPS)}")
    if (step == "bench") != (cpus is not None):
        raise ConfigError("bench needs a core count (hbseg-bench kit bench 16), and only bench takes one")
    name = f"bench-{cpus}" if step == "bench" else step
    d = check_writable_dir(Path(cfg.out) / name)
    Path(cfg.work).mkdir(parents=True, exist_ok=True)
    clock = _Clock(cfg.budget_s)
    notes: dict = {"commands": []}
    try:
        with _exit_on_sigterm():
            if step == "bench":
                ok, summary = step_bench(cfg, d, clock, notes, cpus)
            else:
                ok, summary = {"env": _step_env, "test": step_test, "ops": _step_ops,
                               "quality": _step_quality}[step](cfg, d, clock, notes)
    except Exception as e:  # noqa: BLE001 - the summary line must come whatever broke
        import traceback

        (d / "error.txt").write_text(traceback.format_exc())
        ok, summary = False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    result = StepResult(f"bench {cpus}" if step == "bench" else step, ok, summary, clock.elapsed())
    result = replace(result, summary=f"{summary} [{result.seconds:.0f} s]")
    if cfg.bundle:
        notes["bundle"] = _bundle(d, name)
    atomic_write_text(d / "kit.json", json.dumps({
        "step": step, "cpus": cpus, "ok": ok, "line": result.line, "seconds": result.seconds,
        "config": asdict(cfg), **notes}, indent=1, default=str) + "\n")
    return result


def _bundle(d: Path, name: str) -> list[str]:
    """Everything the step wrote into ``d`` goes into ``d/<name>.tar.gz`` (the originals
    removed): a device command brings back at most 8 files, two folders deep."""
    import tarfile

    files = sorted(p for p in d.rglob("*") if p.is_file() and p.name != "kit.json"
                   and p.name != f"{name}.tar.gz")
    with atomic_path(d / f"{name}.tar.gz") as tmp, tarfile.open(tmp, "w:gz") as tar:
        for p in files:
            tar.add(p, arcname=str(p.relative_to(d)))
    for p in files:
        p.unlink()
    for sub in sorted((p for p in d.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    return [str(p.relative_to(d)) for p in files]
