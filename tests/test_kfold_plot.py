"""kfold.png: drawn with kfold.json from hand-made fold folders, whatever state they are in."""

from __future__ import annotations

import copy
import json

import cv2
import pytest

from hbseg.data.classes import CLASSES
from hbseg.errors import DataError
from hbseg.train.config import TrainConfig, save_config
from hbseg.train.kfold import KFOLD_CONFIG, summarize_kfold
from hbseg.train.kfold_plot import plot_kfold


def _record(epoch: int, classes, dice: float | None) -> dict:
    return {"epoch": epoch, "loss": 1.0 / epoch, "val_loss": None if dice is None else 0.5,
            "mean_dice": dice,
            "dice": None if dice is None else {c: dice * (1 - i / (2 * len(classes)))
                                               for i, c in enumerate(classes)}}


def _kfold_dir(root, epochs: int, folds: dict[int, list[dict] | None]):
    """DIR/kfold-config.yaml and DIR/fold-K/metrics.jsonl (None: a folder without one)."""
    root.mkdir()
    save_config(TrainConfig(out=str(root), data=str(root / "data"), epochs=epochs),
                root / KFOLD_CONFIG)
    for k, records in folds.items():
        run = root / f"fold-{k}"
        run.mkdir()
        if records is not None:
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def _decodes(path) -> tuple[int, int]:
    img = cv2.imread(str(path))
    assert img is not None, path
    return img.shape[:2]


def test_hand_folds_running_unvalidated_and_empty(tmp_path):
    out = _kfold_dir(tmp_path / "kf", epochs=3, folds={
        0: [_record(1, CLASSES, 0.4), _record(2, CLASSES, 0.7), _record(3, CLASSES, 0.6)],
        1: [_record(1, CLASSES, None), _record(2, CLASSES, None)],  # no validation yet
        2: [],  # empty metrics.jsonl: started, no epoch finished
        3: [_record(1, CLASSES, 0.5)],  # still running
        4: None,  # no metrics.jsonl at all
    })
    s = summarize_kfold(out)
    written = (out / "kfold.json").read_text()
    assert json.loads(written) == s
    assert s["classes"] == list(CLASSES) and list(s["per_class"]) == list(CLASSES)
    assert s["folds_scored"] == 2 and s["mean_dice"] == pytest.approx((0.7 + 0.5) / 2)
    assert s["folds"]["0"]["best_epoch"] == 2 and s["folds"]["1"]["best_mean_dice"] is None
    assert s["folds"]["2"]["epochs_done"] == 0 and "4" not in s["folds"]
    assert not s["folds"]["3"]["finished"]
    hands = _decodes(out / "kfold.png")

    # drawing again changes neither the summary nor kfold.json
    before = copy.deepcopy(s)
    plot_kfold(s, {"0": [_record(1, CLASSES, 0.4)]}, out / "again.png")
    assert s == before and (out / "kfold.json").read_text() == written
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries

    # a described data set's 3 classes: a shorter picture, its own names in kfold.json
    names = ["L1", "L2", "S1"]
    small = _kfold_dir(tmp_path / "kf3", epochs=2, folds={
        0: [_record(1, names, 0.3), _record(2, names, 0.8)],
        1: [_record(1, names, 0.9), _record(2, names, 0.6)],
        2: [],
    })
    s3 = summarize_kfold(small)
    assert s3["classes"] == names and s3["all_finished"] is False
    assert s3["per_class"]["L1"] == pytest.approx((0.8 + 0.9) / 2)
    three = _decodes(small / "kfold.png")
    assert three[0] < hands[0] and three[1] == hands[1]  # height follows the class count


def test_no_validated_fold_still_draws(tmp_path):
    out = _kfold_dir(tmp_path / "kf", epochs=2, folds={0: [], 1: [_record(1, CLASSES, None)],
                                                        2: None})
    s = summarize_kfold(out)
    assert s["mean_dice"] is None and s["classes"] is None and s["per_class"] is None
    _decodes(out / "kfold.png")


def test_folds_on_other_classes_are_refused_before_writing(tmp_path):
    out = _kfold_dir(tmp_path / "kf", epochs=1, folds={0: [_record(1, ["a", "b"], 0.5)],
                                                        1: [_record(1, ["a", "c"], 0.5)]})
    with pytest.raises(DataError, match="fold 1 was validated on other classes") as e:
        summarize_kfold(out)
    assert str(out / "fold-1" / "metrics.jsonl") in str(e.value)
    assert not (out / "kfold.json").exists() and not (out / "kfold.png").exists()
