"""``hbseg-bench loaders``: every loader, side by side, in one run on one machine.

For each ``--cpus`` value the no-loading bound is measured first, then each loader, each
in its own fresh subprocess (``hbseg.benchmarks.worker``): clean CPU accounting, its own
core affinity, and a crash or a hang in one loader (killed after ``timeout_s``) is
recorded as that loader's failure while the others carry on. What one subprocess
measures is described in ``hbseg.benchmarks.measure``.

Any data set works: the hands, or a folder described by ``hbseg-dataset.yaml`` (its
cache, channels, classes and normalisation chosen as ``hbseg-train`` chooses them). The
``baseline`` loader rasterises the hands' JSON polygons, so it is hands-only.

Outputs in ``OUT``: ``results.json`` (config, machine, dataset, every run with its
per-epoch numbers and medians, ratios), ``table.md`` (the Markdown table also printed),
``loaders.png`` and ``logs/`` (each subprocess's output). ``results.json`` and
``table.md`` are rewritten after every run, so a benchmark killed mid-way keeps its finished
rows; a run stopped at its own time limit keeps what it measured until then (``timeout``
rows: start-up parts, finished epochs, ``timed out after N of M batches``).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hbseg.atomic import atomic_write_text, check_writable_dir
from hbseg.errors import ConfigError, DataError

from .affinity import thread_env
from .config import SCHEMA, BenchConfig

__all__ = ["SCHEMA", "run_loaders_bench", "prepare_data", "loaders_for_data",
           "HANDS_ONLY_LOADERS", "add_ratios", "merge_results", "write_outputs", "METHOD"]

HANDS_ONLY_LOADERS = ("baseline",)  # rasterise the hands' JSON polygons, read no other labels

METHOD = {
    "process": "each (loader, cpus) pair and the bound run in a fresh subprocess pinned to "
               "the first N allowed cores (os.sched_setaffinity, inherited by workers and "
               "threads); torch/OpenMP/OpenCV threads = N; DALI num_threads = N; DataLoader "
               "num_workers = min(--workers or N, N)",
    "load": "loader-only epochs: iterate the loader and discard the batches; after "
            "warmup_epochs untimed epochs; CUDA synchronised before and after; img/s = "
            "images / wall seconds",
    "train": "training epochs through hbseg.train.loop.train_one_epoch: same model init "
             "(seed), AdamW, AMP, bce_dice loss, grad clip 1.0, batch and step count for "
             "every loader; warmup_steps untimed steps first; epoch seconds include starting "
             "the iterator and a final CUDA synchronise",
    "gpu_idle_fraction": "CUDA only (absent on CPU, never 0): 1 - (sum over steps of the GPU "
                         "time between a CUDA event recorded before the step's forward pass "
                         "and one after its optimizer step) / training epoch wall time; the "
                         "share of the epoch in which the GPU ran no training step (loader "
                         "kernels, copies and mask unpacking count as idle)",
    "host_wait_s": "host seconds blocked in next(loader) per training epoch (on CUDA not GPU "
                   "idle time: queued kernels keep running); host_wait_fraction = that / "
                   "epoch wall time",
    "first_batch_s": "seconds of the first next(loader) of a training epoch (median); "
                     "first_batch_s_cold: the very first batch after building the loader",
    "pipeline_build_s": "DALI pipeline build, once per loader (the loader keeps it for every "
                        "epoch); build_s: the whole loader constructor (dali-cache: decoding "
                        "the data set into memory too)",
    "cpu_s_per_sample": "CPU seconds (user+system) of the whole process tree during the "
                        "timed epochs / images: main process with all its threads "
                        "(time.process_time, includes DALI and torch threads) + every live "
                        "descendant from /proc/<pid>/stat (DataLoader workers) + reaped "
                        "children (getrusage RUSAGE_CHILDREN); each second counted once",
    "bound": "no-loading bound: bound_batches real batches read once with OpenCV and kept "
             "on the device, replayed for the same number of training steps and batch "
             "sizes as a real epoch, through the same loop",
    "gpu": "NVML (pynvml) or nvidia-smi sampled every 100 ms during the timed training "
           "epochs: mean/max utilisation (counts the loader's own kernels as busy, so "
           "gpu_idle_fraction is the figure to read) and peak device memory used (includes "
           "DALI's allocations); torch peak allocated/reserved from torch.cuda",
    "ratios": "ratio_to_bound = bound training img/s / this training img/s (= epoch time "
              "over the bound's; 1.0 = loading costs nothing); speedup_vs_baseline = this "
              "training img/s / baseline's (= baseline epoch time over this one), both at "
              "the same --cpus",
    "statistic": "medians over the timed epochs",
}


# --------------------------------------------------------------------------- data


def prepare_data(root: str | Path, synth_ids: int | None = None, synth_size: int = 2048,
                 seed: int = 0, workers: int | None = None,
                 log: Callable[[str], None] = print) -> Path:
    """Make sure ROOT holds a data set and an up-to-date mask cache; return the cache folder.

    A described data set (``ROOT/hbseg-dataset.yaml``) has its cache built or refreshed in
    ``ROOT/hbseg-cache``, where ``hbseg-train`` keeps it; ``synth_ids`` does not apply to it
    (it generates synthetic hands, and only into a ROOT that holds no data set). For the hands, ``synth_ids`` synthetic patients
    are generated when ROOT holds none.
    """
    from hbseg.data.cache import build_cache, default_cache_dir
    from hbseg.data.layout import IMAGE_DIR
    from hbseg.data.spec import resolve_spec

    root = Path(root)
    spec = resolve_spec(root)
    if spec is not None:
        if synth_ids:
            log(f"--synth {synth_ids} ignored: {root} already holds data set {spec.name!r} "
                f"({spec.source}); --synth only fills an empty ROOT with synthetic hands")
        cache_dir = default_cache_dir(root, spec)
        summary = build_cache(root, cache_dir, workers=workers, progress=False, spec=spec)
    else:
        has_data = (root / "train" / IMAGE_DIR).is_dir() or (root / IMAGE_DIR).is_dir()
        if not has_data:
            if not synth_ids:
                raise DataError("no data set here (expected train/DCM/ID*/*.png, or a "
                                "description hbseg-dataset.yaml); pass --synth N to generate N "
                                "synthetic patients", root)
            from hbseg.data.synth import SynthConfig, generate_dataset

            log(f"generating {synth_ids} synthetic patients ({2 * synth_ids} images, "
                f"{synth_size} px) in {root}")
            generate_dataset(root, SynthConfig(ids=synth_ids, size=synth_size, seed=seed),
                             workers=workers, progress=False)
        cache_dir = default_cache_dir(root)
        summary = build_cache(root, cache_dir, workers=workers, progress=False)
    if not summary["up_to_date"]:
        log(f"mask cache: {summary['rasterised']} of {summary['images']} masks rasterised")
    return cache_dir


def loaders_for_data(loaders: tuple[str, ...], spec, explicit: bool = True,
                     log: Callable[[str], None] = print) -> tuple[str, ...]:
    """``loaders`` that can read this data set (``spec``; ``None``: the hands).

    The hands-only loaders (``baseline``) are left out of a default list on a described
    data set, with a line in the log; asked for by name (``explicit``), they are a
    ``ConfigError`` before anything runs.
    """
    loaders = tuple(loaders)
    hands_only = [k for k in loaders if k in HANDS_ONLY_LOADERS]
    if spec is None or not hands_only:
        return loaders
    if explicit:
        raise ConfigError(f"--loaders {hands_only[0]} reads the hands' JSON only and cannot load "
                          f"data set {spec.name!r}; leave it out (torch, dali and dali-cache "
                          f"read any described data set)")
    kept = tuple(k for k in loaders if k not in HANDS_ONLY_LOADERS)
    if not kept:
        raise ConfigError(f"no loader left for data set {spec.name!r}: "
                          f"{', '.join(hands_only)} read the hands only; pass --loaders torch,dali")
    log(f"{', '.join(hands_only)} left out of the default --loaders: it reads the hands' JSON "
        f"only, and this is data set {spec.name!r}")
    return kept


def _dataset_info(root: Path, cache_dir: Path) -> dict:
    """What the run measured: the data set's name, classes and channels (from the cache's
    description; the hands without one), and the images' count and size."""
    from hbseg.data.cache import load_cache_index
    from hbseg.data.classes import CLASSES
    from hbseg.data.spec import cache_spec

    spec = cache_spec(cache_dir)
    classes = CLASSES if spec is None else spec.classes
    index = load_cache_index(cache_dir)
    return {
        "name": "hands" if spec is None else spec.name,
        "description": None if spec is None else spec.to_dict(),
        "classes": list(classes),
        "num_classes": len(classes),
        "channels": 1 if spec is None else spec.channels,
        "root": str(root),
        "cache_dir": str(cache_dir),
        "images": len(index),
        "patients": int(index["id"].nunique()),
        "image_height_median": int(index["height"].median()),
        "image_width_median": int(index["width"].median()),
    }


def _dataset_note(dataset: dict) -> str:
    """One line for the table caption naming a described data set."""
    names = dataset["classes"]
    shown = ", ".join(names[:6]) + (", …" if len(names) > 6 else "")
    return (f"data set {dataset['name']!r}: {dataset['num_classes']} classes ({shown}), "
            f"{dataset['channels']}-channel images; baseline reads the hands only")


# --------------------------------------------------------------------------- subprocesses


def _package_root() -> str:
    import hbseg

    return str(Path(hbseg.__file__).resolve().parents[1])


def _spawn(job: dict, log_path: Path, timeout: float, threads: int | None) -> dict:
    """Run one job in ``python -m hbseg.benchmarks.worker``; its result, or an error (with
    what it measured before a timeout)."""
    spawned = time.time()
    r = _spawn_once(job, log_path, timeout, threads)
    if r.get("started_unix"):  # the interpreter's own start, before the worker's first line
        r["startup"] = {"process_start_s": max(0.0, r["started_unix"] - spawned),
                        **(r.get("startup") or {})}
    r["elapsed_s"] = time.time() - spawned
    return r


def _partial_row(partial: dict, timeout: float) -> dict:
    """A timed-out run's row from the worker's last ``.partial``: its start-up parts and
    finished epochs (medians over those), ``timed out after N of M batches``."""
    from .measure import load_summary, train_summary

    r = dict(partial)
    done = r.pop("load_batches_done", 0) + r.pop("train_batches_done", 0)
    planned = r.get("batches_planned")
    r["batches_done"] = done
    if r.get("load_epochs"):
        r.update(load_summary(r["load_epochs"]))
    if r.get("train_epochs"):
        r.update(train_summary(r["train_epochs"]))
    r["status"] = "timeout"
    r["error"] = (f"timed out after {done} of {planned} batches ({timeout:.0f} s)" if planned
                  else f"timed out after {timeout:.0f} s, before its first batch")
    return r


def _spawn_once(job: dict, log_path: Path, timeout: float, threads: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="hbseg-bench-") as tmp:
        job = dict(job, result=str(Path(tmp) / "result.json"))
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(job))
        env = os.environ.copy()
        if threads:
            env.update(thread_env(threads))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env["NO_ALBUMENTATIONS_UPDATE"] = "1"  # no version check over the network at import
        env.setdefault("TQDM_DISABLE", "1")
        cmd = [sys.executable, "-m", "hbseg.benchmarks.worker", str(job_path)]
        with open(log_path, "w") as log:
            # its own process group (killed as one), but our session, so that whatever ends
            # this command's session ends the measurement too; the worker also dies with us
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, preexec_fn=os.setpgrp)
            try:
                rc = proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
                rc = None
            except BaseException:  # Ctrl-C: take the whole measurement down with us
                _kill_group(proc)
                raise
            finally:
                _kill_group(proc)  # leftovers (orphaned workers) of the group we started
        result_path = Path(job["result"])
        if result_path.is_file():
            try:
                return json.loads(result_path.read_text())
            except ValueError:
                pass
        if timed_out:
            try:
                return _partial_row(json.loads(Path(f"{job['result']}.partial").read_text()),
                                    timeout)
            except (OSError, ValueError):
                pass
    tail = _tail(log_path)
    if timed_out:
        error = f"timed out after {timeout:.0f} s, before its first batch"
    elif rc is not None and rc < 0:
        error = f"killed by signal {signal.Signals(-rc).name}"
    else:
        error = f"exited with status {rc} without a result"
    return {"job": job["job"], "loader": job.get("kind"), "cpus": job.get("cpus"),
            "status": "timeout" if timed_out else "error",
            "error": f"{error}; last output: {tail}" if tail else error}


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(t.strip() for t in text[-lines:])[-600:]


# --------------------------------------------------------------------------- ratios


def add_ratios(runs: list[dict]) -> None:
    """Each run's ratio to the bound and speed-up over ``baseline`` at the same cores.

    Both are computed from time per image (training img/s), which equals the ratio of
    epoch times when the epochs hold the same images, and stays right when runs merged
    from several invocations used different ``--steps-limit`` values.
    """
    def by(loader: str) -> dict:
        return {r.get("cpus"): r for r in runs if r.get("loader") == loader and r.get("status") == "ok"}

    def ratio(a, b):
        return a / b if a and b else None

    bounds, baselines = by("bound"), by("baseline")
    for r in runs:
        if r.get("status") != "ok":
            continue
        speed = r.get("train_images_per_s")
        bound = bounds.get(r.get("cpus")) or {}
        base = baselines.get(r.get("cpus")) or {}
        r["ratio_to_bound"] = ratio(bound.get("train_images_per_s"), speed)
        r["speedup_vs_baseline"] = (None if r["loader"] == "bound"
                                    else ratio(speed, base.get("train_images_per_s")))
        r["load_speedup_vs_baseline"] = ratio(r.get("load_images_per_s"),
                                              base.get("load_images_per_s"))


# --------------------------------------------------------------------------- the run


def _label(kind: str, cpus: int | None) -> str:
    return f"{kind} cpus={cpus if cpus is not None else 'all'}"


def _slug(kind: str, cpus: int | None) -> str:
    return f"{kind}-cpus{cpus if cpus is not None else 'all'}"


def run_loaders_bench(cfg: BenchConfig, out: str | Path, log: Callable[[str], None] = print,
                      command: str | None = None, notes: list[str] | None = None,
                      plot: bool = True) -> dict:
    """Measure every loader at every ``--cpus`` value; write results.json, table.md and
    loaders.png into ``out`` and return the results."""
    from hbseg.data.cache import default_cache_dir
    from hbseg.data.spec import check_cache_spec, resolve_spec

    root = Path(cfg.data)
    spec = resolve_spec(root)
    loaders_for_data(cfg.loaders, spec)  # a hands-only loader on other data: fail before any run
    out = check_writable_dir(out)
    logs = check_writable_dir(out / "logs")
    cache_dir = default_cache_dir(root, spec)
    check_cache_spec(cache_dir, spec)
    dataset = _dataset_info(root, cache_dir)
    groups = "patients" if dataset["description"] is None else "groups"
    log(f"data: {dataset['name']}, {dataset['images']} images from {dataset['patients']} "
        f"{groups}, {dataset['image_width_median']}x{dataset['image_height_median']} px -> "
        f"{cfg.size} px, {dataset['channels']} channel(s), {dataset['num_classes']} classes")

    from .sysinfo import machine_info

    if cfg.device.startswith("cuda"):
        # in a subprocess: this process must not hold a CUDA context during the runs
        machine = _spawn({"job": "sysinfo", "gpu": True}, logs / "sysinfo.log", 300, None)
        if machine.get("status") != "ok":
            machine = machine_info(gpu=False)
    else:
        machine = machine_info(gpu=False)
    for k in ("job", "loader", "cpus", "status", "wall_s"):
        machine.pop(k, None)

    jobs = [("bound", None)] * cfg.bound + [("loader", k) for k in cfg.loaders]
    total = len(jobs) * len(cfg.cpus)
    runs: list[dict] = []
    all_notes = list(notes or [])
    if dataset["description"] is not None:
        all_notes.append(_dataset_note(dataset))
    if cfg.steps_limit:
        all_notes.append(f"epochs capped at {cfg.steps_limit} batches (--steps-limit)")
    if cfg.compile != "off":
        all_notes.append(f"model compiled (torch.compile, mode {cfg.compile}) for the bound and "
                         "every loader; compile time is each run's startup.first_step_s")
    for name, k in cfg.loader_steps:
        all_notes.append(f"{name}: epochs capped at {k} batches (--loader-steps), to fit its time")
    results = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "config": cfg.to_dict(),
        "machine": machine,
        "dataset": dataset,
        "method": METHOD,
        "notes": all_notes,
        "runs": runs,
    }
    done = 0
    for cpus in cfg.cpus:
        for job, kind in jobs:
            done += 1
            name = kind or "bound"
            timeout = cfg.timeout_for(name)
            log(f"[{done}/{total}] {_label(name, cpus)} (at most {timeout:.0f} s) ...")
            # a loader's own batch cap rides in its job's config: the worker reads steps_limit
            job_cfg = cfg.replace(steps_limit=cfg.steps_for(name)).to_dict()
            r = _spawn({"config": job_cfg, "cache_dir": str(cache_dir), "job": job,
                        "kind": kind, "cpus": cpus},
                       logs / f"{_slug(name, cpus)}.log", timeout,
                       cpus or machine.get("cpus_allowed"))
            if r.get("loader") is None:  # the bound's job has no kind, nor its partial row
                r["loader"] = name
            r.setdefault("cpus", cpus)
            if r.get("cpus") is None and cpus is None:
                r["cpus"] = machine.get("cpus_allowed")
            r.pop("job", None)
            runs.append(r)
            if r.get("status") == "ok":
                load = r.get("load_images_per_s")
                idle = r.get("gpu_idle_fraction")
                log(f"    train epoch {r['train_epoch_s']:.2f} s, host wait "
                    f"{r['host_wait_s']:.2f} s"
                    + ("" if idle is None else f", GPU idle {100 * idle:.0f}%")
                    + (f", loader alone {load:.1f} img/s" if load else ""))
            else:
                log(f"    FAILED: {r.get('error')}")
            # every finished row on disk now: a benchmark killed later keeps it
            add_ratios(runs)
            write_outputs(results, out, plot=False, log=log)

    add_ratios(runs)
    write_outputs(results, out, plot=plot, log=log)
    return results


def write_outputs(results: dict, out: str | Path, plot: bool = True,
                  log: Callable[[str], None] = print) -> None:
    """``results.json``, ``table.md`` and ``loaders.png`` into ``out`` (each atomically)."""
    from .report import markdown_table

    out = check_writable_dir(out)
    results["table_markdown"] = markdown_table(results)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1, default=str) + "\n")
    atomic_write_text(out / "table.md", results["table_markdown"] + "\n")
    if plot:
        from .plot import plot_loaders

        try:
            plot_loaders(results, out / "loaders.png")
        except Exception as e:  # noqa: BLE001 - numbers matter more than the figure
            log(f"plot failed: {type(e).__name__}: {e}")


_SAME = ("size", "arch", "encoder", "batch_size", "amp", "device", "seed", "loss", "data")


def merge_results(paths: list[str | Path]) -> dict:
    """One result from several runs (say one ``--cpus`` value each): their runs together,
    a later (loader, cores) replacing an earlier one, ratios recomputed. Settings that
    differ between the inputs are listed in ``notes``."""
    if not paths:
        raise DataError("no results.json to merge")
    parts = []
    for p in paths:
        p = Path(p)
        p = p / "results.json" if p.is_dir() else p
        try:
            parts.append(json.loads(p.read_text()))
        except FileNotFoundError:
            raise DataError("results file not found", p) from None
        except ValueError as e:
            raise DataError(f"not a results file ({e})", p) from None
        if parts[-1].get("schema") != SCHEMA:
            raise DataError(f"not an hbseg-bench loaders result (schema {parts[-1].get('schema')!r})", p)
    merged = json.loads(json.dumps(parts[0]))
    runs: dict[tuple, dict] = {}
    notes = list(merged.get("notes", []))
    for part, path in zip(parts, paths, strict=True):
        for r in part["runs"]:
            runs[(r.get("loader"), r.get("cpus"))] = r
        for n in part.get("notes", []):
            if n not in notes:
                notes.append(n)
        for key in _SAME:
            a, b = merged["config"].get(key), part["config"].get(key)
            if a != b:
                notes.append(f"{key} differs between merged runs: {a!r} vs {b!r} ({path})")
    cpus = sorted({r.get("cpus") for r in runs.values()}, key=lambda c: (c is None, c or 0))
    ordered = sorted(runs.values(), key=lambda r: (cpus.index(r.get("cpus")),
                                                   r.get("loader") != "bound"))
    merged["runs"] = ordered
    merged["config"]["cpus"] = cpus
    merged["notes"] = notes
    merged["merged_from"] = [str(p) for p in paths]
    merged["command"] = [p.get("command") for p in parts]
    add_ratios(merged["runs"])
    return merged
