"""Data sets that are not hands: descriptions, the four label formats, colour images, and
cache → train → infer → eval on other class lists (hbseg.data.synth_shapes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hbseg.data import build_cache, load_cache_index, read_packed_png, unpack_masks
from hbseg.data.spec import DatasetSpec, cache_spec, load_spec
from hbseg.data.synth_shapes import ShapesConfig, generate_shapes
from hbseg.errors import CheckpointError, ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]


def _shapes(root: Path, kind: str, fmt: str | None = None, images: int = 4, size: int = 64) -> DatasetSpec:
    spec = generate_shapes(root, ShapesConfig(kind=kind, format=fmt, images=images, size=size))
    build_cache(root, workers=1, progress=False)
    return spec


def _masks(root: Path, n: int) -> dict[str, np.ndarray]:
    idx = load_cache_index(root / "hbseg-cache")
    return {r.image_name: unpack_masks(read_packed_png(r.mask_path), n) for r in idx.itertuples()}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict[str, Path]:
    """One small data set per format (the same seed, so the same drawings)."""
    base = tmp_path_factory.mktemp("shapes")
    out = {}
    for kind, fmt in (("spine", "index-png"), ("spine", "polygon-json"), ("blobs", "coco"),
                      ("blobs", "class-png")):
        _shapes(base / fmt, kind, fmt)
        out[fmt] = base / fmt
    return out


# --------------------------------------------------------------------------- descriptions
def test_spec_reads_yaml_and_rejects_bad_descriptions(tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text("name: lungs\nclasses: [left, right, heart]\nformat: index-png\n"
                 "values: {10: left, 20: right, 30: heart}\nignore: [255]\n")
    spec = load_spec(f)
    assert spec.classes == ("left", "right", "heart") and spec.channels == 1
    assert spec.value_table() == {10: 0, 20: 1, 30: 2}
    assert DatasetSpec.from_dict(spec.to_dict()) == spec
    bad = [
        ({"classes": [f"c{i}" for i in range(33)]}, "33 classes"),
        ({"format": "cocoo"}, "did you mean 'coco'"),
        ({"classes": ["a,b"]}, "commas"),
        ({"classes": ["a", "a"]}, "listed twice"),
        ({"channels": 4}, "channels must be 1"),
        ({"values": {"1": "nope"}}, "not in classes"),
        ({"clases": ["a"]}, "did you mean 'classes'"),
    ]
    for change, msg in bad:
        d = {"name": "x", "classes": ["a"], "format": "index-png", **change}
        with pytest.raises(ConfigError, match=re.escape(msg)):
            DatasetSpec.from_dict(d, source=f)


# --------------------------------------------------------------------------- formats
def test_formats_rasterise_to_the_same_masks(shapes):
    spine_idx, spine_json = _masks(shapes["index-png"], 6), _masks(shapes["polygon-json"], 6)
    assert set(spine_idx) == set(spine_json)
    for name, m in spine_idx.items():
        assert m.shape == (6, 64, 64) and m.reshape(6, -1).any(1).all()
        np.testing.assert_array_equal(m, spine_json[name])  # both drawn by cv2.fillPoly
    coco, pngs = _masks(shapes["coco"], 3), _masks(shapes["class-png"], 3)
    for name, m in coco.items():
        np.testing.assert_array_equal(m[1:], pngs[name][1:])  # RLE: exact
        inter = np.logical_and(m[0], pngs[name][0]).sum()
        assert inter / np.logical_or(m[0], pngs[name][0]).sum() > 0.85  # polygons: pycocotools
        assert np.logical_and(m[0], m[1]).any()  # nuclei lie in cells: classes overlap
    spec = cache_spec(shapes["coco"] / "hbseg-cache")
    assert spec.classes == ("cell", "nucleus", "debris") and spec.channels == 3
    meta = json.loads((shapes["index-png"] / "hbseg-cache" / "meta.json").read_text())
    assert meta["classes"] == ["L1", "L2", "L3", "L4", "L5", "S1"]


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("hbseg-cache*"))
    return dst


def test_bad_labels_name_the_file(shapes, tmp_path):
    from PIL import Image

    # index PNG with a value in no class
    root = _copy(shapes["index-png"], tmp_path / "a")
    lab = sorted((root / "labels").rglob("*.png"))[0]
    arr = np.asarray(Image.open(lab)).copy()
    arr[0, 0] = 9
    Image.fromarray(arr, mode="L").save(lab)  # a grey index PNG reads the same way
    with pytest.raises(DataError, match=r"pixel value\(s\) \[9\]") as e:
        build_cache(root, workers=1, progress=False)
    assert e.value.path == lab
    # a label of another size than its image
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(lab)
    with pytest.raises(DataError, match="label is 10x10 but its image is 64x64"):
        build_cache(root, workers=1, progress=False)
    # an image without its label
    lab.unlink()
    with pytest.raises(DataError, match="image has no label"):
        build_cache(root, workers=1, progress=False)
    # COCO: an unknown category, and an image the file does not list
    root = _copy(shapes["coco"], tmp_path / "b")
    doc = json.loads((root / "labels.json").read_text())
    doc["categories"][0]["name"] = "cells"
    (root / "labels.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="did you mean 'cell'"):
        build_cache(root, workers=1, progress=False)
    doc["categories"][0]["name"] = "cell"
    doc["images"] = doc["images"][1:]
    (root / "labels.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"annotation \d+: image_id 1 is not in"):
        build_cache(root, workers=1, progress=False)
    # class PNGs: a folder that is no class
    root = _copy(shapes["class-png"], tmp_path / "c")
    (root / "labels" / "nuclei").mkdir()
    with pytest.raises(DataError, match="'nuclei' is not a class.*did you mean 'nucleus'"):
        build_cache(root, workers=1, progress=False)


def test_cache_rebuilds_for_another_description(shapes, tmp_path):
    root = _copy(shapes["index-png"], tmp_path / "s")
    build_cache(root, workers=1, progress=False)
    assert build_cache(root, workers=1, progress=False)["up_to_date"]
    text = (root / "hbseg-dataset.yaml").read_text().replace("- S1", "- sacrum")
    (root / "hbseg-dataset.yaml").write_text(text)
    assert build_cache(root, workers=1, progress=False)["rasterised"] == 4
    assert cache_spec(root / "hbseg-cache").classes[-1] == "sacrum"


def test_data_cli_takes_a_spec_file(tmp_path, monkeypatch, capsys):
    from conftest import run_main

    from hbseg.data.cli import main

    root = tmp_path / "spine"
    generate_shapes(root, ShapesConfig(kind="spine", format="polygon-json", images=2, size=64))
    spec_file = tmp_path / "spine.yaml"
    (root / "hbseg-dataset.yaml").rename(spec_file)
    assert run_main(main, ["cache", root, "--spec", spec_file], monkeypatch) == 0
    assert "2 images, 2 masks rasterised" in capsys.readouterr().out
    assert cache_spec(root / "hbseg-cache") == load_spec(spec_file)
    spec_file.rename(root / "hbseg-dataset.yaml")
    assert run_main(main, ["check", root], monkeypatch) == 0
    assert "2 images of 'synthetic-spine' (6 classes, polygon-json) in" in capsys.readouterr().out
    # the baseline's GroupKFold deals a described data set's groups too
    many = tmp_path / "many"
    generate_shapes(many, ShapesConfig(kind="spine", images=10, size=32))
    assert run_main(main, ["check", many, "--fold-split", "groupkfold"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert "in 5 groups are valid; images per fold: {0: 2, 1: 2, 2: 2, 3: 2, 4: 2}" in out


def test_training_refuses_a_cache_of_another_description(shapes, tmp_path):
    from hbseg.train import TrainConfig
    from hbseg.train.trainer import dataset_spec, prepare_index

    root = _copy(shapes["index-png"], tmp_path / "s")
    build_cache(root, workers=1, progress=False)
    cfg = TrainConfig(out=str(tmp_path / "run"), data=str(root), progress=False)
    assert len(prepare_index(cfg)) == 4 and dataset_spec(cfg).num_classes == 6
    other = tmp_path / "other.yaml"
    other.write_text((root / "hbseg-dataset.yaml").read_text().replace("- S1", "- sacrum"))
    with pytest.raises(ConfigError, match="built from another data set description"):
        prepare_index(cfg.replace(spec=str(other)))


# --------------------------------------------------------------------------- colour
def test_rgb_clahe_equals_dali_luma_only():
    pytest.importorskip("nvidia.dali")
    import cv2
    from nvidia.dali import fn, pipeline_def, types

    from hbseg.torch_loaders.torch_loader import clahe_rgb

    rng = np.random.default_rng(0)
    img = (rng.random((48, 80, 3)) * 90 + np.linspace(0, 140, 80)[None, :, None]).astype(np.uint8)

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def pipe():
        x = fn.external_source(source=lambda: [img], batch=True, layout="HWC", dtype=types.UINT8)
        return fn.clahe(x, tiles_x=8, tiles_y=8, clip_limit=2.0, luma_only=True)

    p = pipe()
    p.build()
    dali = np.array(p.run()[0][0])
    ours = clahe_rgb(img, cv2.createCLAHE(2.0, (8, 8)))
    np.testing.assert_array_equal(ours, dali)


def test_colour_loaders_agree(shapes):
    pytest.importorskip("nvidia.dali")
    from dataclasses import replace

    import torch

    from hbseg.dali_pipes import (
        AugmentConfig,
        DaliLoader,
        LoaderConfig,
        NormalizeConfig,
        TorchLoader,
    )

    idx = load_cache_index(shapes["coco"] / "hbseg-cache")
    cfg = LoaderConfig(size=48, batch_size=2, num_threads=1, channels=3, num_classes=3,
                       normalize=NormalizeConfig().for_channels(3),
                       augment=AugmentConfig.hand_xray(ssr_p=1.0, rotate_limit=20, hflip_p=0.5))
    for mode in ("train", "eval"):
        dali = list(DaliLoader(idx, cfg, mode=mode))
        torch_ = list(TorchLoader(idx, replace(cfg, num_threads=0), mode=mode))
        assert len(dali) == len(torch_) == 2
        for (a, m), (b, n) in zip(dali, torch_, strict=True):
            assert tuple(a.shape) == (2, 3, 48, 48) and tuple(m.shape) == (2, 3, 48, 48)
            # nearest-neighbour ties on pixel edges under rotation (0.12 % measured at 48 px);
            # the mask warp is the hands' own, unchanged by colour
            assert (m != n).float().mean() < 5e-3
            assert float((a - b).abs().max()) < 0.05  # ~2 grey levels, as for grey images
        from hbseg.dali_pipes.cache_loader import DaliCacheLoader  # decoded once, in memory

        cached = list(DaliCacheLoader(idx, cfg, mode, device="cpu", headroom_bytes=0))
        for (a, m), (b, n) in zip(dali, cached, strict=True):
            assert torch.equal(a, b) and torch.equal(m, n)


@pytest.mark.gpu
def test_colour_graph_on_gpu_matches_cpu(shapes):
    """Mixed RGB decoding and GPU CLAHE on luminance against the CPU graph. Both equalise
    L as OpenCV's 8-bit Lab recipe does (hbseg's kernel on GPU, OpenCV under ``fn.clahe`` on
    CPU), so only the warp differs: the grey graph's tolerance."""
    pytest.importorskip("nvidia.dali")
    from hbseg.dali_pipes import DaliLoader, LoaderConfig, NormalizeConfig

    idx = load_cache_index(shapes["coco"] / "hbseg-cache")
    cfg = LoaderConfig(size=48, batch_size=2, num_threads=1, channels=3, num_classes=3,
                       normalize=NormalizeConfig().for_channels(3))
    for mode in ("train", "eval"):
        cpu = list(DaliLoader(idx, cfg, mode=mode, device="cpu"))
        gpu = list(DaliLoader(idx, cfg, mode=mode, device="cuda"))
        for (a, m), (b, n) in zip(cpu, gpu, strict=True):
            assert b.shape == a.shape and n.shape == m.shape and b.device.type == "cuda"
            worst = float((a - b.cpu()).abs().max())
            assert worst < 0.05, f"{mode}: max |GPU - CPU| {worst:.4f} (normalised)"
            off = float((m != n.cpu()).float().mean())
            assert off < 5e-3, f"{mode}: {off:.5f} of mask pixels differ"


def test_colour_padding_is_black_per_channel():
    import torch

    from hbseg.dali_pipes import NormalizeConfig
    from hbseg.infer.preprocess import PreprocessSpec
    from hbseg.infer.sliding import pad_image

    norm = NormalizeConfig().for_channels(3)
    spec = PreprocessSpec(mean=norm.mean, std=norm.std, channels=3)
    x = torch.rand(1, 3, 5, 4)
    y = pad_image(x, (0, 3, 0, 2), spec.black)
    assert tuple(y.shape) == (1, 3, 7, 7)
    torch.testing.assert_close(y[..., :5, :4], x)
    for c in range(3):  # a black RGB pixel, normalised with that channel's mean and std
        torch.testing.assert_close(y[0, c, 6, 6], torch.tensor(-norm.mean[c] / norm.std[c]))
    assert PreprocessSpec().black == -0.485 / 0.229  # grey: one number, as before


# --------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_colour_coco_train_infer_eval(tmp_path, monkeypatch):
    """Colour COCO data: train (torch back-end), infer with pictures, eval; a checkpoint
    from another class list is refused."""
    pytest.importorskip("nvidia.dali")
    from conftest import run_main

    from hbseg.infer import InferConfig, run_inference
    from hbseg.report.cli import eval_main
    from hbseg.train import TrainConfig, train

    blobs = tmp_path / "blobs"
    spec = _shapes(blobs, "blobs", "coco", images=6)
    train(TrainConfig(out=str(tmp_path / "run"), data=str(blobs), loader="torch", workers=0,
                      encoder="resnet18", size=64, batch_size=3, epochs=1, progress=False,
                      tensorboard=False, amp="off"))
    ckpt = tmp_path / "run" / "best.pt"
    from hbseg.models import read_checkpoint

    card = read_checkpoint(ckpt)["card"]
    assert card["class_names"] == list(spec.classes) and card["in_channels"] == 3
    assert card["dataset"] == spec.to_dict() and card["normalize"]["mean"] == [0.485, 0.456, 0.406]
    out = tmp_path / "blobs.csv"
    run_inference(InferConfig(checkpoints=(str(ckpt),), data=str(blobs), out=str(out),
                              device="cpu", overlays=str(tmp_path / "pics"), progress=False))
    lines = out.read_text().splitlines()
    assert lines[0] == "image_name,class,rle" and len(lines) == 1 + 6 * 3
    assert [ln.split(",")[1] for ln in lines[1:4]] == list(spec.classes)
    assert len(list((tmp_path / "pics").glob("*.png"))) == 6
    cv2_out = tmp_path / "blobs-cv2.csv"  # the OpenCV decoding path reads colour too
    run_inference(InferConfig(checkpoints=(str(ckpt),), data=str(blobs), out=str(cv2_out),
                              device="cpu", loader="cv2", progress=False))
    assert len(cv2_out.read_text().splitlines()) == len(lines)
    res = tmp_path / "res.json"
    assert run_main(eval_main, ["--pred", out, "--data", blobs, "--out", res, "--quiet"],
                    monkeypatch) == 0
    result = json.loads(res.read_text())
    assert list(result["per_class"]) == list(spec.classes) and 0 <= result["mean_dice"] <= 1
    # the blobs model on the spine data set: a clear error
    spine = tmp_path / "spine"
    generate_shapes(spine, ShapesConfig(kind="spine", images=2, size=64))
    with pytest.raises(CheckpointError, match="predicts 3 classes .* this data set has 6"):
        run_inference(InferConfig(checkpoints=(str(ckpt),), data=str(spine),
                                  out=str(tmp_path / "x.csv"), device="cpu", progress=False))


@pytest.mark.slow
def test_readme_own_data_set_snippet_runs(tmp_path):
    """The README's "Your own data set" python block (spine, index PNGs, dali back-end)."""
    pytest.importorskip("nvidia.dali")
    text = (ROOT / "README.md").read_text().split("## Your own data set", 1)[1]
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp_path), "PYTHONPATH": path,
           "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout.strip().splitlines()
    assert out[0] == "('L1', 'L2', 'L3', 'L4', 'L5', 'S1') (4, 1, 64, 64) (4, 6, 64, 64)"
    assert out[-1].startswith("['L1', 'L2', 'L3', 'L4', 'L5', 'S1'] ")
