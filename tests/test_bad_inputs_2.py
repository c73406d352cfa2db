"""Bad inputs, round 2 (issue 18): file trees as people have them, PNG variants, JSON as
people write it, and stale or damaged mask caches.

Each case runs the real ``hbseg-data`` entry point in-process on a copy of the tiny
synthetic data set and checks: exit code, one ``error: <file>: <problem>`` line naming the
file, no traceback, no output left behind; or, for inputs accepted by a documented rule,
that the result equals OpenCV's reading / ``cv2.fillPoly``. docs/errors.md lists them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_main

from hbseg.data import build_cache, load_cache_index, read_packed_png, unpack_masks
from hbseg.data.cli import main as data_main


@pytest.fixture
def root(tiny_root, tmp_path) -> Path:
    """A private copy of the tiny data set (train and test), without its cache."""
    r = tmp_path / "data"
    shutil.copytree(tiny_root / "train", r / "train")
    shutil.copytree(tiny_root / "test", r / "test")
    return r


def _png(root: Path) -> Path:
    return sorted((root / "train" / "DCM").glob("*/*.png"))[0]


def _json(root: Path) -> Path:
    p = _png(root)
    return root / "train" / "outputs_json" / p.parent.name / f"{p.stem}.json"


def _cache(root, monkeypatch, capsys, *extra) -> tuple[int, str]:
    code = run_main(data_main, ["cache", root, "--workers", 1, *extra], monkeypatch)
    return code, capsys.readouterr().err


def _assert_one_error(code: int, err: str, path: Path, needle: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), err
    assert needle in lines[0], lines[0]


def _mask_of(root: Path, png: Path) -> np.ndarray:
    index = load_cache_index(root / "hbseg-cache")
    row = index[index["image_name"] == png.name].iloc[0]
    return unpack_masks(read_packed_png(row["mask_path"]))


# -- JSON --------------------------------------------------------------------------------
def _edit_json(path: Path, fn, encoding: str = "utf-8") -> None:
    doc = json.loads(path.read_text())
    fn(doc["annotations"])
    path.write_text(json.dumps(doc), encoding=encoding)


def _set(i, key, value):
    def fn(anns):
        anns[i][key] = value
    return fn


def _set_point(value):
    def fn(anns):
        anns[0]["points"][0] = value
    return fn


JSON_REJECTED = {
    "nan": (_set_point([float("nan"), 5]), "point 0 has a non-finite coordinate (nan, 5)"),
    "infinity": (_set_point([float("inf"), 5]), "point 0 has a non-finite coordinate (inf, 5)"),
    "boolean": (_set_point([True, False]), "point 0 has a boolean coordinate (true); expected numbers"),
    "string": (_set_point(["10", "20"]), "point 0 has a string coordinate (\"10\"); expected numbers"),
    "null": (_set_point([None, 3]), "point 0 has a null coordinate (null); expected numbers"),
    "huge": (_set_point([1e12, 5]), "point 0 (1e+12, 5) lies more than one image size outside the 256x256 image"),
    "no_label": (lambda a: a[0].pop("label"), 'annotation 0 has no "label"'),
    "same_label_other_case": (_set(1, "label", "Finger-1"), "label 'finger-1' appears more than once"),
    "points_not_list": (_set(0, "points", {"x": 1}), "points are not a list of [x, y] pairs (got object)"),
}


@pytest.mark.parametrize("case", sorted(JSON_REJECTED))
def test_json_rejected_naming_the_annotation(case, root, monkeypatch, capsys):
    edit, needle = JSON_REJECTED[case]
    j = _json(root)
    _edit_json(j, edit)
    code, err = _cache(root, monkeypatch, capsys)
    _assert_one_error(code, err, j, needle)
    assert not (root / "hbseg-cache").exists()
    assert not list(root.glob(".hbseg-cache.*.tmp"))


def test_json_accepted_by_rule(root, monkeypatch, capsys):
    """BOM skipped; labels matched ignoring case and spaces; float points rounded to the
    nearest pixel; points up to one image size outside clipped; self-intersecting and
    100 000-point polygons filled by cv2.fillPoly as given."""
    j = _json(root)
    doc = json.loads(j.read_text())
    a = doc["annotations"]
    a[0]["label"] = " Finger-1"
    a[1]["points"] = [[x + 0.4, y - 0.3] for x, y in a[1]["points"]]
    a[2]["points"][0] = [-200.0, -100.0]
    a[3]["points"] = [[10, 10], [60, 60], [60, 10], [10, 60]]  # a bow tie
    n = 100_000
    a[4]["points"] = [[128 + 50 * math.cos(2 * math.pi * k / n), 128 + 50 * math.sin(2 * math.pi * k / n)]
                      for k in range(n)]
    j.write_text(json.dumps(doc), encoding="utf-8-sig")  # with a BOM
    code, err = _cache(root, monkeypatch, capsys)
    assert code == 0, err

    masks = _mask_of(root, _png(root))
    for c in range(5):
        pts = np.rint(np.asarray(a[c]["points"], dtype=np.float64)).astype(np.int32)
        ref = np.zeros((256, 256), np.uint8)
        cv2.fillPoly(ref, [pts], 1)
        assert np.array_equal(masks[c], ref), c
    assert masks[3].sum() > 0 and masks[4].sum() > 7000  # a radius-50 disc: ~7850 px


# -- PNG variants ------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _write_interlaced(path: Path, g: np.ndarray) -> None:
    """Adam7-interlaced 8-bit grey PNG (neither OpenCV nor Pillow write one)."""
    h, w = g.shape
    raw = b""
    for y0, x0, dy, dx in ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2),
                           (0, 1, 2, 2), (1, 0, 2, 1)):
        for row in g[y0::dy, x0::dx]:
            if row.size:
                raw += b"\x00" + row.tobytes()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 1))
                     + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


def _write_palette(path: Path, g: np.ndarray, colour: bool = False) -> None:
    from PIL import Image

    perm = np.random.default_rng(0).permutation(256)  # index != value: the palette matters
    q = Image.fromarray(np.argsort(perm)[g].astype(np.uint8), "P")
    q.putpalette([v for i in range(256) for v in ((perm[i], 255 - perm[i], perm[i]) if colour else (perm[i],) * 3)])
    q.save(path)


def _write_grey_alpha(path: Path, g: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.dstack([g, np.full_like(g, 255)]), "LA").save(path)


def _garbage_with_valid_crc(path: Path, g: np.ndarray) -> None:
    data = bytearray(path.read_bytes())
    pos = 8
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            data[pos + 8:pos + 8 + n] = np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8).tobytes()
            data[pos + 8 + n:pos + 12 + n] = struct.pack(">I", zlib.crc32(bytes(data[pos + 4:pos + 8 + n])))
        pos += 12 + n
    path.write_bytes(bytes(data))


def _rgb_grey(path: Path, g: np.ndarray) -> None:
    cv2.imwrite(str(path), np.dstack([g, g, g]))


PNG_ACCEPTED = {"interlaced": _write_interlaced, "palette_grey": _write_palette, "rgb_equal": _rgb_grey}
PNG_REJECTED = {
    "palette_colour": (lambda p, g: _write_palette(p, g, colour=True), "palette PNG with real colour"),
    "grey_alpha": (_write_grey_alpha, "grey+alpha PNG with an alpha channel; expected 8-bit grey"),
    "garbage_data": (_garbage_with_valid_crc, "corrupt PNG (image data does not inflate"),
}


@pytest.mark.parametrize("case", sorted(PNG_REJECTED))
def test_png_variant_rejected_by_name(case, root, monkeypatch, capsys):
    write, needle = PNG_REJECTED[case]
    p = _png(root)
    write(p, cv2.imread(str(p), cv2.IMREAD_UNCHANGED))
    for cmd in ("check", "cache"):
        code = run_main(data_main, [cmd, root, *(["--workers", 1] if cmd == "cache" else [])], monkeypatch)
        _assert_one_error(code, capsys.readouterr().err, p, needle)
    assert not (root / "hbseg-cache").exists()


@pytest.fixture(scope="module")
def variant_roots(tiny_root, tmp_path_factory):
    """The tiny data set twice: as made, and with its first three images rewritten as
    interlaced, palette and equal-channel RGB PNGs (same pixels), each with its cache."""
    out = {}
    for kind in ("orig", "variants"):
        r = tmp_path_factory.mktemp(kind) / "data"
        shutil.copytree(tiny_root / "train", r / "train")
        if kind == "variants":
            pngs = sorted((r / "train" / "DCM").glob("*/*.png"))
            for p, write in zip(pngs, PNG_ACCEPTED.values(), strict=False):
                write(p, cv2.imread(str(p), cv2.IMREAD_UNCHANGED))
        build_cache(r, workers=1, progress=False)
        out[kind] = r
    return out


def test_png_variants_read_like_opencv(variant_roots, monkeypatch, capsys):
    from hbseg.data import read_gray_png

    root = variant_roots["variants"]
    assert run_main(data_main, ["check", root], monkeypatch) == 0, capsys.readouterr().err
    orig = sorted((variant_roots["orig"] / "train" / "DCM").glob("*/*.png"))
    for a, b in zip(orig, sorted((root / "train" / "DCM").glob("*/*.png")), strict=True):
        ref = cv2.imread(str(a), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(read_gray_png(b, verify=True), ref), b.name
        assert np.array_equal(cv2.imread(str(b), cv2.IMREAD_GRAYSCALE), ref), b.name


def test_png_variants_dali_decodes_them_alike(variant_roots):
    """The DALI CPU loader gives the same batches for the variant PNGs as for the plain ones."""
    pytest.importorskip("nvidia.dali")
    from hbseg.dali_pipes import DaliLoader, LoaderConfig

    batches = {}
    for kind, root in variant_roots.items():
        index = load_cache_index(root / "hbseg-cache")
        loader = DaliLoader(index, LoaderConfig(size=256, batch_size=4, num_threads=1), mode="eval", device="cpu")
        batches[kind] = [(x.clone(), m.clone()) for x, m in loader]
    assert len(batches["orig"]) == len(batches["variants"]) > 0
    for (xa, ma), (xb, mb) in zip(batches["orig"], batches["variants"], strict=True):
        assert xa.shape == xb.shape and bool((xa == xb).all())
        assert bool((ma == mb).all())


# -- trees -------------------------------------------------------------------------------
def test_names_with_spaces_dashes_and_non_ascii_and_symlinks_are_read(root, tmp_path, monkeypatch, capsys):
    """Documented: any file name works; symlinked images and ID folders are followed; an ID
    folder with one hand is fine."""
    dcm, js = root / "train" / "DCM", root / "train" / "outputs_json"
    pngs = sorted(dcm.glob("*/*.png"))
    for p, new in zip(pngs[:2], ["-dash name", "bône ü"], strict=True):
        p.rename(p.with_name(f"{new}.png"))
        (js / p.parent.name / f"{p.stem}.json").rename(js / p.parent.name / f"{new}.json")
    moved = tmp_path / "elsewhere.png"  # a symlinked image
    pngs[2].rename(moved)
    pngs[2].symlink_to(moved)
    other = tmp_path / "IDfolder"  # a symlinked ID folder
    (dcm / pngs[4].parent.name).rename(other)
    (dcm / pngs[4].parent.name).symlink_to(other, target_is_directory=True)
    for p in sorted(dcm.glob("ID003/*.png"))[:1]:  # one hand only
        p.unlink()
        (js / "ID003" / f"{p.stem}.json").unlink()
    code, err = _cache(root, monkeypatch, capsys)
    assert code == 0, err
    index = load_cache_index(root / "hbseg-cache")
    assert len(index) == 7 and {"-dash name.png", "bône ü.png"} <= set(index["image_name"])


@pytest.mark.parametrize("case", ["png_in_dcm", "dangling_id_link", "looping_id_link", "dangling_png_link"])
def test_tree_problems_are_named(case, root, monkeypatch, capsys):
    dcm = root / "train" / "DCM"
    if case == "png_in_dcm":
        bad = dcm / "stray.png"
        shutil.copy(_png(root), bad)
        needle = "image is not inside a patient folder"
    elif case == "dangling_id_link":
        bad = dcm / "ID099"
        bad.symlink_to(root / "nowhere", target_is_directory=True)
        needle = "broken or looping symbolic link"
    elif case == "looping_id_link":
        bad = dcm / "IDloop"
        bad.symlink_to(dcm / "IDloop2")
        (dcm / "IDloop2").symlink_to(bad)
        needle = "broken or looping symbolic link"
        bad = dcm / "IDloop"
    else:
        bad = dcm / "ID000" / "gone.png"
        bad.symlink_to(root / "nowhere.png")
        needle = "broken symbolic link"
    for cmd in ("check", "cache"):
        code = run_main(data_main, [cmd, root], monkeypatch)
        _assert_one_error(code, capsys.readouterr().err, bad, needle)


@pytest.mark.slow
def test_mixed_image_sizes_train_with_the_torch_loader(root, tmp_path, monkeypatch, capsys):
    """Documented: images of different sizes and aspect ratios are resized to --size."""
    from hbseg.train.cli import main as train_main

    for p, (h, w) in zip(sorted((root / "train" / "DCM").glob("*/*.png"))[:2], [(96, 512), (40, 40)], strict=True):
        cv2.imwrite(str(p), cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), (w, h)))
        j = root / "train" / "outputs_json" / p.parent.name / f"{p.stem}.json"
        _edit_json(j, lambda anns, h=h, w=w: [a.update(points=[[x * w / 256, y * h / 256] for x, y in a["points"]])
                                              for a in anns])
    args = ["--data", root, "--out", tmp_path / "run", "--loader", "torch", "--workers", 0, "--device", "cpu",
            "--encoder", "resnet18", "--size", 64, "--batch-size", 4, "--epochs", 1, "--no-progress",
            "--no-tensorboard"]
    assert run_main(train_main, args, monkeypatch) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "last.pt").is_file()


# -- stale or damaged caches ------------------------------------------------------------
def test_json_edited_after_caching_is_never_used_stale(root, tmp_path, monkeypatch, capsys):
    from hbseg.train.config import TrainConfig
    from hbseg.train.trainer import prepare_index

    build_cache(root, workers=1, progress=False)
    j = _json(root)
    _edit_json(j, lambda anns: anns.__setitem__(0, {**anns[0], "points": [[0, 0], [40, 0], [0, 40]]}))
    with pytest.raises(Exception, match="mask cache is stale: .* changed after the cache was built"):
        load_cache_index(root / "hbseg-cache")
    # training updates the cache first (only the changed mask) and uses the new polygon
    index = prepare_index(TrainConfig(out=str(tmp_path / "run"), data=str(root), workers=1, progress=False))
    assert "updating the mask cache" in capsys.readouterr().err
    row = index[index["image_name"] == _png(root).name].iloc[0]
    ref = np.zeros((256, 256), np.uint8)
    cv2.fillPoly(ref, [np.array([[0, 0], [40, 0], [0, 40]], np.int32)], 1)
    assert np.array_equal(unpack_masks(read_packed_png(row["mask_path"]))[0], ref)


def test_deleted_mask_is_redrawn(root, monkeypatch, capsys):
    build_cache(root, workers=1, progress=False)
    mask = Path(load_cache_index(root / "hbseg-cache")["mask_path"][0])
    mask.unlink()
    with pytest.raises(Exception, match="cached mask .* is missing"):
        load_cache_index(root / "hbseg-cache")
    code = run_main(data_main, ["cache", root, "--workers", 1], monkeypatch)
    assert code == 0 and "1 masks rasterised" in capsys.readouterr().out
    assert mask.is_file() and len(load_cache_index(root / "hbseg-cache")) == 8


def test_cache_from_an_older_hbseg_is_rebuilt(root, monkeypatch, capsys):
    build_cache(root, workers=1, progress=False)
    meta = root / "hbseg-cache" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "version": 0}))
    with pytest.raises(Exception, match="mask cache version 0 != 1 .built by another hbseg."):
        load_cache_index(root / "hbseg-cache")
    code, err = _cache(root, monkeypatch, capsys)
    assert code == 0, err
    assert len(load_cache_index(root / "hbseg-cache")) == 8


def test_two_cache_builds_at_once_are_serialised(root):
    """The second build waits on the lock, then finds the cache up to date."""
    results, errors = [], []

    def build():
        try:
            results.append(build_cache(root, workers=1, progress=False))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(r["up_to_date"] for r in results) == [False, True]
    assert len(load_cache_index(root / "hbseg-cache")) == 8
    assert not [p.name for p in root.iterdir() if p.name.endswith(".tmp") or ".old-" in p.name]


def test_read_only_cache_folder_is_still_read(root):
    build_cache(root, workers=1, progress=False)
    cache = root / "hbseg-cache"
    modes = {p: p.stat().st_mode for p in [cache, *cache.rglob("*")]}
    try:
        for p in [cache, *cache.rglob("*")]:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
        assert build_cache(root, workers=1, progress=False)["up_to_date"]
        assert len(load_cache_index(cache)) == 8
    finally:
        for p, m in modes.items():
            os.chmod(p, m)
