"""The benchmark's Markdown tables: one row per (loader, cores), failures listed below."""

from __future__ import annotations

import json
import numbers
from pathlib import Path

__all__ = ["markdown_table", "COLUMNS", "ops_table", "read_results"]

# (header, what it means) — benchmarks/README.md explains each at length
COLUMNS = (
    ("loader", "back-end (bound: no loading, batches resident on the device)"),
    ("cores", "CPU cores the run was pinned to"),
    ("GPU idle", "share of the training epoch in which the GPU ran no training step (CUDA only)"),
    ("threads", "DALI num_threads or DataLoader num_workers"),
    ("load img/s", "loader alone, images per second"),
    ("epoch s", "training epoch wall time (median)"),
    ("train img/s", "training images per second"),
    ("host wait s", "host seconds per epoch blocked in next(loader) (not GPU idle time)"),
    ("1st batch s", "first next(loader) of a training epoch"),
    ("CPU s/img load", "CPU seconds per image, loader alone (process tree)"),
    ("CPU s/img train", "CPU seconds per image while training (process tree)"),
    ("GPU util", "mean NVML utilisation during training (counts the loader's own kernels)"),
    ("GPU mem GB", "peak device memory used during training"),
    ("× bound", "epoch time / no-loading bound's (1.00 = free loading)"),
    ("vs baseline", "baseline epoch time / this epoch time"),
)


def _f(x, fmt: str, suffix: str = "") -> str:
    return "—" if x is None else f"{x:{fmt}}{suffix}"


def _sec(x) -> str:
    if x is None:
        return "—"
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _rate(x) -> str:
    if x is None:
        return "—"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def _cpu(x) -> str:
    if x is None:
        return "—"
    return f"{x:.3f}" if x < 1 else f"{x:.2f}"


def _row(r: dict) -> list[str]:
    name = "**bound**" if r["loader"] == "bound" else r["loader"]
    if r.get("status") != "ok":
        if r.get("train_epoch_s") is None and r.get("load_images_per_s") is None:
            return [name, str(r.get("cpus") or "—"), "—", "—", "failed¹", *["—"] * 10]
        name += " (partial¹)"  # timed out: the epochs it finished, footnote says how many
    gpu = r.get("gpu") or {}
    return [
        name,
        str(r.get("cpus") or "—"),
        _f(None if r.get("gpu_idle_fraction") is None else 100 * r["gpu_idle_fraction"], ".1f", "%"),
        "—" if r.get("num_threads") is None else str(r["num_threads"]),
        _rate(r.get("load_images_per_s")),
        _sec(r.get("train_epoch_s")),
        _rate(r.get("train_images_per_s")),
        _sec(r.get("host_wait_s")),
        _sec(r.get("first_batch_s")),
        _cpu(r.get("cpu_s_per_sample_load")),
        _cpu(r.get("cpu_s_per_sample_train")),
        _f(gpu.get("util_mean"), ".0f", "%"),
        _f(gpu.get("mem_used_peak_gb", gpu.get("torch_peak_reserved_gb")), ".1f"),
        _f(r.get("ratio_to_bound"), ".2f"),
        _f(r.get("speedup_vs_baseline"), ".2f", "×"),
    ]


def markdown_table(results: dict) -> str:
    """The results as a Markdown table (one row per run), then one line per failure."""
    header = [c[0] for c in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    failures = []
    for r in results["runs"]:
        lines.append("| " + " | ".join(_row(r)) + " |")
        if r.get("status") != "ok":
            failures.append(f"{r['loader']} (cores={r.get('cpus')}): {r.get('error')}")
    cfg, m = results.get("config", {}), results.get("machine", {})
    ds = results.get("dataset", {})
    gpu = m.get("gpu_name") or "no GPU"
    caption = (
        f"{cfg.get('arch')}/{cfg.get('encoder')}, {cfg.get('size')} px, batch "
        f"{cfg.get('batch_size')}, {ds.get('images')} images of "
        f"{ds.get('image_width_median')} px per epoch"
        + (f" (capped at {cfg['steps_limit']} batches)" if cfg.get("steps_limit") else "")
        + f", device {cfg.get('device')}, amp {_amp(results)}; {m.get('cpu_model')} "
        f"({m.get('cpus_allowed')} cores), {gpu}; medians of {cfg.get('epochs')} epochs."
    )
    out = "\n".join(lines) + "\n\n" + caption
    env = m.get("env") or {}
    if env:
        out += " Environment: " + ", ".join(f"{k}={v}" for k, v in sorted(env.items())) + "."
    for note in results.get("notes") or []:
        out += f"\n\nNote: {note}"
    if failures:
        out += "\n\n" + "\n".join(f"¹ {f}" for f in failures)
    return out


def _amp(results: dict) -> str:
    for r in results.get("runs", []):
        if r.get("amp"):
            return r["amp"]
    return results.get("config", {}).get("amp", "?")


def ops_table(results: dict) -> str:
    """``hbseg-bench ops`` results: one row per (operation, implementation, device)."""
    lines = ["| operation | implementation | device | ms / image | images/s | note |",
             "|---|---|---|---|---|---|"]
    for r in results["ops"]:
        if r.get("status") != "ok":
            lines.append(f"| {r['op']} | {r['impl']} | {r['device']} | — | — | "
                         f"failed: {str(r.get('error', ''))[:80]} |")
            continue
        ms = r["ms_per_image"]
        lines.append(f"| {r['op']} | {r['impl']} | {r['device']} | {ms:.3f} | "
                     f"{1000.0 / ms if ms > 0 else float('inf'):.0f} | {r.get('note', '')} |")
    return "\n".join(lines)


# the numbers a run's row shows: each one a number or null in a results.json
_NUMBERS = ("cpus", "num_threads", "gpu_idle_fraction", "load_images_per_s", "train_epoch_s",
            "train_images_per_s", "host_wait_s", "first_batch_s", "cpu_s_per_sample_load",
            "cpu_s_per_sample_train")
_GPU_NUMBERS = ("util_mean", "mem_used_peak_gb", "torch_peak_reserved_gb")


def _kind(v) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(v), "a number")


def read_results(path: str | Path) -> dict:
    """The ``hbseg-bench loaders`` result in ``path`` (a ``results.json`` or its folder),
    checked for the shape the table needs, so that a file of another shape is one line
    naming it and the first thing out of place (not a failure deep in the table code)."""
    from hbseg.errors import DataError
    from hbseg.regular_files import read_text_regular

    from .config import SCHEMA

    path = Path(path)
    path = path / "results.json" if path.is_dir() else path
    try:
        doc = json.loads(read_text_regular(path, "a results.json"))
    except FileNotFoundError:
        raise DataError("results file not found", path) from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DataError(f"not a results file ({str(e).splitlines()[0] if str(e) else type(e).__name__})",
                        path) from None

    def bad(where: str, v, expected: str) -> DataError:
        return DataError(f"not an hbseg-bench loaders result: {where} is {_kind(v)}; expected "
                         f"{expected}", path)

    if not isinstance(doc, dict):
        raise bad("the file", doc, f"an object with \"schema\": {SCHEMA!r} and \"runs\"")
    if doc.get("schema") != SCHEMA:
        raise DataError(f"not an hbseg-bench loaders result (schema {doc.get('schema')!r}, "
                        f"expected {SCHEMA!r})", path)
    for key in ("config", "machine", "dataset"):
        if not isinstance(doc.get(key, {}), dict):
            raise bad(f'"{key}"', doc[key], "an object")
    if not isinstance(doc.get("runs"), list):
        raise bad('"runs"', doc.get("runs"), "a list of runs")
    if not isinstance(doc.get("notes", []), list):
        raise bad('"notes"', doc["notes"], "a list")
    for i, r in enumerate(doc["runs"]):
        if not isinstance(r, dict):
            raise bad(f"run {i}", r, "an object")
        if not isinstance(r.get("loader"), str):
            raise bad(f'run {i}\'s "loader"', r.get("loader"), "a string")
        if not isinstance(r.get("gpu") or {}, dict):
            raise bad(f'run {i}\'s "gpu"', r["gpu"], "an object")
        for where, d, keys in (("", r, _NUMBERS), ('"gpu" ', r.get("gpu") or {}, _GPU_NUMBERS)):
            for k in keys:
                v = d.get(k)
                if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
                    raise bad(f'run {i}\'s {where}"{k}"', v, "a number or null")
    return doc
