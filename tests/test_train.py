"""hbseg.train end to end on CPU: tiny synthetic hands, both loaders, resume, NaN guard."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from hbseg.data.classes import CLASSES
from hbseg.errors import ConfigError
from hbseg.models import load_model, read_checkpoint
from hbseg.train import trainer as trainer_mod
from hbseg.train.config import TrainConfig
from hbseg.train.interrupt import TrainingInterrupted
from hbseg.train.loop import NonFiniteLossError
from hbseg.train.resume import resume_config
from hbseg.train.trainer import train

SMALL = dict(loader="torch", device="cpu", arch="unet", encoder="resnet18", size=64,
             batch_size=2, epochs=3, workers=0, progress=False, lr=2e-3, warmup_epochs=0.5)


def cfg_for(root: Path, out: Path, **kw) -> TrainConfig:
    return TrainConfig(data=str(root), out=str(out), **{**SMALL, **kw})


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_metrics(a: dict, b: dict, rel: float = 1e-5) -> None:
    for key in ("loss", "lr", "val_loss", "mean_dice"):
        assert a[key] == pytest.approx(b[key], rel=rel, abs=1e-7), key
    assert list(a["dice"].values()) == pytest.approx(list(b["dice"].values()), rel=rel, abs=1e-7)


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_tiny_run_learns_and_writes_its_outputs(tiny_root, tmp_path, loader):
    run = tmp_path / "run"
    summary = train(cfg_for(tiny_root, run, loader=loader, workers=1))
    recs = metrics(run)
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    assert recs[-1]["loss"] < recs[0]["loss"]  # the loss falls
    for r in recs:
        assert set(r["dice"]) == set(CLASSES) and 0 <= r["mean_dice"] <= 1
        assert r["mean_dice"] == pytest.approx(sum(r["dice"].values()) / len(CLASSES))
        assert r["images"] == 6 and r["images_per_s"] > 0 and r["lr"] > 0
        assert 0 <= r["host_wait_fraction"] <= 1 and r["epoch_seconds"] > 0
        assert 0 <= r["first_batch_s"] <= r["host_wait_s"] <= r["train_seconds"]
        assert r["gpu_idle_fraction"] is None  # absent on CPU, never 0
        assert r["amp"] == "fp32"
    builds = [r["pipeline_build_s"] for r in recs]  # built once, before the first epoch
    assert builds == ([builds[0], 0.0, 0.0] if loader == "dali" else [None] * 3)
    assert loader != "dali" or builds[0] > 0
    assert summary["finished"] and summary["epochs_done"] == 3
    assert summary["best_mean_dice"] == max(r["mean_dice"] for r in recs)
    assert {p.name for p in run.iterdir()} == {*trainer_mod.RUN_FILES, "tb"}  # no temp files left
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "loader: " + loader in (run / "config.yaml").read_text()
    # checkpoints describe themselves: inference needs nothing but the path
    model, card = load_model(run / "best.pt")
    assert (card.arch, card.encoder, card.size, card.classes) == ("unet", "resnet18", 64, 29)
    assert card.class_names == CLASSES and card.normalize["std"] > 0 and card.clahe["p"] == 1.0
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 29, 64, 64)
    last = read_checkpoint(run / "last.pt")
    assert last["epoch"] == 3 and {"optimizer", "scheduler", "scaler", "rng", "config"} <= set(last)
    best = read_checkpoint(run / "best.pt")
    assert best["metrics"]["mean_dice"] == summary["best_mean_dice"]
    assert "optimizer" not in best  # inference checkpoint stays small


def _interrupt_in_epoch(monkeypatch, epoch_index: int, after_batches: int) -> None:
    """Make train_one_epoch raise KeyboardInterrupt partway through epoch ``epoch_index``."""
    real = trainer_mod.train_one_epoch
    calls = {"n": 0}

    class Cut:
        def __init__(self, loader):
            self.loader = loader

        def __len__(self):
            return len(self.loader)

        def reset(self):
            self.loader.reset()

        def __iter__(self):
            for i, batch in enumerate(self.loader):
                if i == after_batches:
                    raise KeyboardInterrupt
                yield batch

    def wrapped(model, loader, *args, **kw):
        calls["n"] += 1
        if calls["n"] == epoch_index + 1:
            loader = Cut(loader)
        return real(model, loader, *args, **kw)

    monkeypatch.setattr(trainer_mod, "train_one_epoch", wrapped)


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["torch", "dali"])
def test_resume_matches_an_uninterrupted_run(tiny_root, tmp_path, monkeypatch, loader):
    full = tmp_path / "full"
    train(cfg_for(tiny_root, full, loader=loader))
    ref = metrics(full)

    # stopped cleanly after epoch 2 (--stop-after), then resumed to 3
    part = tmp_path / "part"
    s = train(cfg_for(tiny_root, part, loader=loader, stop_after=2))
    assert not s["finished"] and len(metrics(part)) == 2
    saved = TrainConfig.from_dict(read_checkpoint(part / "last.pt")["config"])
    train(resume_config(saved, {}), resume=True)
    got = metrics(part)
    assert [r["epoch"] for r in got] == [1, 2, 3]
    for a, b in zip(got, ref, strict=True):
        assert_same_metrics(a, b)

    # killed in the middle of epoch 2: last.pt still holds epoch 1; resume redoes epoch 2
    cut = tmp_path / "cut"
    _interrupt_in_epoch(monkeypatch, epoch_index=1, after_batches=1)
    with pytest.raises(TrainingInterrupted, match="interrupted during epoch 2; last.pt holds epoch 1"):
        train(cfg_for(tiny_root, cut, loader=loader))
    monkeypatch.undo()
    assert read_checkpoint(cut / "last.pt")["epoch"] == 1 and len(metrics(cut)) == 1
    train(cfg_for(tiny_root, cut, loader=loader), resume=True)
    got = metrics(cut)
    assert [r["epoch"] for r in got] == [1, 2, 3]
    assert_same_metrics(got[-1], ref[-1])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_root, tmp_path, monkeypatch):
    real = trainer_mod.get_loss("bce_dice")
    calls = {"n": 0}

    def poisoned(logits, target):
        calls["n"] += 1
        loss = real(logits, target)
        return loss * float("nan") if calls["n"] > 4 else loss  # epoch 2 (3 steps an epoch)

    monkeypatch.setattr(trainer_mod, "get_loss", lambda name: poisoned)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as e:
        train(cfg_for(tiny_root, run, log_every=100))
    msg = str(e.value)
    assert "NaN or infinite" in msg and "last good checkpoint" in msg and "last.pt" in msg
    assert "1 epochs done" in msg
    assert read_checkpoint(run / "last.pt")["epoch"] == 1
    assert len(metrics(run)) == 1
    assert math.isfinite(metrics(run)[0]["loss"])


def test_validation_at_full_resolution(tiny_root, tmp_path):
    run = tmp_path / "run"
    train(cfg_for(tiny_root, run, epochs=1, val_full_res=True, crop=192))
    rec = metrics(run)[0]
    assert rec["val_loss"] is None and 0 <= rec["mean_dice"] <= 1
    assert read_checkpoint(run / "best.pt")["card"]["crop"] == 192


def test_no_validation_fold_and_val_every(tiny_root, tmp_path):
    run = tmp_path / "all"
    train(cfg_for(tiny_root, run, epochs=2, fold=-1))
    recs = metrics(run)
    assert all(r["mean_dice"] is None for r in recs) and recs[0]["images"] == 8
    assert read_checkpoint(run / "best.pt")["epoch"] == 2  # mirrors last without validation
    run = tmp_path / "every"
    train(cfg_for(tiny_root, run, epochs=3, val_every=2))
    assert [r["mean_dice"] is None for r in metrics(run)] == [True, False, False]  # + last


def test_data_dependent_errors(tiny_root, tmp_path):
    with pytest.raises(ConfigError, match="--crop 300 is larger than the smallest image"):
        train(cfg_for(tiny_root, tmp_path / "a", crop=300))
    with pytest.raises(ConfigError, match="--fold 4 has no images"):
        train(cfg_for(tiny_root, tmp_path / "b", fold=4))
    with pytest.raises(ConfigError, match="must be a multiple of 32"):
        train(cfg_for(tiny_root, tmp_path / "c", arch="fpn", size=80))
    run = tmp_path / "d"
    train(cfg_for(tiny_root, run, epochs=1))
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg_for(tiny_root, run, epochs=1))
    train(cfg_for(tiny_root, run, epochs=1), overwrite=True)
    assert len(metrics(run)) == 1
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(cfg_for(tiny_root, tmp_path / "e"), resume=True)


def test_builds_the_mask_cache_when_missing(tiny_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_root / "train", root / "train")  # no hbseg-cache/ beside it
    run = tmp_path / "run"
    train(cfg_for(root, run, epochs=1))
    assert (root / "hbseg-cache" / "index.csv").is_file() and len(metrics(run)) == 1
