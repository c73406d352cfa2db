"""Benchmarks: every data loader side by side (``hbseg-bench loaders``) and the cost of
each pipeline operation (``hbseg-bench ops``).

Nothing is imported eagerly: ``python -m hbseg.benchmarks.worker`` must pin its cores
before numpy, torch or DALI start their thread pools, so the names below load on first
use.
"""

from __future__ import annotations

from hbseg.lazy import lazy_exports

__all__ = ["BenchConfig", "run_loaders_bench", "run_ops_bench", "machine_info"]

_WHERE = {
    "BenchConfig": ".config",
    "run_loaders_bench": ".loaders_bench",
    "run_ops_bench": ".ops_bench",
    "machine_info": ".sysinfo",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
