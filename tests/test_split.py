"""The competition baseline's GroupKFold split, checked against scikit-learn itself."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from conftest import make_dataset, run_main

from hbseg.data.split import SPLITS, apply_split, baseline_folds, group_kfold
from hbseg.errors import ConfigError

sklearn = pytest.importorskip("sklearn")
from sklearn.model_selection import GroupKFold  # noqa: E402

# scikit-learn <= 1.8 orders equally sized groups with numpy's default argsort, 1.9 with a
# stable one; group_kfold offers both, and must equal the installed one's default.
LEGACY = tuple(int(x) for x in sklearn.__version__.split(".")[:2]) < (1, 9)


def _sklearn_folds(filenames, groups) -> np.ndarray:
    """The baseline's loop: fold i is the i-th test split."""
    folds = np.full(len(filenames), -1)
    ys = [0 for _ in filenames]
    for i, (_, y) in enumerate(GroupKFold(n_splits=5).split(filenames, ys, groups)):
        folds[y] = i
    return folds


@pytest.mark.parametrize("seed", range(6))
def test_group_kfold_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    sizes = np.full(n, 2) if seed % 2 == 0 else rng.integers(1, 5, n)  # ties, then mixed
    ids = rng.permutation([f"ID{i:03d}" for i in range(n)])
    groups = np.repeat(ids, sizes)
    names = [f"{g}/image{k}.png" for k, g in enumerate(groups)]
    assert np.array_equal(group_kfold(groups, 5, legacy=LEGACY), _sklearn_folds(names, groups))


def test_both_tie_orders_agree_when_every_patient_has_two_images():
    groups = np.repeat([f"ID{i:03d}" for i in range(400)], 2)
    stable, legacy = group_kfold(groups), group_kfold(groups, legacy=True)
    assert np.array_equal(stable, legacy)
    assert np.bincount(stable).tolist() == [160] * 5
    with pytest.raises(ConfigError, match="cannot split 3 patients into 5 folds"):
        group_kfold(["a", "b", "c"])


def test_baseline_folds_follow_the_baseline_code(tmp_path):
    image_root = tmp_path / "train" / "DCM"
    rng = np.random.default_rng(1)
    for i in range(11):
        for k in range(int(rng.integers(1, 4))):
            p = image_root / f"ID{i:03d}" / f"image{i}{k}_{'LR'[k % 2]}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()
    (image_root / "ID000" / "notes.txt").touch()  # not a PNG: the baseline skips it
    # the baseline, verbatim in spirit: relative paths from os.walk, sorted
    pngs = sorted(
        os.path.relpath(os.path.join(root, f), start=image_root)
        for root, _, files in os.walk(image_root) for f in files
        if os.path.splitext(f)[1].lower() == ".png"
    )
    groups = [os.path.dirname(p) for p in pngs]
    want = dict(zip(groups, _sklearn_folds(np.array(pngs), groups).tolist(), strict=True))
    assert baseline_folds(tmp_path / "train", legacy=LEGACY) == want


def test_apply_split_is_computed_before_exclusions(tmp_path):
    from hbseg.data import scan_split

    root = make_dataset(tmp_path / "d", ids=6, size=64, test_ids=0)
    full = scan_split(root / "train", exclude=())
    assert apply_split(full, "seeded", root) is full
    gkf = apply_split(full, "groupkfold", root)
    assert (gkf.groupby("id")["fold"].nunique() == 1).all()
    assert sorted(gkf["fold"].unique()) == [0, 1, 2, 3, 4]
    # the baseline splits every PNG: dropping a patient moves nobody else
    dropped = sorted(full["id"].unique())[0]
    less = apply_split(scan_split(root / "train", exclude=[dropped]), "groupkfold", root)
    assert dict(zip(less["id"], less["fold"], strict=True)) == {
        i: f for i, f in zip(gkf["id"], gkf["fold"], strict=True) if i != dropped}
    with pytest.raises(ConfigError, match="did you mean 'groupkfold'"):
        apply_split(full, "groupkfol", root)
    assert SPLITS[0] == "seeded"


def test_cli_counts_the_chosen_folds(tmp_path, monkeypatch, capsys):
    from hbseg.data.cli import main
    from hbseg.train.config import TrainConfig

    root = make_dataset(tmp_path / "d", ids=6, size=64, test_ids=0)
    shutil.rmtree(root / "train" / "DCM" / "ID005")  # 5 patients: one per fold
    shutil.rmtree(root / "train" / "outputs_json" / "ID005")
    assert run_main(main, ["check", root, "--fold-split", "groupkfold"], monkeypatch) == 0
    assert "images per fold: {0: 2, 1: 2, 2: 2, 3: 2, 4: 2}" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="unknown --split"):
        TrainConfig(out="r", data="d", split="kfold")


def test_described_data_sets_split_by_their_own_groups(tmp_path):
    """A described data set has no train/DCM: its index's groups are dealt directly, with
    the same GroupKFold, and a group never spans two folds."""
    import pandas as pd

    from hbseg.data.split import apply_split, group_kfold

    ids = [f"G{g:02d}" for g in range(7) for _ in range(g % 3 + 1)]
    index = pd.DataFrame({"id": ids, "image_name": [f"{i}-{k}.png" for k, i in enumerate(ids)],
                          "fold": 0})
    out = apply_split(index, "groupkfold", tmp_path, described=True)  # tmp_path: no DCM here
    assert list(out["fold"]) == list(group_kfold(ids))
    assert out.groupby("id")["fold"].nunique().max() == 1 and out["fold"].nunique() == 5
    assert list(index["fold"]) == [0] * len(ids)  # the input is left alone
