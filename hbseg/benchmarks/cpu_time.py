"""CPU seconds of a whole process tree: this process's threads plus every descendant.

What one loader costs in CPU is spread over the main process (its Python thread, torch's
intra-op pool, DALI's worker threads, pinned-memory threads) and over DataLoader worker
processes, which are children (or, with the forkserver start method, grandchildren).
``ProcessTreeClock.read()`` is a cumulative counter of all of it:

    this process, all threads       time.process_time()  (CLOCK_PROCESS_CPUTIME_ID)
  + every live descendant           utime + stime + cutime + cstime from /proc/<pid>/stat
  + every child already reaped      resource.getrusage(RUSAGE_CHILDREN)

Each CPU second is counted exactly once whatever happens to a worker between two
readings: while it lives it is in the second term; once it exits and is waited for, the
kernel adds its total (its own reaped children included) to the third term, and it
leaves the second. A grandchild reaped by a child moves from the second term into that
child's cutime/cstime. The one race (a child reaped between the two reads) is detected
by reading RUSAGE_CHILDREN before and after the /proc scan, and the reading is retried.
The difference of two readings is the CPU time the tree spent in between.

``exclude`` names processes (and their descendants) to leave out, such as an
``nvidia-smi`` poller started by the benchmark itself; stop them only after the last
reading, or their total lands in RUSAGE_CHILDREN. Linux only (``/proc``); elsewhere the
descendants' share reads as 0 and ``available`` is False.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["CpuReading", "ProcessTreeClock", "descendants"]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC = "/proc"


@dataclass(frozen=True)
class CpuReading:
    """Cumulative CPU seconds at one instant; subtract two readings for an interval."""

    main: float  # this process, all of its threads
    children: float  # live descendants plus reaped children
    wall: float  # time.perf_counter() at the reading

    @property
    def total(self) -> float:
        return self.main + self.children

    def __sub__(self, other: CpuReading) -> CpuReading:
        return CpuReading(self.main - other.main, self.children - other.children,
                          self.wall - other.wall)


def _parse_stat(text: str) -> tuple[int, float]:
    """(ppid, utime+stime+cutime+cstime seconds) from a /proc/<pid>/stat line."""
    # the command name (field 2) is in parentheses and may itself hold spaces or ')'
    rest = text[text.rindex(")") + 2:].split()
    ppid = int(rest[1])  # field 4
    ticks = sum(int(x) for x in rest[11:15])  # fields 14-17: utime stime cutime cstime
    return ppid, ticks / _TICK


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid → (ppid, cpu seconds) of every process we can read."""
    table: dict[int, tuple[int, float]] = {}
    try:
        names = os.listdir(_PROC)
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"{_PROC}/{name}/stat") as f:
                table[int(name)] = _parse_stat(f.read())
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked, or not ours to read
    return table


def descendants(pid: int | None = None, table: dict[int, tuple[int, float]] | None = None,
                exclude: Iterable[int] = ()) -> dict[int, float]:
    """pid → cpu seconds of every live descendant of ``pid`` (default: this process),
    skipping the subtrees rooted at ``exclude``."""
    pid = os.getpid() if pid is None else pid
    table = _proc_table() if table is None else table
    kids: dict[int, list[int]] = {}
    for p, (ppid, _) in table.items():
        kids.setdefault(ppid, []).append(p)
    skip = set(exclude)
    out: dict[int, float] = {}
    stack = list(kids.get(pid, ()))
    while stack:
        p = stack.pop()
        if p in skip or p in out:
            continue
        out[p] = table[p][1]
        stack.extend(kids.get(p, ()))
    return out


def _reaped() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class ProcessTreeClock:
    """Cumulative CPU seconds of this process and all its descendants (see module doc)."""

    def __init__(self, exclude: Iterable[int] = ()):
        self.exclude = set(exclude)
        self.available = os.path.isdir(f"{_PROC}/{os.getpid()}")

    def read(self) -> CpuReading:
        wall = time.perf_counter()
        main = time.process_time()
        if not self.available:
            return CpuReading(main, _reaped(), wall)
        for _ in range(5):
            before = _reaped()
            live = sum(descendants(exclude=self.exclude).values())
            after = _reaped()
            if after == before:  # no child was reaped during the scan
                break
        return CpuReading(main, live + after, wall)
