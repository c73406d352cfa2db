"""hbseg-kfold: every fold trained, resumed and skipped; OOF covers every image once."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_main

from hbseg.data import load_cache_index
from hbseg.data.classes import NUM_CLASSES
from hbseg.tune.kfold_cli import main as kfold_main

TINY = ["--loader", "torch", "--device", "cpu", "--arch", "unet", "--encoder", "resnet18",
        "--size", "64", "--batch-size", "2", "--workers", "0", "--no-progress",
        "--warmup-epochs", "0.5"]


def test_train_takes_every_hbseg_train_option(monkeypatch, capsys):
    from hbseg.train.cli import train as train_command
    from hbseg.tune.kfold_cli import train as kfold_train

    theirs = {p.name for p in train_command.params} - {"fold", "resume", "out", "overwrite"}
    ours = {p.name for p in kfold_train.params}
    assert theirs <= ours and "folds" in ours
    assert run_main(kfold_main, ["train", "--help"], monkeypatch) == 0
    assert "CUDA_VISIBLE_DEVICES" in capsys.readouterr().out


def test_resume_of_a_folder_that_is_not_a_kfold_run(tmp_path, monkeypatch, capsys):
    code = run_main(kfold_main, ["train", "--resume", tmp_path], monkeypatch)
    assert code != 0 and "kfold-config.yaml" in capsys.readouterr().err


@pytest.mark.slow
def test_kfold_train_resume_skip_then_oof_covers_every_image(tiny_root, tmp_path, monkeypatch,
                                                              capsys):
    out = tmp_path / "kf"
    index = load_cache_index(tiny_root / "hbseg-cache")
    folds = sorted(index["fold"].unique())
    # every fold stops after 1 of its 2 epochs, as a time-sliced job would
    args = ["train", "--data", tiny_root, "--out", out, "--epochs", "2", "--stop-after", "1", *TINY]
    assert run_main(kfold_main, args, monkeypatch) == 0
    summary = json.loads((out / "kfold.json").read_text())
    assert sorted(int(k) for k in summary["folds"]) == folds
    assert not summary["all_finished"]
    # a second plain start would overwrite the runs: refused
    assert run_main(kfold_main, args, monkeypatch) != 0
    assert "--resume" in capsys.readouterr().err
    # --resume finishes every fold from its last.pt ...
    assert run_main(kfold_main, ["train", "--resume", out], monkeypatch) == 0
    summary = json.loads((out / "kfold.json").read_text())
    assert summary["all_finished"] and summary["folds_scored"] == len(folds)
    for k, f in summary["folds"].items():
        lines = (out / f"fold-{k}" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["epoch"] for x in lines] == [1, 2]  # continued, not restarted
        assert 0 <= f["best_mean_dice"] <= 1
    assert summary["mean_dice"] == pytest.approx(
        np.mean([f["best_mean_dice"] for f in summary["folds"].values()]))
    # ... and a third call has nothing left to do
    stamps = {k: (out / f"fold-{k}" / "last.pt").stat().st_mtime_ns for k in folds}
    capsys.readouterr()
    assert run_main(kfold_main, ["train", "--resume", out], monkeypatch) == 0
    assert capsys.readouterr().err.count("complete, skipped") == len(folds)
    assert stamps == {k: (out / f"fold-{k}" / "last.pt").stat().st_mtime_ns for k in folds}

    # out-of-fold predictions: each fold's model on its own validation images
    assert run_main(kfold_main, ["oof", out, "--device", "cpu", "--loader", "cv2", "--quiet"],
                    monkeypatch) == 0
    said = capsys.readouterr().out
    expected_mb = (index["height"] * index["width"] * NUM_CLASSES + 128).sum() / 1e6
    assert f"{expected_mb:.1f} MB as uint8" in said  # disk use, printed before predicting
    oof = pd.read_csv(out / "oof" / "oof.csv")
    assert sorted(oof["image_name"]) == sorted(index["image_name"])  # every image exactly once
    assert not oof["image_name"].duplicated().any()
    truth = dict(zip(index["image_name"], index["fold"], strict=True))
    assert all(truth[n] == f for n, f in zip(oof["image_name"], oof["fold"], strict=True))
    meta = json.loads((out / "oof" / "oof.json").read_text())
    for r in oof.itertuples(index=False):
        arr = np.load(out / "oof" / r.file)
        assert arr.dtype == np.uint8 and arr.shape == (NUM_CLASSES, r.height, r.width)
        assert meta["folds"][str(r.fold)]["checkpoint"].endswith(f"fold-{r.fold}/best.pt")

    # and the tuner reads them
    from hbseg.tune.cli import main as tune_main

    assert run_main(tune_main, [out / "oof", "--out", tmp_path / "tuned", "--quiet",
                                "--min-sizes", "0,50,500"], monkeypatch) == 0
    report = json.loads((tmp_path / "tuned" / "tune-report.json").read_text())
    assert report["images"] == len(index)
    assert report["mean"]["step2_in_sample"] >= report["mean"]["baseline"]
    assert report["mean"]["step2_cv"] is not None


def test_cli_modules_are_light_and_tune_exports_resolve():
    import subprocess
    import sys

    code = ("import sys, hbseg.tune.kfold_cli, hbseg.tune.cli, hbseg.tune; "
            "print('torch' in sys.modules, 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"  # --help stays instant
    import hbseg.tune as ht

    for name in ht.__all__:
        assert getattr(ht, name) is not None
