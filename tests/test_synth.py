"""The synthetic hand generator: layout, validity, determinism, anatomy and rendering."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from hbseg.data.annotations import read_polygons
from hbseg.data.classes import CLASS_TO_INDEX, CLASSES, NUM_CLASSES
from hbseg.data.images import read_gray_png
from hbseg.data.layout import scan_split
from hbseg.data.rasterize import rasterize
from hbseg.data.synth import SynthConfig, generate_dataset, generate_hand
from hbseg.errors import ConfigError, DataError

SIZE = 256
CFG = SynthConfig(ids=2, size=SIZE, seed=3, test_ids=1)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    summary = generate_dataset(root, CFG, workers=1, progress=False)
    assert summary["images"] == 6 and summary["train_images"] == 4 and summary["test_images"] == 2
    return root


def _masks(polys: dict[str, np.ndarray], size: int) -> np.ndarray:
    return rasterize({CLASS_TO_INDEX[k]: v for k, v in polys.items()}, size, size)


# ---------------------------------------------------------------------------- layout, validity

def test_layout_and_validators(synth_root):
    df = scan_split(synth_root / "train", exclude=())
    assert sorted(df["id"].unique()) == ["ID000", "ID001"]
    assert len(df) == 4
    for row in df.itertuples():
        img = read_gray_png(row.image_path)
        assert img.shape == (SIZE, SIZE) and img.dtype == np.uint8
        polys = read_polygons(row.json_path, row.width, row.height)
        assert sorted(polys) == list(range(NUM_CLASSES))
        for pts in polys.values():
            assert len(pts) >= 3
            assert pts.min() >= 0 and pts.max() <= SIZE - 1
        doc = json.loads(Path(row.json_path).read_text())
        assert doc["filename"] == row.image_name
        assert doc["metadata"] == {"height": SIZE, "width": SIZE}
        assert [a["label"] for a in doc["annotations"]] == list(CLASSES)
        assert all(a["type"] == "poly_seg" for a in doc["annotations"])
        assert len({a["id"] for a in doc["annotations"]}) == NUM_CLASSES
    # two hands per ID, one left and one right
    for _, group in df.groupby("id"):
        assert sorted(n[-6:] for n in group["image_name"]) == ["_L.png", "_R.png"]

    test = scan_split(synth_root / "test", labelled=False, exclude=())
    assert list(test["id"].unique()) == ["ID002"]  # numbering continues after train
    assert len(test) == 2
    assert not (synth_root / "test" / "outputs_json").exists()
    assert not list((synth_root / "test").rglob("*.json"))
    names = list(df["image_name"]) + list(test["image_name"])
    assert len(set(names)) == len(names)  # unique across train and test
    cfg = json.loads((synth_root / "synth_config.json").read_text())
    assert (cfg["ids"], cfg["size"], cfg["seed"], cfg["test_ids"]) == (2, SIZE, 3, 1)


def test_refuses_to_overwrite(synth_root, tmp_path):
    with pytest.raises(DataError, match="overwrite"):
        generate_dataset(synth_root, CFG, workers=1, progress=False)
    root = tmp_path / "d"
    generate_dataset(root, SynthConfig(ids=1, size=128, seed=0), workers=1, progress=False)
    generate_dataset(root, SynthConfig(ids=1, size=128, seed=1), workers=1, progress=False,
                     overwrite=True)
    assert len(list((root / "train" / "DCM").rglob("*.png"))) == 2
    assert len(list((root / "train" / "outputs_json").rglob("*.json"))) == 2


def test_bad_config():
    with pytest.raises(ConfigError):
        SynthConfig(ids=0, test_ids=0).validate()
    with pytest.raises(ConfigError):
        generate_hand(0, 256, "X")


# ---------------------------------------------------------------------------- determinism

def test_deterministic_and_worker_independent(synth_root, tmp_path):
    ref = _files(synth_root)
    again = generate_dataset(tmp_path / "two", CFG, workers=2, progress=False)
    assert again["workers"] == 2
    assert _files(tmp_path / "two") == ref  # same seed, two workers: identical bytes

    other = tmp_path / "other"
    generate_dataset(other, SynthConfig(ids=2, size=SIZE, seed=4, test_ids=1), workers=1,
                     progress=False)
    got = _files(other)
    pngs = lambda files: [v for k, v in files.items() if k.endswith(".png")]  # noqa: E731
    jsons = lambda files: [v for k, v in files.items() if k.endswith(".json")]  # noqa: E731
    assert not set(pngs(got)) & set(pngs(ref))
    assert not set(jsons(got)) & set(jsons(ref))


def test_generate_hand_deterministic():
    a_img, a_poly = generate_hand(11, SIZE, "L")
    b_img, b_poly = generate_hand(np.random.default_rng(11), SIZE, "L")
    assert np.array_equal(a_img, b_img)
    assert all(np.array_equal(a_poly[k], b_poly[k]) for k in CLASSES)
    c_img, _ = generate_hand(12, SIZE, "L")
    assert not np.array_equal(a_img, c_img)


# ---------------------------------------------------------------------------- anatomy

def test_overlaps(synth_root):
    df = scan_split(synth_root / "train", exclude=())
    hands = [(rasterize(read_polygons(r.json_path, SIZE, SIZE), SIZE, SIZE)) for r in df.itertuples()]
    hands += [_masks(generate_hand(s, SIZE, "LR"[s % 2])[1], SIZE) for s in range(8)]
    tq_pi = 0
    for m in hands:
        assert (m[CLASS_TO_INDEX["Trapezium"]] & m[CLASS_TO_INDEX["Trapezoid"]]).sum() > 0
        tq_pi += (m[CLASS_TO_INDEX["Triquetrum"]] & m[CLASS_TO_INDEX["Pisiform"]]).sum() > 0
        count = m.sum(0)
        assert (count > 1).sum() / (count > 0).sum() < 0.03
        assert all(m[c].sum() > 0 for c in range(NUM_CLASSES))
    assert tq_pi >= 0.8 * len(hands)


def test_left_right_mirrored(synth_root):
    df = scan_split(synth_root / "train", exclude=())
    for _, group in df.groupby("id"):
        for r in group.itertuples():
            polys = read_polygons(r.json_path, SIZE, SIZE)
            thumb_x = polys[CLASS_TO_INDEX["finger-1"]][:, 0].mean()
            middle_x = polys[CLASS_TO_INDEX["finger-11"]][:, 0].mean()  # middle metacarpal
            little_x = polys[CLASS_TO_INDEX["finger-16"]][:, 0].mean()
            # PA view: a left hand has its thumb on the image's right
            if r.image_name.endswith("_L.png"):
                assert thumb_x > middle_x > little_x
            else:
                assert thumb_x < middle_x < little_x


def test_anatomical_order():
    """Fingers run from the tip (top) to the wrist; the forearm reaches the bottom edge."""
    for seed in range(4):
        _, polys = generate_hand(seed, 512, "L")
        cy = {k: v[:, 1].mean() for k, v in polys.items()}
        for chain in (("finger-1", "finger-2", "finger-3"),
                      ("finger-4", "finger-5", "finger-6", "finger-7"),
                      ("finger-8", "finger-9", "finger-10", "finger-11"),
                      ("finger-16", "finger-17", "finger-18", "finger-19")):
            ys = [cy[k] for k in chain]
            assert ys == sorted(ys), chain
        assert cy["finger-11"] < cy["Capitate"] < cy["Lunate"] < cy["Radius"]
        assert polys["Radius"][:, 1].max() >= 511 - 2 and polys["Ulna"][:, 1].max() >= 511 - 2
        assert 20 <= len(polys["finger-11"]) <= 60


# ---------------------------------------------------------------------------- rendering

def test_cortex_brighter_than_marrow():
    size = 1024
    px_per_mm = size / 265.0
    for seed in range(3):
        img, polys = generate_hand(seed, size, "L")
        img = img.astype(np.float64)
        for label in ("finger-3", "finger-7", "finger-11", "finger-15", "finger-19",
                      "finger-6", "finger-10", "finger-14"):
            pts = polys[label].astype(np.float64)
            m = cv2.fillPoly(np.zeros((size, size), np.uint8), [polys[label]], 1)
            d = cv2.distanceTransform(m, cv2.DIST_L2, 5) / px_per_mm  # mm from the outline
            # the shaft: the middle half of the bone along its long axis
            c = pts.mean(0)
            axis = np.linalg.eigh((pts - c).T @ (pts - c))[1][:, -1]
            yy, xx = np.mgrid[0:size, 0:size]
            u = (xx - c[0]) * axis[0] + (yy - c[1]) * axis[1]
            t = (pts - c) @ axis
            s = (u - t.min()) / (t.max() - t.min())
            shaft = (s > 0.25) & (s < 0.75)
            band = shaft & (d > 0.4) & (d < 1.4)
            interior = shaft & (d > 0.6 * d[shaft].max())
            assert band.sum() > 20 and interior.sum() > 5
            assert img[band].mean() > img[interior].mean() + 5, (seed, label)


def test_bone_tissue_background_order():
    size = 512
    px_per_mm = size / 265.0
    for seed in range(3):
        img, polys = generate_hand(seed, size, "LR"[seed % 2])
        img = img.astype(np.float64)
        bone = rasterize({CLASS_TO_INDEX[k]: v for k, v in polys.items()}, size, size).max(0)
        out = cv2.distanceTransform((1 - bone).astype(np.uint8), cv2.DIST_L2, 5) / px_per_mm
        bones = img[bone > 0].mean()
        tissue = img[(out > 1.5) & (out < 3.0)].mean()  # just outside the bones: soft tissue
        background = img[out > 30].mean()  # far from every bone
        assert bones > tissue + 10 > background + 20, (seed, bones, tissue, background)
