"""Progress bars (shown on a terminal, hidden in logs, pipes and CI), and the one way hbseg
maps a function over many files with one."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

__all__ = ["bar_disabled", "map_with_progress"]

T = TypeVar("T")
R = TypeVar("R")


def bar_disabled(enabled: bool = True) -> bool | None:
    """tqdm's ``disable`` for a bar the caller wants: ``None`` lets tqdm hide it when stderr
    is not a terminal, so errors stay the only lines a script or CI log sees."""
    return None if enabled else True


def map_with_progress(fn: Callable[[T], R], jobs: Sequence[T], *, workers: int | None,
                      desc: str, unit: str = "img", progress: bool = True, chunksize: int = 1,
                      initializer: Callable[[], None] | None = None) -> list[R]:
    """``[fn(job) for job in jobs]`` in order, with a progress bar; in a pool of processes
    when more than one worker is asked for (``None``: every core, at most one per job).

    The workers are forked with every object alive at that moment frozen out of the garbage
    collector's reach (``gc.freeze``): a worker that collected an inherited, unreachable DALI
    pipeline would crash or hang in its destructor, waiting on threads the child lacks.
    """
    from tqdm.auto import tqdm

    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    out: list[R] = []
    with tqdm(total=len(jobs), desc=desc, unit=unit, disable=bar_disabled(progress)) as bar:
        if workers == 1:
            for job in jobs:
                out.append(fn(job))
                bar.update()
            return out
        gc.collect()  # garbage that exists now is destroyed here, in the parent
        gc.freeze()
        try:
            with ProcessPoolExecutor(workers, initializer=initializer) as pool:
                for result in pool.map(fn, jobs, chunksize=chunksize):
                    out.append(result)
                    bar.update()
        finally:
            gc.unfreeze()
    return out
