"""Every bad input named by the data-format issue is rejected with a message naming the file."""

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from hbseg.data import build_cache, read_gray_png, read_polygons, scan_split
from hbseg.errors import DataError


@pytest.fixture
def root(tiny_root, tmp_path):
    r = tmp_path / "data"
    shutil.copytree(tiny_root / "train", r / "train")
    return r


def _first(root, sub, pattern):
    return sorted((root / "train" / sub).glob(pattern))[0]


def _poly_json(path, annotations):
    path.write_text(json.dumps({"annotations": annotations, "filename": "x.png"}))


def ann(label, points):
    return {"id": "a", "type": "poly_seg", "attributes": {}, "label": label, "points": points}


SQUARE = [[10, 10], [40, 10], [40, 40], [10, 40]]


def test_corrupt_png(tmp_path):
    p = tmp_path / "bad.png"
    good = cv2.imencode(".png", np.full((32, 32), 7, np.uint8))[1].tobytes()
    p.write_bytes(good[:40] + b"\x00" * 30 + good[70:])  # IHDR intact, data garbled
    with pytest.raises(DataError, match=r"bad\.png: corrupt PNG"):
        read_gray_png(p)


def test_truncated_png(tmp_path):
    p = tmp_path / "t.png"
    data = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))[1]
    p.write_bytes(data.tobytes()[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.png: truncated PNG"):
        read_gray_png(p)


def test_not_a_png(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(b"hello world, not an image at all")
    with pytest.raises(DataError, match="not a PNG"):
        read_gray_png(p)


def test_16bit_png(tmp_path):
    p = tmp_path / "deep.png"
    cv2.imwrite(str(p), np.full((8, 8), 1000, np.uint16))
    with pytest.raises(DataError, match="16-bit grey PNG; expected 8-bit grey"):
        read_gray_png(p)


def test_colour_png_rejected_but_equal_rgb_accepted(tmp_path):
    grey = np.random.default_rng(0).integers(0, 255, (8, 8), np.uint8)
    cv2.imwrite(str(tmp_path / "eq.png"), np.dstack([grey] * 3))
    np.testing.assert_array_equal(read_gray_png(tmp_path / "eq.png"), grey)
    colour = np.dstack([grey, grey // 2, grey])
    cv2.imwrite(str(tmp_path / "rgb.png"), colour)
    with pytest.raises(DataError, match="RGB PNG with real colour"):
        read_gray_png(tmp_path / "rgb.png")


@pytest.mark.parametrize("annotations, message", [
    ([ann("finger-30", SQUARE)], "unknown label 'finger-30'"),
    ([ann("Radius", SQUARE), ann("Radius", SQUARE)], "'Radius' appears more than once"),
    ([ann("Ulna", [[1, 1], [5, 5]])], "2 points, needs at least 3"),
    ([ann("Ulna", [[500, 500], [600, 500], [600, 600]])], "wholly outside"),
    ([ann("Ulna", [[-5, -5], [-1, -9], [-3, -2]])], "wholly outside"),
])
def test_bad_annotations(tmp_path, annotations, message):
    p = tmp_path / "a.json"
    _poly_json(p, annotations)
    with pytest.raises(DataError, match=message) as e:
        read_polygons(p, 256, 256)
    assert str(p) in str(e.value)


def test_partly_outside_polygon_is_clipped(tmp_path):
    p = tmp_path / "a.json"
    _poly_json(p, [ann("Ulna", [[-20, 10], [40, 10], [40, 300], [-20, 300]])])
    assert 28 in read_polygons(p, 256, 256)


@pytest.mark.parametrize("text, message", [("", "empty annotation file"), ("{oops", "invalid JSON"),
                                           ("[]", '"annotations" list')])
def test_unreadable_json(tmp_path, text, message):
    p = tmp_path / "a.json"
    p.write_text(text)
    with pytest.raises(DataError, match=message):
        read_polygons(p, 64, 64)


def test_fewer_than_29_bones_is_allowed(tmp_path):
    p = tmp_path / "a.json"
    _poly_json(p, [ann("Radius", SQUARE)])
    assert list(read_polygons(p, 64, 64)) == [27]


def test_image_without_json(root):
    _first(root, "outputs_json", "*/*.json").unlink()
    with pytest.raises(DataError, match="image has no annotation"):
        scan_split(root / "train")


def test_json_without_image(root):
    _first(root, "DCM", "*/*.png").unlink()
    with pytest.raises(DataError, match="annotation has no matching image"):
        scan_split(root / "train")


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "train" / "DCM").mkdir(parents=True)
    with pytest.raises(DataError, match="no PNG images found"):
        scan_split(tmp_path / "train")
    with pytest.raises(DataError, match="data folder not found"):
        build_cache(tmp_path / "nope")


def test_cli_cache_error_is_one_line_and_writes_nothing(root):
    png = _first(root, "DCM", "*/*.png")
    png.write_bytes(png.read_bytes()[:100])
    proc = subprocess.run([sys.executable, "-m", "hbseg.data", "cache", str(root)],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [f"error: {png}: truncated PNG (no IEND chunk at the end of the file)"]
    assert "Traceback" not in proc.stderr
    assert not (root / "hbseg-cache").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
