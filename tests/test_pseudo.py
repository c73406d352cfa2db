"""Pseudo-labels: a submission CSV decoded into the mask cache's format and added to
training by repetition; plus one short run with every competition option at once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hbseg.data.classes import NUM_CLASSES
from hbseg.errors import ConfigError, DataError
from hbseg.train.config import TrainConfig
from hbseg.train.pseudo import build_pseudo_cache, expand_by_weight, pseudo_cache_dir


def _masks(name: str, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    return (rng.random((NUM_CLASSES, h, w)) > 0.9).astype(np.uint8)


def write_pseudo_csv(path: Path, test_dir: Path, skip: int = 0) -> dict[str, np.ndarray]:
    """A submission for the test images (all but the last ``skip``), random masks."""
    from hbseg.data import scan_split
    from hbseg.infer.csv_io import write_submission
    from hbseg.infer.rle import encode_masks

    df = scan_split(test_dir, labelled=False, exclude=())
    rows = df.iloc[:len(df) - skip]
    masks = {r.image_name: _masks(r.image_name, r.height, r.width) for r in rows.itertuples()}
    write_submission(path, [(n, encode_masks(m)) for n, m in masks.items()])
    return masks


@pytest.fixture(scope="module")
def comp_root(tmp_path_factory) -> Path:
    """6 labelled patients (enough for 5 folds) and 2 unlabelled ones, 64 px, cached."""
    from conftest import make_dataset

    from hbseg.data import build_cache

    root = make_dataset(tmp_path_factory.mktemp("comp") / "data", ids=6, size=64, test_ids=2)
    build_cache(root, workers=1, progress=False)
    return root


def test_csv_masks_round_trip_through_the_cache_format(comp_root, tmp_path):
    from hbseg.data import read_packed_png, unpack_masks

    csv = tmp_path / "sub.csv"
    want = write_pseudo_csv(csv, comp_root / "test", skip=1)
    out = tmp_path / "pseudo"
    df = build_pseudo_cache(csv, comp_root, out, workers=1, progress=False)
    assert len(df) == len(want) == 3  # the image the CSV leaves out is not used
    for r in df.itertuples():
        assert Path(r.image_path).is_file() and r.json_path == ""
        assert np.array_equal(unpack_masks(read_packed_png(r.mask_path)), want[r.image_name])
    # unchanged CSV: reused as is; a new CSV: decoded again
    stamp = (out / "index.csv").stat().st_mtime_ns
    build_pseudo_cache(csv, comp_root / "test", out, progress=False)
    assert (out / "index.csv").stat().st_mtime_ns == stamp
    write_pseudo_csv(csv, comp_root / "test")
    assert len(build_pseudo_cache(csv, comp_root, out, progress=False)) == 4
    a, b = pseudo_cache_dir("c/hbseg-cache", csv, comp_root), pseudo_cache_dir("c/x", tmp_path, comp_root)
    assert a.parent == Path("c/hbseg-pseudo") and a.name.startswith("sub-") and a != b


def test_bad_pseudo_inputs_name_the_problem(comp_root, tmp_path):
    csv = tmp_path / "sub.csv"
    first = next(iter(write_pseudo_csv(csv, comp_root / "test")))
    csv.write_text(csv.read_text().replace(first, "imagX.png"))  # unknown from line 2 on
    with pytest.raises(DataError, match=r"line 2: image 'imagX.*is not in"):
        build_pseudo_cache(csv, comp_root, tmp_path / "p", progress=False)
    with pytest.raises(ConfigError, match="go together"):
        TrainConfig(out="r", data="d", pseudo=str(csv))
    with pytest.raises(ConfigError, match="baseline"):
        TrainConfig(out="r", data="d", pseudo="a.csv", pseudo_data="t", loader="baseline")
    with pytest.raises(ConfigError, match="positive"):
        TrainConfig(out="r", data="d", pseudo="a.csv", pseudo_data="t", pseudo_weight=0)


def test_weights_become_repetitions():
    index = pd.DataFrame({"image_path": [f"i{k}" for k in range(10)],
                          "weight": [1.0] * 2 + [2.0] * 2 + [0.5] * 6})
    out = expand_by_weight(index, seed=0)
    counts = out["image_path"].value_counts()
    assert counts[["i0", "i1"]].tolist() == [1, 1] and counts[["i2", "i3"]].tolist() == [2, 2]
    halves = [f"i{k}" for k in range(4, 10) if f"i{k}" in counts]
    assert len(halves) == 3 and all(counts[h] == 1 for h in halves)  # exactly half of them
    assert expand_by_weight(index, seed=0).equals(out)  # a seed draws the same rows
    assert len(expand_by_weight(index.assign(weight=1.5), seed=3)) == 15


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["torch", "dali"])
def test_competition_options_train_together(comp_root, tmp_path, loader):
    """GroupKFold folds, a loss combination, pseudo-labels and TensorBoard in one run."""
    from test_tblog import read_scalars

    from hbseg.data.split import apply_split
    from hbseg.train import trainer as trainer_mod
    from hbseg.train.trainer import train

    csv = tmp_path / "sub.csv"
    write_pseudo_csv(csv, comp_root / "test")  # 4 test images
    run = tmp_path / "run"
    cfg = TrainConfig(data=str(comp_root), out=str(run), loader=loader, device="cpu",
                      encoder="resnet18", size=64, batch_size=4, epochs=1, workers=1,
                      progress=False, split="groupkfold", loss="dice:0.6,bce:0.4",
                      pseudo=str(csv), pseudo_data=str(comp_root / "test"), pseudo_weight=1.5)
    seen = {}
    real_make = trainer_mod.make_loader

    def spy(kind, index, lcfg, mode, device):
        seen[mode] = index
        return real_make(kind, index, lcfg, mode, device)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_mod, "make_loader", spy)
        train(cfg)
    from hbseg.data import load_cache_index

    folds = apply_split(load_cache_index(comp_root / "hbseg-cache"), "groupkfold", comp_root)
    val_ids = set(folds[folds["fold"] == 0]["id"])
    assert set(seen["eval"]["id"]) == val_ids  # the baseline's fold 0 validates
    train_rows = seen["train"]
    assert not (set(train_rows["id"]) & val_ids)
    n_real = int((folds["fold"] != 0).sum())
    assert int((~train_rows["pseudo"]).sum()) == n_real and int(train_rows["pseudo"].sum()) == 6
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["images"] for r in recs] == [n_real + 6]  # 4 pseudo images, weight 1.5
    tb = read_scalars(run / "tb")
    assert tb["train/loss"] == pytest.approx({r["epoch"]: r["loss"] for r in recs})
    assert tb["val/mean_dice"] == pytest.approx({r["epoch"]: r["mean_dice"] for r in recs})


def test_cli_options_reach_the_config(comp_root, tmp_path):
    from click.testing import CliRunner

    from hbseg.train.cli import train as train_cmd

    csv = tmp_path / "sub.csv"
    write_pseudo_csv(csv, comp_root / "test")
    base = ["--data", comp_root, "--device", "cpu", "--out", tmp_path / "run"]
    r = CliRunner().invoke(train_cmd, [str(a) for a in [*base, "--pseudo", csv]])
    assert r.exit_code == 2 and "--pseudo CSV and --pseudo-data FOLDER go together" in r.output
    r = CliRunner().invoke(train_cmd, [str(a) for a in [*base, "--loss", "dice:0.6,bce:x"]])
    assert r.exit_code == 2 and "loss weight 'x' of 'dice'" not in r.output
    assert "loss weight 'x' of 'bce' is not a number" in r.output
    assert not (tmp_path / "run").exists()
