"""hbseg-ensemble and hbseg-eval --report on data sets that are not hands: the classes come
from the CSVs or the data set description, the ground truth from the mask cache."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import run_main
from test_any_dataset import _masks, _shapes
from test_ensemble import _probs_dir
from test_report import _page_data

from hbseg.data.masks import read_packed_png, unpack_masks
from hbseg.errors import ConfigError, DataError
from hbseg.infer.config import EnsembleConfig
from hbseg.infer.csv_io import read_submission, write_submission
from hbseg.infer.ensemble import hard_vote, run_ensemble, soft_vote
from hbseg.infer.rle import encode_masks

SIZE = 64


def _write(path: Path, masks: dict[str, np.ndarray], classes, order=None) -> str:
    """A submission of ``masks`` ([C, H, W] in ``classes`` order), its rows in ``order``."""
    order = list(range(len(classes))) if order is None else order
    items = [(n, encode_masks(m[order])) for n, m in masks.items()]
    write_submission(path, items, [classes[k] for k in order])
    return str(path)


@pytest.fixture(scope="module")
def spine(tmp_path_factory):
    """4 grey spine images (6 classes) and three members: the ground truth, the ground truth
    with L1 missing and S1 grown on every image, and the ground truth 3 px to the right
    (its rows in reverse class order)."""
    root = tmp_path_factory.mktemp("spine")
    spec = _shapes(root, "spine", "index-png", images=4, size=SIZE)
    gt = _masks(root, spec.num_classes)
    missing, shifted = {}, {}
    for name, m in gt.items():
        a = m.copy()
        a[0] = 0
        a[5, :, :SIZE // 2] = 1
        missing[name] = a
        shifted[name] = np.roll(m, 3, axis=2)
    classes = list(spec.classes)
    csvs = (_write(root / "gt.csv", gt, classes), _write(root / "missing.csv", missing, classes),
            _write(root / "shifted.csv", shifted, classes, order=list(range(6))[::-1]))
    votes = {n: gt[n].astype(int) + missing[n] + shifted[n] for n in gt}
    return {"root": root, "spec": spec, "gt": gt, "csvs": csvs, "votes": votes}


def test_hard_vote_uses_the_data_sets_classes_and_sizes(spine, tmp_path):
    out = tmp_path / "vote.csv"
    s = run_ensemble(EnsembleConfig(out=str(out), csvs=spine["csvs"], data=str(spine["root"]),
                                    progress=False))
    assert s["images"] == 4 and s["classes"] == 6
    lines = out.read_text().splitlines()
    assert [ln.split(",")[1] for ln in lines[1:7]] == list(spine["spec"].classes)
    sub = read_submission(out, spine["spec"].classes)
    for name, v in spine["votes"].items():
        want = v >= 2
        assert not np.array_equal(want, spine["gt"][name])  # the vote is not just one member
        np.testing.assert_array_equal(sub.masks(name, SIZE, SIZE), want)
    # without --data: the CSVs' own classes (the first's row order) and one size for all
    run_ensemble(EnsembleConfig(out=str(out), csvs=spine["csvs"], min_votes=3, size=(SIZE, SIZE),
                                progress=False))
    sub = read_submission(out, spine["spec"].classes)
    assert sub.class_names == spine["spec"].classes
    for name, v in spine["votes"].items():
        np.testing.assert_array_equal(sub.masks(name, SIZE, SIZE), v >= 3)


def test_hard_vote_cli_with_min_sizes_of_the_data_sets_classes(spine, tmp_path, monkeypatch, capsys):
    from hbseg.infer.cli import ensemble_main

    sizes = tmp_path / "min_sizes.json"
    sizes.write_text(json.dumps({"S1": SIZE * SIZE}))  # no S1 component is this big
    out = tmp_path / "vote.csv"
    args = [*spine["csvs"], "--data", spine["root"], "--min-sizes", sizes, "--out", out, "--quiet"]
    assert run_main(ensemble_main, args, monkeypatch) == 0
    sub = read_submission(out, spine["spec"].classes)
    for name, v in spine["votes"].items():
        got = sub.masks(name, SIZE, SIZE)
        assert got[5].sum() == 0 and (v[5] >= 2).any()
        np.testing.assert_array_equal(got[:5], v[:5] >= 2)
    # a bone's name is not a class of this data set
    sizes.write_text(json.dumps({"finger-1": 5}))
    capsys.readouterr()
    assert run_main(ensemble_main, args, monkeypatch) == 1
    assert "min_sizes: unknown class 'finger-1'" in capsys.readouterr().err


def test_hard_vote_refuses_members_with_other_classes(spine, tmp_path):
    gt, classes = spine["gt"], list(spine["spec"].classes)
    renamed = _write(tmp_path / "renamed.csv", gt, classes[:5] + ["sacrum"])
    fewer = _write(tmp_path / "fewer.csv", {n: m[:5] for n, m in gt.items()}, classes[:5])
    out = tmp_path / "vote.csv"
    for bad, needle in ((renamed, "has class(es) 'sacrum', which "),
                        (fewer, "lacks class(es) 'S1', which ")):
        with pytest.raises(DataError, match=None) as e:
            hard_vote(EnsembleConfig(out=str(out), csvs=(spine["csvs"][0], bad), size=(SIZE, SIZE),
                                     progress=False))
        assert e.value.path == Path(bad) and needle + spine["csvs"][0] in str(e.value)
    # members that agree with each other but not with the data set: the first one is named
    other = _write(tmp_path / "other.csv", gt, classes[:5] + ["sacrum"])
    with pytest.raises(DataError, match="'sacrum', which the data set 'synthetic-spine'") as e:
        hard_vote(EnsembleConfig(out=str(out), csvs=(renamed, other), data=str(spine["root"]),
                                 progress=False))
    assert e.value.path == Path(renamed)
    assert not out.exists()


def test_soft_vote_of_another_class_list(spine, tmp_path):
    classes = list(spine["spec"].classes)
    rng = np.random.default_rng(1)
    folders, probs = [], []
    for k in range(2):
        p = rng.random((6, 8, 10)).astype(np.float16)
        folder = _probs_dir(tmp_path / f"p{k}", {"a.png": p})
        index = json.loads((Path(folder) / "index.json").read_text())
        (Path(folder) / "index.json").write_text(json.dumps({**index, "class_names": classes}))
        folders.append(folder)
        probs.append(p.astype(np.float32))
    thr = tmp_path / "thr.json"
    thr.write_text(json.dumps({"L3": 0.3}))
    out = tmp_path / "soft.csv"
    soft_vote(EnsembleConfig(out=str(out), probs=tuple(folders), thresholds_file=str(thr),
                             data=str(spine["root"]), progress=False))
    want = (probs[0] + probs[1]) / 2 > np.array([0.5, 0.5, 0.3, 0.5, 0.5, 0.5])[:, None, None]
    np.testing.assert_array_equal(read_submission(out, classes).masks("a.png", 8, 10), want)
    # a folder of other classes, and folders whose classes are not the data set's
    index = Path(folders[1]) / "index.json"
    index.write_text(index.read_text().replace('"S1"', '"sacrum"'))
    with pytest.raises(DataError, match=re.escape(f"has class(es) 'sacrum', which {folders[0]} lacks")):
        soft_vote(EnsembleConfig(out=str(out), probs=tuple(folders), progress=False))
    index = Path(folders[0]) / "index.json"
    index.write_text(index.read_text().replace('"S1"', '"sacrum"'))
    with pytest.raises(DataError, match="'sacrum', which the data set 'synthetic-spine'"):
        soft_vote(EnsembleConfig(out=str(out), probs=tuple(folders), data=str(spine["root"]),
                                 progress=False))
    thr.write_text(json.dumps({"Radius": 0.3}))
    with pytest.raises(ConfigError, match="thresholds: unknown class 'Radius'"):
        soft_vote(EnsembleConfig(out=str(out), probs=tuple(folders), thresholds_file=str(thr),
                                 progress=False))
    weights = tmp_path / "weights.json"
    weights.write_text(json.dumps({"Ulna": [1, 0]}))
    with pytest.raises(ConfigError, match="weights: unknown class 'Ulna'"):
        soft_vote(EnsembleConfig(out=str(out), probs=tuple(folders), class_weights_file=str(weights),
                                 progress=False))


# --------------------------------------------------------------------------- report
def _decode(b64: str, tmp: Path, n: int) -> np.ndarray:
    tmp.write_bytes(base64.b64decode(b64))
    return unpack_masks(read_packed_png(tmp), n)


def test_report_of_a_colour_data_set(tmp_path, monkeypatch):
    import cv2

    from hbseg.data import load_cache_index
    from hbseg.data.classes import class_palette
    from hbseg.data.formats.images import read_rgb_png
    from hbseg.report.cli import eval_main

    root = tmp_path / "blobs"
    spec = _shapes(root, "blobs", "coco", images=3, size=SIZE)
    gt = _masks(root, 3)
    worst = sorted(gt)[1]
    assert gt[worst][1].any()
    lost = {n: m.copy() for n, m in gt.items()}
    lost[worst][1] = 0  # the nuclei of one image are missed
    classes = list(spec.classes)
    good, bad = _write(tmp_path / "good.csv", gt, classes), _write(tmp_path / "lost.csv", lost, classes)
    out = tmp_path / "report"
    assert run_main(eval_main, ["--pred", good, "--pred", bad, "--data", root, "--report", out,
                                "--workers", 1, "--quiet"], monkeypatch) == 0

    page = _page_data(out)
    assert page["classes"] == classes and page["dataset"] == "synthetic-blobs"
    assert page["unit"] == "class" and page["palette"] == [list(c) for c in class_palette(3)]
    assert [m["name"] for m in page["models"]] == ["good", "lost"]
    for m in page["models"]:  # the report's means are hbseg-eval's, scored on the cache
        res = json.loads((tmp_path / f"{m['name']}.eval.json").read_text())
        assert m["mean"] == pytest.approx(res["mean_dice"], abs=1e-5)
    assert page["models"][0]["mean"] == 1.0 and page["models"][1]["per_class"][1] < 1.0

    paths = load_cache_index(root / "hbseg-cache").set_index("image_name")["image_path"]
    for im in page["images"]:
        script = (out / "masks" / f"{im['key']}.js").read_text()
        _, gt_b64, preds_b64 = json.loads("[" + script[script.index("(") + 1:script.rindex(")")] + "]")
        np.testing.assert_array_equal(_decode(gt_b64, tmp_path / "m.png", 3), gt[im["name"]])
        np.testing.assert_array_equal(_decode(preds_b64[1], tmp_path / "m.png", 3), lost[im["name"]])
        assert im["dice"][1][1] == (0.0 if im["name"] == worst else 1.0)
        # the picture is the colour image as decoded: its mean colour survives WebP's chroma
        # subsampling, where a grey or a BGR picture would be off by the channels' spread
        shown = cv2.imread(str(out / im["img"]), cv2.IMREAD_COLOR)[..., ::-1].astype(float)
        rgb = read_rgb_png(paths[im["name"]]).astype(float)
        want = rgb.mean((0, 1))
        assert np.ptp(want) > 5 and np.abs(shown.mean((0, 1)) - want).max() < 1.5
        assert np.abs(shown - rgb).mean() < 10
