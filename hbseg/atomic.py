"""Write files and folders under a temporary name, then rename, so nothing is half-written."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_dir", "atomic_write_text", "atomic_savefig", "check_writable_dir",
           "remove_leftovers", "append_text"]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    check_writable_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _write_error(e, path.parent, "cannot write into output folder") from None
    tmp = Path(tmp)
    try:
        os.close(fd)
        # mkstemp creates 0600 files; give the result the mode a plain open() would have
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _remove_leftovers(path)
    except OSError as e:
        if e.errno in _NO_ROOM or e.filename in (str(tmp), tmp):
            raise _write_error(e, path, "could not write") from None
        raise
    finally:  # every exit: an error, Ctrl-C, SIGTERM (hbseg.cli_common makes it an exception)
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; it replaces ``path`` (whole) only on success."""
    path = Path(path)
    check_writable_dir(path.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise _write_error(e, path.parent, "cannot write into output folder") from None
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, onerror=_make_writable_and_retry)
        _remove_leftovers(path)
    except OSError as e:
        if e.errno in _NO_ROOM:
            raise _write_error(e, path, "could not write") from None
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
# no room for the file: the disk, the quota, or the file size limit (``ulimit -f``, or the
# file system's largest file); write() then fails without naming its file
_NO_ROOM = _DISK_FULL | {errno.EFBIG}


def _make_writable_and_retry(func, p, exc_info) -> None:
    """rmtree's onerror: a read-only folder (a cache made read-only by hand) keeps its
    entries; make it writable and retry once, else leave it."""
    try:
        os.chmod(os.path.dirname(p) or ".", 0o755)
        if os.path.isdir(p) and not os.path.islink(p):
            os.chmod(p, 0o755)
        func(p)
    except OSError:
        pass


def remove_leftovers(path: str | Path) -> None:
    """Public name of ``_remove_leftovers``, for writers that hold a lock on ``path``."""
    _remove_leftovers(Path(path))


def _remove_leftovers(path: Path) -> None:
    """Temporaries of ``path`` left by a writer that was killed (SIGKILL runs no cleanup);
    the next successful write of the same path sweeps them away."""
    for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _reason(e: Exception) -> str:
    code = getattr(e, "errno", None)
    if code in _DISK_FULL:
        return "disk full"
    if code == errno.EFBIG:
        return "file too large: the file size limit (ulimit -f) or the file system's largest file"
    return getattr(e, "strerror", None) or str(e)


def _write_error(e: Exception, where: Path, what: str):
    from hbseg.errors import HbsegError

    return HbsegError(f"{what} ({_reason(e)}); nothing was written", where)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        # a file name that is not UTF-8, quoted in the text, keeps its bytes
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")


def append_text(path: str | Path, text: str) -> None:
    """Append ``text`` to ``path`` (a log such as ``metrics.jsonl``) and flush it to disk;
    a failure names the file. A partial line left by a failure is the reader's to skip."""
    from hbseg.errors import HbsegError

    path = Path(path)
    try:
        with open(path, "a", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise HbsegError(f"could not append to the file ({_reason(e)})", path) from None


def atomic_savefig(fig, path: str | Path, title: str | None = None, **savefig_kwargs) -> Path:
    """Lay out a matplotlib figure (under ``title``, if any) and write it as a PNG, atomically."""
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **savefig_kwargs)
    return path


def check_writable_dir(folder: str | Path) -> Path:
    """Create ``folder`` if needed and make sure we can write into it, with a clear error."""
    from hbseg.errors import HbsegError

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise HbsegError("output folder is a file, not a folder", folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HbsegError(f"cannot create output folder ({e.strerror})", folder) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise HbsegError("output folder is not writable", folder)
    return folder
