"""DDP smoke test on CPU: ``torchrun --nproc_per_node=2`` with the gloo back-end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hbseg.models import read_checkpoint
from hbseg.train.trainer import RUN_FILES


@pytest.mark.slow
@pytest.mark.parametrize("loader, compile_", [("dali", False), ("dali", True)])
def test_torchrun_two_cpu_ranks(tiny_root, tmp_path, loader, compile_):
    # the torch back-end shards the same way (epoch_order); compiled, DDP wraps the module
    # that torch.compile then wraps (aot_eager: dynamo and AOT autograd, no code generation)
    run = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "hbseg.train.cli",
        "--data", str(tiny_root), "--loader", loader, "--device", "cpu",
        "--arch", "unet", "--encoder", "resnet18", "--size", "64", "--batch-size", "2",
        "--epochs", "1" if compile_ else "2", "--workers", "0" if loader == "torch" else "1", "--no-progress",
        "--out", str(run), *(["--compile"] if compile_ else []),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "HBSEG_COMPILE_BACKEND": "aot_eager"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    # rank 0 alone reports and writes: one summary, one metrics line per epoch
    summaries = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["finished"]
    assert {f.name for f in run.iterdir()} == {*RUN_FILES, "tb"}  # tb: TensorBoard, rank 0
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == ([1] if compile_ else [1, 2])
    for r in recs:
        assert r["world_size"] == 2
        assert r["images"] == 6  # the two shards cover the 6 training images once
        assert 0 <= r["mean_dice"] <= 1
    assert compile_ or recs[1]["loss"] < recs[0]["loss"]
    last = read_checkpoint(run / "last.pt")
    assert last["world_size"] == 2 and len(last["rng"]) == 2  # every rank's RNG, for resume
    assert not any(k.startswith("module.") for k in last["state_dict"])  # unwrapped weights


def test_unused_parameters_are_found_for_ddp():
    import torch

    from hbseg.models import create_model
    from hbseg.train.config import TrainConfig
    from hbseg.train.trainer import _unused_parameters

    cfg = TrainConfig(out="r", data="d", size=64)
    torch.manual_seed(0)
    unet = create_model("unet", "resnet18")
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    assert _unused_parameters(unet, cfg, torch.device("cpu")) == []
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())  # BN untouched
    assert unet.training and all(p.grad is None for p in unet.parameters())
    psp = create_model("pspnet", "resnet18")  # its encoder's deepest stages are never used
    assert any(n.startswith("encoder.layer4") for n in _unused_parameters(psp, cfg, torch.device("cpu")))
