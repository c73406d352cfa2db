"""Processes that must not outlive the one that started them."""

from __future__ import annotations

import os

__all__ = ["die_with_parent", "DIE_WITH_PARENT_ENV"]

# set by a parent (the GPU session kit) for the hbseg commands it starts: see run_cli
DIE_WITH_PARENT_ENV = "HBSEG_DIE_WITH_PARENT"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; elsewhere a no-op).

    A measurement or training left running after the command that started it was killed (a
    device command that hit its time limit, a SIGTERM) would hold the GPU and the cores the
    next command measures.
    """
    import ctypes
    import signal

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
