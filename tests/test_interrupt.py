"""Killed and interrupted training runs: SIGKILL at random moments (some while last.pt is
being written) never leaves a checkpoint that fails to load, and --resume always reaches
the planned final epoch; Ctrl-C finishes the epoch, saves and stops cleanly."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hbseg.models import read_checkpoint

BIN = Path(sys.executable).parent
EPOCHS = 6
KILLS = 20


def _train_argv(root: Path, out: Path, resume: bool) -> list[str]:
    if resume:
        return [str(BIN / "hbseg-train"), "--resume", str(out), "--no-progress"]
    return [str(BIN / "hbseg-train"), "--data", str(root), "--out", str(out), "--overwrite",
            "--loader", "torch", "--workers", "0", "--device", "cpu", "--arch", "unet",
            "--encoder", "resnet18", "--size", "64", "--batch-size", "2", "--epochs", str(EPOCHS),
            "--seed", "0", "--no-progress"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""}


def _kill_while_saving(proc: subprocess.Popen, run: Path, timeout: float) -> bool:
    """SIGKILL as soon as a temporary last.pt appears; False if none appeared in time."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if any(run.glob(".last.pt.*")):
            proc.kill()
            return True
        time.sleep(0.002)
    proc.kill()
    return False


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tiny_root, tmp_path):
    rng = random.Random(1234)
    run = tmp_path / "run"
    during_save = 0
    for k in range(KILLS):
        resume = (run / "last.pt").is_file()
        proc = subprocess.Popen(_train_argv(tiny_root, run, resume), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if k % 4 == 3:  # every fourth kill aims at the checkpoint write itself
            during_save += _kill_while_saving(proc, run, timeout=60)
        else:
            try:
                proc.wait(timeout=rng.uniform(1.0, 8.0))
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()
        err = proc.stderr.read().decode()
        proc.stderr.close()
        assert proc.returncode in (0, -signal.SIGKILL), err
        if (run / "last.pt").is_file():
            ckpt = read_checkpoint(run / "last.pt")  # always loads: written atomically
            assert 1 <= ckpt["epoch"] <= EPOCHS
        if proc.returncode == 0:  # finished before the kill: start over for more kills
            (run / "last.pt").unlink()
    assert during_save >= 3, "no kill landed while last.pt was being written"

    resume = (run / "last.pt").is_file()
    final = subprocess.run(_train_argv(tiny_root, run, resume), env=_env(), capture_output=True,
                           text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    assert read_checkpoint(run / "last.pt")["epoch"] == EPOCHS
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, EPOCHS + 1))
    assert not list(run.glob(".*.tmp"))


@pytest.mark.slow
def test_ctrl_c_finishes_the_epoch_saves_and_stops(tiny_root, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_train_argv(tiny_root, run, False), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (run / "metrics.jsonl").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until the first epoch is under way, then press Ctrl-C
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.startswith("interrupted:")]
    assert len(lines) == 1 and "--resume" in lines[0] and "Traceback" not in err
    done = read_checkpoint(run / "last.pt")["epoch"]
    assert 1 <= done < EPOCHS
    assert f"after epoch {done}" in lines[0]
    assert (run / "curves.png").is_file()

    final = subprocess.run(_train_argv(tiny_root, run, True), env=_env(), capture_output=True,
                           text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    assert read_checkpoint(run / "last.pt")["epoch"] == EPOCHS
