"""Open a user's file only when it is a regular file.

A FIFO with an image's name blocks ``open()`` until some writer appears (forever, in a
data folder), and a device such as ``/dev/zero`` never ends; neither holds data. Every
reader of user files (images, annotations, CSVs, probability maps, result files) opens
them through here, so they are refused in one line naming the file instead.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO

from hbseg.errors import DataError

__all__ = ["check_regular", "open_regular", "read_bytes_regular", "read_text_regular"]

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def _refuse(mode: int, path: Path, what: str) -> DataError:
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return DataError(f"{kind}, not a regular file; expected {what}", path)


def check_regular(path: str | Path, what: str = "a file") -> os.stat_result:
    """``os.stat(path)`` (which never blocks), or a DataError for anything but a regular
    file. ``FileNotFoundError`` and other ``OSError`` pass through to the caller's message."""
    path = Path(path)
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(st.st_mode, path, what)
    return st


def open_regular(path: str | Path, mode: str = "rb", what: str = "a file", **kwargs) -> IO:
    """``open(path, mode, **kwargs)`` for reading, refusing non-regular files. The file is
    opened non-blocking and checked on its descriptor, so a FIFO swapped in after the
    ``stat`` cannot block either."""
    if any(c in mode for c in "wax+"):
        raise ValueError(f"open_regular reads; got mode {mode!r}")
    path = Path(path)
    check_regular(path, what)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(st.st_mode, path, what)
        os.set_blocking(fd, True)
        return open(fd, mode, **kwargs)  # noqa: SIM115 - the caller closes it
    except BaseException:
        os.close(fd)
        raise


def read_bytes_regular(path: str | Path, what: str = "a file") -> bytes:
    with open_regular(path, "rb", what) as f:
        return f.read()


def read_text_regular(path: str | Path, what: str = "a file", encoding: str = "utf-8",
                      errors: str = "strict") -> str:
    with open_regular(path, "r", what, encoding=encoding, errors=errors) as f:
        return f.read()
