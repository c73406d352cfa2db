import os
import shutil
import time

import cv2
import numpy as np
import pytest

from hbseg.data import (
    build_cache,
    load_cache_index,
    read_packed_png,
    read_polygons,
    unpack_masks,
)


def _copy(tiny_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_root / "train", root / "train")
    return root


def test_cache_equals_fillpoly(tiny_cache):
    df = load_cache_index(tiny_cache)
    for row in df.itertuples():
        polys = read_polygons(row.json_path, row.width, row.height)
        got = unpack_masks(read_packed_png(row.mask_path))
        for c in range(29):
            ref = np.zeros((row.height, row.width), np.uint8)
            if c in polys:
                cv2.fillPoly(ref, [polys[c]], 1)
            np.testing.assert_array_equal(got[c], ref, err_msg=f"{row.image_name} class {c}")


def test_cache_rebuilds_only_on_change(tiny_root, tmp_path):
    root = _copy(tiny_root, tmp_path)
    first = build_cache(root, workers=1, progress=False)
    assert first["rasterised"] == first["images"]
    again = build_cache(root, workers=1, progress=False)
    assert again["up_to_date"] and again["rasterised"] == 0

    json_path = sorted((root / "train" / "outputs_json").glob("*/*.json"))[0]
    time.sleep(0.01)
    os.utime(json_path)  # a touched source counts as changed
    third = build_cache(root, workers=1, progress=False)
    assert not third["up_to_date"] and third["rasterised"] == 1


def test_failed_build_leaves_previous_cache(tiny_root, tmp_path):
    root = _copy(tiny_root, tmp_path)
    build_cache(root, workers=1, progress=False)
    before = (root / "hbseg-cache" / "index.csv").read_bytes()
    bad = sorted((root / "train" / "outputs_json").glob("*/*.json"))[0]
    bad.write_text("{not json")
    with pytest.raises(Exception, match="invalid JSON"):
        build_cache(root, workers=1, progress=False)
    assert (root / "hbseg-cache" / "index.csv").read_bytes() == before
    leftovers = [p for p in root.iterdir() if p.name.startswith(".hbseg-cache")]
    assert leftovers == []


def test_parallel_build_matches_serial(tiny_root, tmp_path):
    root = _copy(tiny_root, tmp_path)
    build_cache(root, cache_dir=tmp_path / "c1", workers=1, progress=False)
    build_cache(root, cache_dir=tmp_path / "c2", workers=2, progress=False)
    a, b = load_cache_index(tmp_path / "c1"), load_cache_index(tmp_path / "c2")
    for pa, pb in zip(a["mask_path"], b["mask_path"], strict=True):
        np.testing.assert_array_equal(read_packed_png(pa), read_packed_png(pb))
