"""``--cpus N``: run a measurement as if the machine had N cores.

The benchmark starts every (loader, cores) measurement in a fresh subprocess. The
subprocess pins itself to the first N cores it may use (``os.sched_setaffinity``) before
it imports torch or DALI; DataLoader workers and DALI's threads inherit the mask. The
loader gets ``num_threads`` = N for DALI and ``num_workers`` ≤ N for DataLoader back-ends;
torch's intra-op pool and OpenMP are sized to N as well. "First N" follows the kernel's
numbering, which on SMT machines may pair hyper-threads of one physical core.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hbseg.errors import ConfigError

from .sysinfo import allowed_cpus

__all__ = ["CpuPlan", "plan_cpus", "pin_to_cores", "thread_env"]

DALI_KINDS = ("dali", "dali-cache")


@dataclass(frozen=True)
class CpuPlan:
    """Cores and parallelism of one measurement."""

    cpus: int  # cores the measurement may use
    cores: tuple[int, ...]  # their ids
    restricted: bool  # whether --cpus asked for it (else: every allowed core)
    num_threads: int  # what LoaderConfig.num_threads gets for this loader kind

    def to_dict(self) -> dict:
        return {"cpus": self.cpus, "cores": list(self.cores), "restricted": self.restricted,
                "num_threads": self.num_threads}


def plan_cpus(kind: str, cpus: int | None, workers: int | None) -> CpuPlan:
    """Cores and loader parallelism for ``kind`` under ``--cpus`` (None: all cores).

    DALI back-ends: ``num_threads`` = cores. DataLoader back-ends: ``workers`` (default:
    one per core), never more than the cores.
    """
    allowed = allowed_cpus()
    if cpus is None:
        n, restricted = len(allowed), False
    else:
        if cpus > len(allowed):
            raise ConfigError(f"--cpus {cpus} asks for more cores than this process may use "
                              f"({len(allowed)})")
        n, restricted = cpus, True
    if kind in DALI_KINDS:
        threads = n
    else:
        threads = n if workers is None else min(workers, n)
    return CpuPlan(n, tuple(allowed[:n]), restricted, threads)


def pin_to_cores(cores: tuple[int, ...] | list[int]) -> None:
    """Restrict this process (and every process or thread it starts later) to ``cores``."""
    try:
        os.sched_setaffinity(0, set(cores))
    except (AttributeError, OSError) as e:
        raise ConfigError(f"cannot restrict the process to cores {list(cores)} ({e})") from None


def thread_env(n: int) -> dict[str, str]:
    """Environment for a subprocess limited to ``n`` cores: thread pools read these at import."""
    n = str(max(1, int(n)))
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}
