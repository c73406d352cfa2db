"""Ctrl-C during training: the first one finishes the epoch, saves, and stops; a second
one stops at once (last.pt then still holds the previous epoch, written atomically)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

from hbseg.errors import HbsegError

__all__ = ["StopRequest", "TrainingInterrupted", "graceful_sigint"]


class TrainingInterrupted(HbsegError):
    """Raised after a Ctrl-C stopped the run; the message says how to continue it."""

    exit_code = 130  # the shell's convention for SIGINT
    label = "interrupted"


class StopRequest:
    def __init__(self) -> None:
        self.requested = False


@contextlib.contextmanager
def graceful_sigint(announce: bool = True) -> Iterator[StopRequest]:
    """While active, the first SIGINT only sets ``stop.requested``; the second raises
    KeyboardInterrupt as usual. Outside the main thread nothing is installed."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        if announce:
            print("\nCtrl-C: finishing this epoch and saving last.pt; press Ctrl-C again to "
                  "stop at once.", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
