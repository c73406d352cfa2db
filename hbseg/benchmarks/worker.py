"""``python -m hbseg.benchmarks.worker JOB.json``: one measurement in a fresh process.

The job file says what to measure (``loader``, ``bound`` or ``sysinfo``), on how many
cores, with which ``BenchConfig``, and where to write the result JSON. The process pins
itself to its cores *before* importing torch or DALI, so that every thread pool and
every worker process it starts inherits the restriction; a fresh process also starts
its CPU-time accounting from zero. Any failure is written as
``{"status": "error", "error": …}``; a crash that leaves no result file is reported
by the parent from the exit status and the log.

While it measures, the worker keeps ``RESULT.partial`` up to date with what it measured so
far (start-up parts, finished epochs, batches done of those planned): a run stopped at its
time limit is reported with those figures.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

STARTED = time.time()  # wall clock, so that the parent can add the interpreter's own start

__all__ = ["run_job", "main"]


def _one_line(err: BaseException) -> str:
    from hbseg.errors import HbsegError

    if isinstance(err, HbsegError):
        return f"{type(err).__name__}: {err}"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _imports(kind: str) -> float:
    """Seconds to import what a measurement needs (torch, smp, DALI): start-up's first part."""
    t0 = time.perf_counter()
    import segmentation_models_pytorch  # noqa: F401
    import torch  # noqa: F401

    if kind.startswith("dali"):
        try:
            import nvidia.dali  # noqa: F401
        except ImportError:  # the loader's own build reports it
            pass
    return time.perf_counter() - t0


class _Partial:
    """What the run measured so far, in ``RESULT.partial`` (written atomically)."""

    def __init__(self, path: str | None, base: dict) -> None:
        self.path, self.data = path, dict(base)

    def __call__(self, part: dict) -> None:
        self.data.update(json.loads(json.dumps(part, default=str)))  # a copy, as it was then
        if self.path:
            _write(self.path, self.data)


def run_job(job: dict) -> dict:
    from .affinity import pin_to_cores, plan_cpus
    from .config import BenchConfig

    t0 = time.perf_counter()
    out: dict = {"job": job["job"], "loader": job.get("kind"), "cpus": job.get("cpus"),
                 "started_unix": STARTED}
    try:
        if job["job"] == "sysinfo":
            from .sysinfo import machine_info

            out.update(machine_info(gpu=bool(job.get("gpu", True))))
            out["status"] = "ok"
            return out
        cfg = BenchConfig.from_dict(job["config"])
        kind = job["kind"] if job["job"] == "loader" else "bound"
        plan = plan_cpus(kind, job.get("cpus"), cfg.workers)
        out.update({"cpus": plan.cpus, "restricted": plan.restricted,
                    "num_threads": plan.num_threads if kind != "bound" else None,
                    "cores": list(plan.cores)})
        if plan.restricted:
            pin_to_cores(plan.cores)
        imports_s = _imports(kind)
        from . import measure

        partial = _Partial(job.get("result") and f"{job['result']}.partial", out)

        def progress(part: dict) -> None:
            if "startup" in part:
                part = {**part, "startup": {"imports_s": imports_s, **part["startup"]}}
            partial(part)

        if job["job"] == "loader":
            out.update(measure.measure_loader(kind, cfg, plan, job["cache_dir"], progress))
        elif job["job"] == "bound":
            out.update(measure.measure_bound(cfg, plan, job["cache_dir"], progress))
        else:
            raise ValueError(f"unknown job {job['job']!r}")
        out["startup"] = {"imports_s": imports_s, **out.get("startup", {})}
        out["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - every failure becomes a reported result
        out["status"] = "error"
        out["error"] = _one_line(e)
        out["traceback"] = traceback.format_exc()[-4000:]
        traceback.print_exc()
    finally:
        out["wall_s"] = time.perf_counter() - t0
    return out


def _write(path: str, result: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1, default=str)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m hbseg.benchmarks.worker JOB.json", file=sys.stderr)
        return 2
    from hbseg.lifetime import die_with_parent

    die_with_parent()
    with open(argv[0]) as f:
        job = json.load(f)
    result = run_job(job)
    _write(job["result"], result)
    print(f"worker: {result.get('job')} {result.get('loader') or ''} -> {result['status']}",
          file=sys.stderr, flush=True)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
