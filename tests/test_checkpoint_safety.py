"""Checkpoints are read without running code from them, and a damaged one is refused.

An evil checkpoint's payload creates a marker file when unpickled; every way hbseg opens a
checkpoint (the reader, ``hbseg-infer --checkpoint``, ``hbseg-train --resume``) must refuse
it by name and leave no marker. A checkpoint with bytes overwritten mid-file fails its
content hash. docs/errors.md lists the messages.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shlex
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hbseg.errors import CheckpointError
from hbseg.models import ModelCard, create_model, load_model, read_checkpoint, save_checkpoint
from hbseg.train.resume import get_rng_state, set_rng_state

BIN = Path(sys.executable).parent
ENV = {**os.environ, "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""}


class _Payload:
    """Unpickled, this runs a shell command: what a planted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _evil(path: Path, marker: Path, protocol: int | None = None) -> Path:
    """A checkpoint-shaped evil file: torch's zip format, or with ``protocol`` a bare
    pickle (torch.load reads those too, as its legacy format)."""
    payload = {"format": "hbseg-checkpoint", "version": 2, "card": _Payload(marker),
               "state_dict": {}, "config": {}, "optimizer": {}}
    if protocol is None:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=protocol))
    return path


def _overwrite_inside_largest_tensor(src: Path, dst: Path, n: int = 64 * 1024) -> None:
    """Copy ``src`` with ``n`` random bytes in the middle of its largest tensor's data,
    leaving the zip structure intact (torch does not check the zip's CRCs)."""
    data = bytearray(src.read_bytes())
    info = max(zipfile.ZipFile(src).infolist(), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    assert info.file_size > n
    at = start + (info.file_size - n) // 2
    data[at: at + n] = np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "good.pt"
    torch.manual_seed(0)
    model = create_model("unet", "resnet18")
    opt = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 1, 64, 64)).sum().backward()
    opt.step()
    save_checkpoint(path, model, ModelCard("unet", "resnet18", size=64), epoch=1,
                    optimizer=opt.state_dict(), rng=[get_rng_state()], config={"epochs": 2})
    return path


def test_round_trip(good):
    ckpt = read_checkpoint(good)
    assert ckpt["version"] == 2 and len(ckpt["sha256"]) == 64 and ckpt["epoch"] == 1
    model, card = load_model(good, ckpt=ckpt)
    assert card.arch == "unet" and card.size == 64
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][k]), k
    set_rng_state(ckpt["rng"][0])
    # nothing in it needs an allow-listed global: weights_only alone reads it
    assert torch.serialization.get_unsafe_globals_in_checkpoint(good) == []


@pytest.mark.parametrize("protocol,message", [
    (None, "refused: the file asks to load the Python object posix.system"),
    (2, "refused: the file asks to load the Python object posix.system"),
    # the weights-only reader stops at protocol 4's first opcode, before any object
    (4, "unreadable or truncated checkpoint (Unsupported operand 149)"),
], ids=["torch-zip", "pickle-2", "pickle-4"])
def test_evil_checkpoint_is_refused_by_the_reader(tmp_path, protocol, message):
    marker = tmp_path / "pwned"
    evil = _evil(tmp_path / "evil.pt", marker, protocol)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(evil)
    assert str(err.value).startswith(f"{evil}: {message}")
    assert "weights_only" not in str(err.value)  # torch's advice to load unsafely is dropped
    assert not marker.exists()
    # the payload is real: an unchecked load runs it (a bare pickle fails torch's check of
    # its magic number only after that)
    with contextlib.suppress(RuntimeError):
        torch.load(evil, weights_only=False)
    assert marker.exists()


def _one_error_line(proc: subprocess.CompletedProcess, path: Path, message: str) -> None:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert lines and lines[-1].startswith(f"error: {path}: {message}"), proc.stderr
    assert sum(ln.startswith("error:") for ln in lines) == 1, proc.stderr


def test_evil_checkpoint_is_refused_by_hbseg_infer(tiny_root, tmp_path):
    marker = tmp_path / "pwned"
    evil = _evil(tmp_path / "evil.pt", marker)
    out = tmp_path / "sub.csv"
    proc = subprocess.run([str(BIN / "hbseg-infer"), "--checkpoint", str(evil), "--data",
                           str(tiny_root / "test"), "--out", str(out), "--device", "cpu", "--quiet"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    _one_error_line(proc, evil, "refused")
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("kind", ["evil", "damaged"])
def test_planted_last_pt_is_refused_by_hbseg_train_resume(tmp_path, good, kind):
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "pwned"
    last = run / "last.pt"
    if kind == "evil":
        _evil(last, marker)
    else:
        _overwrite_inside_largest_tensor(good, last)
    proc = subprocess.run([str(BIN / "hbseg-train"), "--resume", str(run), "--no-progress"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    _one_error_line(proc, last, "refused" if kind == "evil" else "damaged checkpoint")
    assert not marker.exists()
    assert sorted(p.name for p in run.iterdir()) == ["last.pt"]  # nothing written


def test_bytes_overwritten_inside_the_weights_are_refused(tmp_path, good):
    bad = tmp_path / "bad.pt"
    _overwrite_inside_largest_tensor(good, bad)
    torch.load(bad, weights_only=True)  # torch alone reads it without complaint
    with pytest.raises(CheckpointError, match="damaged checkpoint: its content does not match") as err:
        read_checkpoint(bad)
    assert str(err.value).startswith(f"{bad}: ")


@pytest.mark.parametrize("fill", ["ones", "random"])
def test_64_kib_overwritten_mid_file_is_refused(tmp_path, good, fill):
    """Wherever the damage falls (data, a zip header), the error names the file. (Not
    zeros: the middle of this file holds zeros already, and writing them changes nothing.)"""
    data = bytearray(good.read_bytes())
    mid, n = len(data) // 2, 64 * 1024
    data[mid: mid + n] = b"\xff" * n if fill == "ones" else os.urandom(n)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged checkpoint|unreadable or truncated") as err:
        read_checkpoint(bad)
    assert str(err.value).startswith(f"{bad}: ")


def test_damaged_checkpoint_is_refused_by_hbseg_infer(tiny_root, tmp_path, good):
    bad = tmp_path / "bad.pt"
    _overwrite_inside_largest_tensor(good, bad)
    out = tmp_path / "sub.csv"
    proc = subprocess.run([str(BIN / "hbseg-infer"), "--checkpoint", str(bad), "--data",
                           str(tiny_root / "test"), "--out", str(out), "--device", "cpu", "--quiet"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    _one_error_line(proc, bad, "damaged checkpoint")
    assert not out.exists()


def test_version_1_checkpoints_still_load(tmp_path):
    """The version-1 saver wrote numpy's RNG key array and no hash; such files load (with
    only numpy's array rebuilt) and resume with the same RNG state."""
    model = create_model("unet", "resnet18")
    old = {"format": "hbseg-checkpoint", "version": 1,
           "card": ModelCard("unet", "resnet18", size=64).to_dict(),
           "state_dict": model.state_dict(), "epoch": 3,
           "rng": [{"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "python": __import__("random").getstate()}]}
    path = tmp_path / "v1.pt"
    torch.save(old, path)
    ckpt = read_checkpoint(path)
    assert ckpt["version"] == 1 and ckpt["epoch"] == 3
    load_model(path, ckpt=ckpt)
    expected = np.random.random()
    set_rng_state(ckpt["rng"][0])
    assert np.random.random() == expected


def test_saving_a_value_weights_only_would_refuse_fails_and_writes_nothing(tmp_path):
    path = tmp_path / "x.pt"
    with pytest.raises(TypeError, match="plain types and tensors only, not float64"):
        save_checkpoint(path, torch.nn.Linear(1, 1), ModelCard("unet", "resnet18"),
                        metrics={"loss": np.float64(0.5)})
    assert list(tmp_path.iterdir()) == []
