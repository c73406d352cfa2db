"""hbseg-train's command line: usage errors with clear messages, a run and its resume."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from hbseg.train.cli import train as train_cmd

BASE = ["--loader", "torch", "--device", "cpu", "--encoder", "resnet18", "--size", "64",
        "--batch-size", "2", "--workers", "0", "--no-progress"]


def invoke(*args):
    return CliRunner().invoke(train_cmd, [str(a) for a in args], catch_exceptions=False)


def test_help_is_light_and_complete():
    code = "import sys, hbseg.train.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # --help never pays for torch
    r = invoke("--help")
    assert r.exit_code == 0
    for opt in ("--data", "--loader", "--device", "--arch", "--encoder", "--size", "--crop",
                "--batch-size", "--epochs", "--lr", "--loss", "--fold", "--amp", "--out",
                "--resume", "--val-full-res", "--compile", "--grad-clip", "--weights",
                "--warmup-epochs", "--val-every", "--seed", "--workers", "--stop-after"):
        assert opt in r.output, opt


@pytest.mark.parametrize("args,msg", [
    (["--loader", "dali-cache", "--device", "cpu"], "dali-cache keeps decoded images in GPU memory"),
    (["--loss", "softmax_ce"], "unknown loss 'softmax_ce'. Valid: bce, dice, focal, lovasz"),
    (["--arch", "unett"], "unknown --arch 'unett'; did you mean 'unet'?"),
    (["--amp", "fp16", "--device", "cpu"], "--amp fp16 needs --device cuda"),
    (["--crop", "300"], "--crop 300 is larger than the smallest image"),
    (["--fold", "4"], "--fold 4 has no images"),
    (["--encoder", "resnet19"], "did you mean 'resnet18'"),
    (["--arch", "fpn", "--size", "80"], "--size 80 must be a multiple of 32"),
    (["--device", "tpu"], "--device must be cpu, cuda or cuda:N"),
])
def test_bad_combinations_are_usage_errors(tiny_root, tmp_path, args, msg):
    r = invoke("--data", tiny_root, *BASE, "--out", tmp_path / "run", *args)
    assert r.exit_code == 2, r.output
    assert "Usage:" in r.output and msg in r.output
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_a_gpu_is_a_usage_error(tiny_root, tmp_path):
    r = invoke("--data", tiny_root, "--device", "cuda", "--out", tmp_path / "run")
    assert r.exit_code == 2 and "no CUDA GPU is visible; use --device cpu" in r.output


def test_missing_out_and_data(tiny_root, tmp_path):
    r = invoke("--data", tiny_root, *BASE)
    assert r.exit_code == 2 and "--out RUN_DIR is required" in r.output
    r = invoke(*BASE, "--out", tmp_path / "x")
    assert r.exit_code == 2 and "--data ROOT is required" in r.output
    r = invoke("--resume", tmp_path / "nothing")
    assert r.exit_code == 2 and "nothing to resume" in r.output


def test_run_then_resume_from_the_command_line(tiny_root, tmp_path):
    run = tmp_path / "run"
    r = invoke("--data", tiny_root, *BASE, "--epochs", "2", "--stop-after", "1", "--out", run)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["epochs_done"] == 1 and not summary["finished"]

    again = invoke("--data", tiny_root, *BASE, "--out", run)
    assert again.exit_code == 2 and f"--resume {run}" in again.output  # no silent overwrite

    changed = invoke("--resume", run, "--lr", "0.01")
    assert changed.exit_code == 2 and "cannot change on --resume: --lr" in changed.output
    elsewhere = invoke("--resume", run, "--out", tmp_path / "other")
    assert elsewhere.exit_code == 2 and "continues in its own folder" in elsewhere.output

    r = invoke("--resume", run, "--no-progress")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["epochs_done"] == 2 and summary["finished"]
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in recs] == [1, 2]

    r = invoke("--data", tiny_root, *BASE, "--epochs", "1", "--out", run, "--overwrite")
    assert r.exit_code == 0, r.output
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
