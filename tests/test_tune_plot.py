"""tune-report.png: written beside the other files, drawn from the report, sized by the
OOF set's own class list (the hands' 29 or any other)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from test_tune import planted, write_oof  # noqa: F401  (planted: the module-scoped fixture)

from hbseg.tune import plot as plot_mod
from hbseg.tune.config import TuneConfig
from hbseg.tune.report import FILES
from hbseg.tune.tuner import run_tune

THREE = ("disc", "left-pedicle", "right-pedicle")


def read_png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, f"{path} is not a readable PNG"
    return image


def test_run_tune_writes_the_picture(planted):  # noqa: F811
    _, out, report, _, _ = planted
    png = out / "tune-report.png"
    assert "tune-report.png" in FILES and str(png) in report["files"]
    h, w, _ = read_png(png).shape
    assert h > 400 and 400 < w < 2000  # 29 rows of labels, not a thumbnail, not a poster
    assert not list(out.glob(".*.tmp"))  # written under a temporary name, then renamed


def three_class_oof(folder: Path) -> Path:
    """6 images, 3 folds, 3 classes; class 0 is best cut at 0.3, the others are clean."""
    rng = np.random.default_rng(7)
    side = 24
    gts, probs = [], []
    for _ in range(6):
        gt = np.zeros((3, side, side), np.uint8)
        for c in range(3):
            y, x = rng.integers(0, side - 8, 2)
            gt[c, y:y + 8, x:x + 8] = 1
        p = np.where(gt == 1, 0.9, 0.1).astype(np.float32)
        p[0] = np.where(gt[0] == 1, rng.uniform(0.31, 0.40, (side, side)),
                        rng.uniform(0.15, 0.29, (side, side)))
        gts.append(gt)
        probs.append(p)
    return write_oof(folder, gts, probs, [i % 3 for i in range(6)], THREE)


def test_three_classes_give_a_shorter_picture(planted, tmp_path):  # noqa: F811
    _, hands_out, _, _, _ = planted
    out = tmp_path / "tuned"
    r = run_tune(TuneConfig(oof=(str(three_class_oof(tmp_path / "oof")),), out=str(out),
                            min_sizes=(0, 5, 20), progress=False))
    assert r["classes"] == list(THREE)
    three = read_png(out / "tune-report.png")
    hands = read_png(hands_out / "tune-report.png")
    assert 100 < three.shape[0] < hands.shape[0] - 300  # height follows the class count


def hand_built_report(cross_validated: bool) -> dict:
    """Three classes; only the second gains from tuning (threshold 0.3, min size 10)."""
    rows = {
        "a": dict(baseline=0.90, step2_in_sample=0.90, step2_cv=0.90, threshold=0.5, min_size=0),
        "b": dict(baseline=0.60, step2_in_sample=0.85, step2_cv=0.80, threshold=0.3, min_size=10),
        "c": dict(baseline=0.70, step2_in_sample=0.70, step2_cv=0.70, threshold=0.5, min_size=0),
    }
    for row in rows.values():
        row.update(step1_in_sample=row["step2_in_sample"], step1_cv=row["step2_cv"])
        if not cross_validated:
            row.update(step1_cv=None, step2_cv=None)
    mean = {k: (None if rows["a"][k] is None else float(np.mean([r[k] for r in rows.values()])))
            for k in ("baseline", "step1_in_sample", "step1_cv", "step2_in_sample", "step2_cv")}
    per_fold = {str(f): {"thresholds": [0.5, 0.3 if f else 0.4, 0.5], "min_sizes": [0, 10, 0]}
                for f in range(2)} if cross_validated else None
    return {"members": ["oof"], "images": 4, "folds": [0, 1] if cross_validated else [0],
            "classes": list(rows), "steps": ["baseline", "thresholds", "min_sizes"], "mean": mean,
            "per_class": rows, "thresholds": {k: r["threshold"] for k, r in rows.items()},
            "min_sizes": {k: r["min_size"] for k, r in rows.items()}, "weights": None,
            "chosen_per_held_out_fold": per_fold,
            "candidates": {"thresholds": [0.3, 0.4, 0.5], "min_sizes": [0, 10, 100],
                           "weights": [[1.0]]},
            "config": {"default_threshold": 0.5, "tune_thresholds": True}}


@pytest.mark.parametrize("cross_validated", [True, False])
def test_the_picture_is_drawn_from_the_report(tmp_path, monkeypatch, cross_validated):
    drawn = []
    real_save = plot_mod.atomic_savefig
    monkeypatch.setattr(plot_mod, "atomic_savefig",
                        lambda fig, path, title=None: drawn.append(fig) or real_save(fig, path, title))
    r = hand_built_report(cross_validated)
    path = plot_mod.plot_tune_report(r, tmp_path / "p.png", "title")
    assert path == tmp_path / "p.png"
    assert read_png(path).shape[0] > 100
    dice, thresholds, sizes = drawn[0].axes
    assert [t.get_text() for t in dice.get_yticklabels()] == ["a", "b", "c"]
    title = dice.get_title()
    assert "0.7333" in title  # the untuned mean
    want = "0.8000 cross-validated (0.8167 in sample)" if cross_validated else "0.8167 in sample"
    assert want in title
    # the chosen values are the last scatter of each panel, one point per class in order
    chosen_thr = thresholds.collections[-1].get_offsets()
    np.testing.assert_allclose(chosen_thr[:, 0], [0.5, 0.3, 0.5])
    np.testing.assert_allclose(sizes.collections[-1].get_offsets()[:, 0], [0, 10, 0])
    gains = [t.get_text() for t in dice.child_axes[0].get_yticklabels()]  # right-hand labels
    assert gains == ["+0.0000", "+0.2000" if cross_validated else "+0.2500", "+0.0000"]


def test_no_size_panel_when_sizes_were_not_tuned(tmp_path, monkeypatch):
    drawn = []
    real_save = plot_mod.atomic_savefig
    monkeypatch.setattr(plot_mod, "atomic_savefig",
                        lambda fig, path, title=None: drawn.append(fig) or real_save(fig, path, title))
    r = hand_built_report(True)
    r["candidates"]["min_sizes"] = [0]
    plot_mod.plot_tune_report(r, tmp_path / "p.png")
    assert len(drawn[0].axes) == 2
