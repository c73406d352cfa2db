"""hbseg-eval: Dice against the JSON ground truth; mismatching CSVs are clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_main

from hbseg.data import rasterize, read_polygons, resolve_split, scan_split
from hbseg.data.classes import CLASSES, NUM_CLASSES
from hbseg.errors import DataError
from hbseg.infer.config import EvalConfig
from hbseg.infer.csv_io import write_submission
from hbseg.infer.evaluate import dice_scores, evaluate
from hbseg.infer.rle import encode_masks


@pytest.fixture(scope="module")
def train_df(tiny_root):
    return scan_split(resolve_split(tiny_root, "train"), labelled=True, exclude=())


def gt_masks(row) -> np.ndarray:
    return rasterize(read_polygons(row.json_path, row.width, row.height), row.height, row.width)


def write_gt_csv(path, df, transform=None) -> None:
    items = []
    for r in df.itertuples(index=False):
        m = gt_masks(r)
        items.append((r.image_name, encode_masks(transform(m) if transform else m)))
    write_submission(path, items)


def test_dice_scores():
    a = np.zeros((3, 4, 4), np.uint8)
    b = np.zeros((3, 4, 4), np.uint8)
    a[0, :2] = 1  # 8 px
    b[0, :1] = 1  # 4 px, all inside a: 2*4 / 12
    b[1, 0, 0] = 1  # pred empty, gt not: 0
    np.testing.assert_allclose(dice_scores(a, b), [8 / 12, 0.0, 1.0])  # empty-empty: 1


def test_ground_truth_csv_scores_one(tiny_root, train_df, tmp_path, monkeypatch, capsys):
    from hbseg.report.cli import eval_main

    pred = tmp_path / "gt.csv"
    write_gt_csv(pred, train_df)
    out = tmp_path / "res.json"
    assert run_main(eval_main, ["--pred", pred, "--data", tiny_root, "--out", out, "--quiet",
                                "--workers", 1], monkeypatch) == 0
    stdout = capsys.readouterr().out
    assert "mean" in stdout and "1.0000" in stdout and "Radius" in stdout
    res = json.loads(out.read_text())
    assert res["mean_dice"] == 1.0 and res["images"] == len(train_df)
    assert set(res["per_class"]) == set(CLASSES)
    assert all(v == 1.0 for v in res["per_image"].values())


def test_imperfect_csv_scores_below_one_and_writes_csv(tiny_root, train_df, tmp_path):
    pred = tmp_path / "pred.csv"

    def shift(m):
        return np.roll(m, 3, axis=2)  # three pixels to the right

    write_gt_csv(pred, train_df, shift)
    out = tmp_path / "res.csv"
    res = evaluate(EvalConfig(pred=str(pred), data=str(tiny_root), out=str(out), workers=2,
                              progress=False))
    assert 0.5 < res["mean_dice"] < 1.0
    from hbseg.infer.evaluate import write_result

    write_result(res, out)
    lines = out.read_text().splitlines()
    assert lines[0] == "class,dice" and lines[-1].startswith("mean,") and len(lines) == NUM_CLASSES + 2


def test_ids_and_fold_select_a_subset(tiny_root, train_df, tmp_path):
    pid = sorted(train_df["id"])[0]
    sub = train_df[train_df["id"] == pid]
    pred = tmp_path / "sub.csv"
    write_gt_csv(pred, sub)
    res = evaluate(EvalConfig(pred=str(pred), data=str(tiny_root), ids=(pid,), workers=1, progress=False))
    assert res["images"] == len(sub) and res["mean_dice"] == 1.0
    with pytest.raises(DataError, match="missing rows: no rows for image"):
        evaluate(EvalConfig(pred=str(pred), data=str(tiny_root), workers=1, progress=False))
    with pytest.raises(DataError, match="--ids: no patient ID999"):
        evaluate(EvalConfig(pred=str(pred), data=str(tiny_root), ids=("ID999",), workers=1, progress=False))


@pytest.fixture(scope="module")
def gt_lines(train_df, tmp_path_factory) -> list[str]:
    pred = tmp_path_factory.mktemp("gt") / "gt.csv"
    write_gt_csv(pred, train_df)
    return pred.read_text().splitlines()


def _replace(lines, k, text):
    return lines[:k] + [text] + lines[k + 1:]


CASES = {
    # line numbers are 1-based and count the header: lines[k] is line k + 1
    "missing row": (lambda ls, n: ls[:5] + ls[6:], "missing rows: image '{name}' (first row at line 2) has no row for class 'finger-5'"),
    "unknown class": (lambda ls, n: _replace(ls, 5, f"{n},finger-42,1 2"), "line 6: unknown class 'finger-42'"),
    "odd count": (lambda ls, n: _replace(ls, 5, f"{n},finger-5,1 2 3"), "line 6 ({name}, finger-5): RLE has an odd number of values (3)"),
    "past the end": (lambda ls, n: _replace(ls, 5, f"{n},finger-5,65530 10"), "line 6 ({name}, finger-5): RLE run 1 (65530 10) ends at pixel 65539, past the image's end (65536 pixels)"),
    "unknown image": (lambda ls, n: ls + [ln.replace(n, "ghost.png") for ln in ls[1:30]], "line {last}: image 'ghost.png' is not in the data"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_mismatching_csv_is_a_one_line_error_naming_the_row(case, tiny_root, gt_lines, tmp_path, monkeypatch, capsys):
    from hbseg.report.cli import eval_main

    mutate, needle = CASES[case]
    name = gt_lines[1].split(",")[0]  # the first image: 256 x 256 = 65536 pixels
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(mutate(gt_lines, name)) + "\n")
    code = run_main(eval_main, ["--pred", bad, "--data", tiny_root, "--quiet", "--workers", 1], monkeypatch)
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"error: {bad}: ") and err.count("\n") == 1  # one line, no traceback
    assert needle.format(name=name, last=len(gt_lines) + 1) in err
