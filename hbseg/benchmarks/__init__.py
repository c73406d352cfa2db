"""Benchmarks: every data loader side by side (``hbseg-bench loaders``) and the cost of
each pipeline operation (``hbseg-bench ops``).

Nothing is imported eagerly: ``python -m hbseg.benchmarks.worker`` must pin its cores
before numpy, torch or DALI start their thread pools, so the names below load on first
use.
"""

from __future__ import annotations

import importlib

__all__ = ["BenchConfig", "run_loaders_bench", "run_ops_bench", "machine_info"]

_WHERE = {
    "BenchConfig": ".config",
    "run_loaders_bench": ".loaders_bench",
    "run_ops_bench": ".ops_bench",
    "machine_info": ".sysinfo",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
