"""One writer per folder: a lock that a process holds while it writes a folder.

Every folder hbseg writes over more than one step (a run folder, a mask cache, OOF
probabilities, tuning results) is locked the same way: ``fcntl.flock`` on a file beside
it, ``PARENT/.lock-<name>``, holding the writer's pid. Beside, not inside, because some
of these folders are replaced whole by a rename (``atomic_dir``). The kernel releases a
flock when its process dies, however it dies, so a lock left by a killed process never
blocks the next one; the file itself is removed on release.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from hbseg.errors import HbsegError

__all__ = ["FolderBusyError", "folder_lock", "lock_path", "lock_holder"]


class FolderBusyError(HbsegError):
    """Another process holds the folder's lock."""


def lock_path(folder: str | Path) -> Path:
    folder = Path(os.path.abspath(folder))
    return folder.parent / f".lock-{folder.name}"


def lock_holder(lock: Path) -> str:
    """``pid N`` (``on host H`` when another machine wrote it), as the holder recorded it."""
    try:
        pid, _, host = lock.read_text().strip().partition(" ")
    except (OSError, UnicodeDecodeError):
        pid, host = "", ""
    if not pid.isdigit():
        return "pid unknown"
    return f"pid {pid}" + (f" on host {host}" if host and host != socket.gethostname() else "")


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "folder", wait: bool = False,
                on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold ``folder``'s lock for the block.

    Held elsewhere: ``wait=False`` raises FolderBusyError naming the folder and the holder's
    pid; ``wait=True`` calls ``on_wait(holder)`` once and waits. Where no lock file can be
    made (a read-only parent), nothing can be written there either: the block runs unlocked
    and the writer reports the folder.
    """
    lock = lock_path(folder)
    fd, held = None, False
    try:
        while not held:
            try:
                lock.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
            except OSError:
                break
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = lock_holder(lock)
                    if not wait:
                        raise FolderBusyError(f"another process ({holder}) is writing this "
                                              f"{what}; wait for it to end, or stop it",
                                              folder) from None
                    if on_wait is not None:
                        on_wait(holder)
                        on_wait = None
                    fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # a file system without flock: go on unlocked, as before
                os.close(fd)
                fd = None
                break
            # the holder may have removed the file as it let go: then lock the one there now
            held = _same_file(lock, fd)
            if not held:
                os.close(fd)
                fd = None
        if held and fd is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        if fd is not None:
            if held and _same_file(lock, fd):
                with contextlib.suppress(OSError):
                    lock.unlink()
            os.close(fd)  # releases the lock


def _same_file(lock: Path, fd: int) -> bool:
    try:
        a, b = os.stat(lock), os.fstat(fd)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
