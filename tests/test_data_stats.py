"""``hbseg-data stats``: the summary equals what the cached masks say, for the hands and for
a described data set, and a class that never appears is reported."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import yaml
from conftest import run_main
from scipy import ndimage

from hbseg.data.cache import load_cache_index
from hbseg.data.classes import CLASSES
from hbseg.data.cli import main
from hbseg.data.masks import read_packed_png, unpack_masks
from hbseg.data.stats import dataset_stats, summarize_masks, write_stats
from hbseg.data.synth_shapes import ShapesConfig, generate_shapes
from hbseg.data.synth_shapes.generate import SPINE_CLASSES
from hbseg.errors import ConfigError


def cached_masks(cache_dir, num_classes):
    """[images, classes, H, W] straight from the cache, unpacked the way the loaders do."""
    index = load_cache_index(cache_dir)
    return index, [unpack_masks(read_packed_png(p), num_classes) for p in index["mask_path"]]


def check_against_masks(stats, masks, classes):
    present = np.array([[m[c].any() for c in range(len(classes))] for m in masks])
    fraction = np.array([m.reshape(len(classes), -1).mean(axis=1) for m in masks])
    assert [r["name"] for r in stats["classes"]] == list(classes)
    assert stats["images"] == len(masks)
    for c, row in enumerate(stats["classes"]):
        assert row["images"] == present[:, c].sum()
        assert row["share"] == pytest.approx(present[:, c].mean())
        if present[:, c].any():
            f = fraction[present[:, c], c]
            assert row["area_mean"] == pytest.approx(f.mean())
            assert row["area_median"] == pytest.approx(np.median(f))
            parts = [ndimage.label(m[c], structure=np.ones((3, 3)))[1] for m, p in
                     zip(masks, present[:, c], strict=True) if p]
            assert row["parts_median"] == pytest.approx(np.median(parts))
            assert row["parts_max"] == max(parts)
        else:
            assert row["area_mean"] is None and row["parts_max"] is None
    assert stats["absent"] == [n for c, n in enumerate(classes) if not present[:, c].any()]


def test_hands_cli_matches_cached_masks(tiny_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "stats"
    assert run_main(main, ["stats", tiny_root, "--out", out, "--workers", "1", "--quiet"], monkeypatch) == 0
    printed = capsys.readouterr().out
    assert "hands: 8 images in 4 groups" in printed
    assert all(name in printed for name in ("finger-1", "Radius", "Ulna"))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rasterised"] == 0  # the shared fixture's cache was current and left alone
    index, masks = cached_masks(tiny_root / "hbseg-cache", len(CLASSES))
    check_against_masks(stats, masks, CLASSES)
    assert stats["groups"] == 4 and sum(stats["folds"].values()) == 8
    assert stats["folds"] == {str(f): int(k) for f, k in index.groupby("fold").size().items()}
    assert stats["image_size"]["height"]["max"] == index["height"].max()
    png = cv2.imread(str(out / "stats.png"))
    assert png is not None and png.shape[0] > 29 * 0.24 * 80  # taller with 29 classes


def test_shapes_function_matches_cached_masks(tmp_path):
    root = tmp_path / "spine"
    generate_shapes(root, ShapesConfig(kind="spine", images=4, size=64))
    stats = dataset_stats(root, workers=1, progress=False)
    assert stats["dataset"] == "synthetic-spine" and stats["rasterised"] == 4
    _, masks = cached_masks(root / "hbseg-cache", len(SPINE_CLASSES))
    check_against_masks(stats, masks, SPINE_CLASSES)
    assert stats["sizes"] == [{"height": 64, "width": 64, "images": 4}]
    assert dataset_stats(root, workers=1, progress=False)["rasterised"] == 0
    js, png = write_stats(stats, tmp_path / "out")
    assert json.loads(js.read_text()) == stats
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] < 29 * 0.24 * 80


def test_class_absent_everywhere_is_reported(tmp_path, monkeypatch, capsys):
    root = tmp_path / "spine"
    spec = generate_shapes(root, ShapesConfig(kind="spine", images=4, size=64))
    described = tmp_path / "spine-t12.yaml"  # index value 7 (T12) is never drawn
    described.write_text(yaml.safe_dump({**spec.to_dict(), "classes": [*SPINE_CLASSES, "T12"]}))
    out = tmp_path / "stats"
    args = ["stats", root, "--spec", described, "--out", out, "--workers", "1", "--quiet"]
    assert run_main(main, args, monkeypatch) == 0
    printed = capsys.readouterr().out
    assert "warning: 1 class never appears: T12" in printed
    stats = json.loads((out / "stats.json").read_text())
    assert stats["absent"] == ["T12"]
    assert stats["classes"][-1] == {**stats["classes"][-1], "images": 0, "share": 0.0, "area_median": None}
    assert cv2.imread(str(out / "stats.png")) is not None
    # the cache now belongs to the 7-class description; the 6-class one must not rebuild it
    with pytest.raises(ConfigError, match="another data set description"):
        dataset_stats(root, workers=1, progress=False)


def test_summarize_crafted_measurements():
    areas = np.array([[10, 0, 0], [30, 5, 0], [0, 5, 0]])  # 3 images of 10x10
    parts = np.array([[1, 0, 0], [3, 2, 0], [0, 1, 0]])
    s = summarize_masks(["a", "b", "c"], areas, parts, [10, 10, 10], [10, 10, 10])
    a, b, c = s["classes"]
    assert (a["images"], b["images"], c["images"]) == (2, 2, 0)
    assert a["area_mean"] == pytest.approx(0.2) and a["area_median"] == pytest.approx(0.2)
    assert (a["parts_median"], a["parts_max"], b["parts_max"]) == (2, 3, 2)
    assert a["pixel_share"] == pytest.approx(40 / 300)
    assert s["absent"] == ["c"] and c["area_q25"] is None
    with pytest.raises(ValueError, match="expected"):
        summarize_masks(["a"], areas, parts, [10, 10, 10], [10, 10, 10])


def test_out_inside_images_is_refused(tmp_path, monkeypatch, capsys):
    root = tmp_path / "spine"
    generate_shapes(root, ShapesConfig(kind="spine", images=2, size=32))
    before = sorted(p.name for p in (root / "images").rglob("*"))
    rc = run_main(main, ["stats", root, "--out", root / "images" / "x", "--quiet"], monkeypatch)
    err = capsys.readouterr().err
    assert rc == 1 and "inside the data set's images folder" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in (root / "images").rglob("*")) == before
    assert not (root / "hbseg-cache").exists()  # refused before any work


def test_missing_root_is_one_line(tmp_path, monkeypatch, capsys):
    rc = run_main(main, ["stats", tmp_path / "nope", "--quiet"], monkeypatch)
    err = capsys.readouterr().err
    assert rc == 1 and "nope" in err and len(err.strip().splitlines()) == 1


def test_default_out_is_beside_the_cache(tmp_path, monkeypatch):
    root = tmp_path / "spine"
    generate_shapes(root, ShapesConfig(kind="spine", images=2, size=32))
    assert run_main(main, ["stats", root, "--workers", "1", "--quiet"], monkeypatch) == 0
    assert sorted(p.name for p in (root / "hbseg-stats").iterdir()) == ["stats.json", "stats.png"]
