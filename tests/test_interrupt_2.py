"""Interruptions outside training (issue 18): Ctrl-C (SIGINT to the process group, as a
terminal sends it) and SIGKILL during hbseg-data synth, hbseg-data cache, hbseg-infer and
hbseg-ensemble leave nothing half-written, and running the command again recovers. Also
the environment: an unwritable HOME, a missing TMPDIR and LANG=C."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": "", **extra}


def _interrupt_when(argv, ready, sig, timeout=120.0, env=None):
    """Start argv in its own session; once ready() holds, send sig to the whole group."""
    proc = subprocess.Popen(argv, env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None and not ready():
        time.sleep(0.01)
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _tmp_files(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name.endswith(".tmp") or ".old-" in p.name]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_synth_interrupted_then_rerun(sig, tmp_path):
    out = tmp_path / "d"
    argv = [str(BIN / "hbseg-data"), "synth", str(out), "--ids", "6", "--size", "128", "--workers", "1"]
    code, err = _interrupt_when(argv, lambda: len(list(out.glob("train/DCM/*/*.png"))) >= 2, sig)
    if sig == signal.SIGINT:
        assert code == 130 and "Traceback" not in err, err
    # the partial data set is refused by name, never silently used
    r = subprocess.run([str(BIN / "hbseg-data"), "cache", str(out)], env=_env(), capture_output=True, text=True)
    assert r.returncode == 1 and "incomplete data set" in r.stderr, r.stderr
    # the same command again completes it, without --overwrite
    r = subprocess.run(argv, env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(list(out.glob("train/DCM/*/*.png"))) == 12 and not _tmp_files(out)
    assert not (out / ".hbseg-synth-partial").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_cache_interrupted_then_rerun(sig, tiny_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_root / "train", root / "train")
    argv = [str(BIN / "hbseg-data"), "cache", str(root), "--workers", "2"]
    code, err = _interrupt_when(argv, lambda: bool(list(root.glob(".hbseg-cache.*.tmp/masks/*/*.png"))), sig)
    if sig == signal.SIGINT:
        assert code == 130 and "Traceback" not in err and err.strip().splitlines()[-1] == "Aborted.", err
    assert not (root / "hbseg-cache").exists()  # never a half-built cache under the real name
    r = subprocess.run(argv, env=_env(), capture_output=True, text=True)
    assert r.returncode == 0 and "8 images, 8 masks rasterised" in r.stdout, r.stderr
    assert not _tmp_files(root)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from hbseg.models import ModelCard, create_model, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "unet.pt"
    save_checkpoint(path, create_model("unet", "resnet18"), ModelCard("unet", "resnet18", size=64))
    return path


def test_infer_ctrl_c_then_rerun(ckpt, tiny_root, tmp_path):
    out = tmp_path / "sub.csv"
    argv = [str(BIN / "hbseg-infer"), "--checkpoint", str(ckpt), "--data", str(tiny_root / "test"),
            "--out", str(out), "--device", "cpu", "--quiet", "--save-probs",
            str(tmp_path / "probs")]
    code, err = _interrupt_when(argv, lambda: bool(list(tmp_path.glob(".sub.csv.*.tmp"))), signal.SIGINT)
    assert code == 130 and "Traceback" not in err, err
    assert not out.exists() and not _tmp_files(tmp_path)
    r = subprocess.run(argv, env=_env(), capture_output=True, text=True)
    assert r.returncode == 0 and out.read_text().count("\n") == 1 + 2 * 29, r.stderr


def test_ensemble_killed_leaves_nothing(tiny_root, tmp_path):
    from hbseg.data import CLASSES

    names = sorted(p.name for p in (tiny_root / "train" / "DCM").glob("*/*.png"))
    rows = "image_name,class,rle\n" + "".join(f"{n},{c},1 100\n" for n in names for c in CLASSES)
    csvs = []
    for k in range(3):
        p = tmp_path / f"m{k}.csv"
        p.write_text(rows)
        csvs.append(str(p))
    out = tmp_path / "vote.csv"
    argv = [str(BIN / "hbseg-ensemble"), *csvs, "--out", str(out), "--size", "256x256", "--quiet"]
    code, err = _interrupt_when(argv, lambda: bool(list(tmp_path.glob(".vote.csv.*"))), signal.SIGKILL, timeout=60)
    if code == 0:  # finished before the kill landed: still complete
        assert out.read_text() == rows
    else:
        assert not out.exists()
    r = subprocess.run(argv, env=_env(), capture_output=True, text=True)
    assert r.returncode == 0 and out.read_text() == rows and not _tmp_files(tmp_path), r.stderr


def test_unwritable_home_missing_tmpdir_lang_c(tiny_root, tmp_path):
    """No warnings about config folders, no failure: the output is the one summary line."""
    root = tmp_path / "dâta"
    shutil.copytree(tiny_root / "train", root / "train")
    env = _env(HOME="/proc/no-home", TMPDIR=str(tmp_path / "missing"), LANG="C", LC_ALL="C")
    env.pop("MPLCONFIGDIR", None)
    env.pop("XDG_CACHE_HOME", None)
    env.pop("XDG_CONFIG_HOME", None)
    argv = [str(BIN / "hbseg-train"), "--data", str(root), "--out", str(tmp_path / "run"), "--loader", "torch",
            "--workers", "0", "--device", "cpu", "--encoder", "resnet18", "--size", "64", "--batch-size", "4",
            "--epochs", "1", "--no-progress", "--no-tensorboard"]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    noise = [ln for ln in r.stderr.splitlines() if "matplotlib" in ln.lower() or "warn" in ln.lower()]
    assert not noise, r.stderr
    assert (tmp_path / "run" / "curves.png").is_file()
