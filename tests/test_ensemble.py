"""hbseg-ensemble: hard votes of CSVs and soft votes of saved probabilities."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from hbseg.data.classes import CLASSES, NUM_CLASSES
from hbseg.errors import ConfigError, DataError
from hbseg.infer.config import EnsembleConfig
from hbseg.infer.csv_io import read_submission, write_submission
from hbseg.infer.ensemble import hard_vote, run_ensemble, soft_vote
from hbseg.infer.rle import encode_masks

H, W = 12, 10


def _masks(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((NUM_CLASSES, H, W)) > 0.5


def _csvs(tmp_path, n: int = 3, names=("a.png", "b.png")) -> tuple[list[str], dict]:
    paths, masks = [], {}
    for k in range(n):
        p = tmp_path / f"m{k}.csv"
        items = []
        for j, name in enumerate(names):
            m = _masks(10 * k + j)
            masks[(k, name)] = m
            items.append((name, encode_masks(m)))
        write_submission(p, items)
        paths.append(str(p))
    return paths, masks


@pytest.mark.parametrize("k", [1, 2, 3])
def test_hard_vote(tmp_path, k):
    paths, masks = _csvs(tmp_path)
    out = tmp_path / "vote.csv"
    cfg = EnsembleConfig(out=str(out), csvs=tuple(paths), min_votes=k, size=(H, W), progress=False)
    assert hard_vote(cfg)["min_votes"] == k
    sub = read_submission(out)
    for name in ("a.png", "b.png"):
        votes = sum(masks[(i, name)].astype(int) for i in range(3))
        np.testing.assert_array_equal(sub.masks(name, H, W), votes >= k)


def test_hard_vote_default_majority_and_cli(tmp_path, monkeypatch):
    from hbseg.infer.cli import ensemble_main

    paths, masks = _csvs(tmp_path)
    out = tmp_path / "vote.csv"
    monkeypatch.setattr(sys, "argv", ["hbseg-ensemble", *paths, "--size", f"{H}x{W}", "--out", str(out), "--quiet"])
    ensemble_main()
    votes = sum(masks[(i, "a.png")].astype(int) for i in range(3))
    np.testing.assert_array_equal(read_submission(out).masks("a.png", H, W), votes >= 2)
    assert json.loads((tmp_path / "vote.csv.config.json").read_text())["summary"]["mode"] == "hard"


def test_hard_vote_sizes_from_data(tmp_path):
    import cv2

    img_dir = tmp_path / "data" / "DCM" / "ID001"
    img_dir.mkdir(parents=True)
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(img_dir / name), np.zeros((H, W), np.uint8))
    paths, masks = _csvs(tmp_path, n=2)
    out = tmp_path / "vote.csv"
    run_ensemble(EnsembleConfig(out=str(out), csvs=tuple(paths), min_votes=2,
                                data=str(tmp_path / "data"), progress=False))
    both = masks[(0, "b.png")] & masks[(1, "b.png")]
    np.testing.assert_array_equal(read_submission(out).masks("b.png", H, W), both)
    # sizes that are too small for the RLEs are an error naming the row
    with pytest.raises(DataError, match="past the image's end"):
        hard_vote(EnsembleConfig(out=str(out), csvs=tuple(paths), size=(3, 3), progress=False))


def test_members_must_cover_the_same_images(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a, _ = _csvs(tmp_path / "x", n=1)
    b, _ = _csvs(tmp_path / "y", n=1, names=("a.png",))
    with pytest.raises(DataError, match="no rows for image 'b.png'"):
        hard_vote(EnsembleConfig(out=str(tmp_path / "o.csv"), csvs=(a[0], b[0]), size=(H, W), progress=False))


@pytest.mark.parametrize("kw,needle", [
    ({"csvs": ("a.csv",)}, "at least 2 members"),
    ({"csvs": ("a.csv", "b.csv"), "min_votes": 3}, "--min-votes must be between 1 and 2"),
    ({"csvs": ("a.csv", "b.csv"), "weights": (1.0, 2.0)}, "soft vote"),
    ({}, "either submission CSVs"),
    ({"csvs": ("a.csv", "b.csv"), "probs": ("p", "q")}, "either submission CSVs"),
])
def test_config_errors(kw, needle):
    with pytest.raises(ConfigError, match=None) as e:
        EnsembleConfig(out="o.csv", **kw)
    assert needle in str(e.value)


def _probs_dir(folder, probs: dict[str, np.ndarray]) -> str:
    folder.mkdir()
    index = {"class_names": list(CLASSES), "images": {}}
    for name, p in probs.items():
        stem = name.rsplit(".", 1)[0]
        np.save(folder / f"{stem}.npy", p.astype(np.float16))
        index["images"][name] = {"file": f"{stem}.npy", "height": p.shape[1], "width": p.shape[2]}
    (folder / "index.json").write_text(json.dumps(index))
    return str(folder)


def test_soft_vote_weighted_mean(tmp_path):
    rng = np.random.default_rng(0)
    pa = {"a.png": rng.random((NUM_CLASSES, H, W)).astype(np.float32)}
    pb = {"a.png": rng.random((NUM_CLASSES, H, W)).astype(np.float32)}
    da, db = _probs_dir(tmp_path / "pa", pa), _probs_dir(tmp_path / "pb", pb)
    out = tmp_path / "soft.csv"
    soft_vote(EnsembleConfig(out=str(out), probs=(da, db), weights=(3.0, 1.0), threshold=0.4,
                             progress=False))
    mean = 0.75 * pa["a.png"].astype(np.float16).astype(np.float32) + 0.25 * pb["a.png"].astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(read_submission(out).masks("a.png", H, W), mean > 0.4)
    # a folder without index.json is not a --save-probs folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no index.json"):
        soft_vote(EnsembleConfig(out=str(out), probs=(da, str(tmp_path / "empty")), progress=False))
