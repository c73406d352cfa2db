"""Atomic writes: failures (a full disk, an unwritable folder) leave nothing half-written."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from hbseg.atomic import atomic_dir, atomic_path, atomic_write_text
from hbseg.errors import HbsegError


def test_success_replaces_and_keeps_a_normal_mode(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_failure_in_the_body_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_disk_full_is_a_clear_error(tmp_path):
    target = tmp_path / "a.txt"
    with pytest.raises(HbsegError, match=r"a\.txt: could not write \(disk full\); nothing was written"):
        with atomic_path(target) as tmp:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert list(tmp_path.iterdir()) == []


def test_output_folder_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(HbsegError, match="output folder is a file"):
        atomic_write_text(tmp_path / "f" / "out.csv", "x")


def test_failed_folder_build_keeps_the_old_folder(tmp_path):
    target = tmp_path / "cache"
    target.mkdir()
    (target / "old").write_text("1")
    with pytest.raises(ValueError), atomic_dir(target) as tmp:
        (tmp / "new").write_text("2")
        raise ValueError
    assert [p.name for p in tmp_path.iterdir()] == ["cache"] and (target / "old").is_file()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs, where the machine lets us mount one (root in a sandbox)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                         capture_output=True)
    if res.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)  # lazy: never blocks teardown


def test_real_full_disk_leaves_nothing(tiny_disk):
    target = tiny_disk / "big.bin"
    with pytest.raises(HbsegError, match="disk full"), atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(os.urandom(1024 * 1024))
    assert list(tiny_disk.iterdir()) == []


def test_checkpoint_on_a_full_disk(tiny_disk):
    from hbseg.models import ModelCard, create_model, save_checkpoint

    with pytest.raises(HbsegError, match="last.pt: could not write"):
        save_checkpoint(tiny_disk / "last.pt", create_model("unet", "resnet18"), ModelCard("unet", "resnet18"))
    assert list(tiny_disk.iterdir()) == []
