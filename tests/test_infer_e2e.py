"""hbseg-infer end to end: tiny synthetic set, ensembles, loaders, real radiographs, errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from _paths import real_hands_dir
from conftest import run_main

from hbseg.data.classes import CLASSES, NUM_CLASSES
from hbseg.data.images import png_header
from hbseg.infer.config import EvalConfig, InferConfig
from hbseg.infer.csv_io import read_submission
from hbseg.infer.evaluate import evaluate
from hbseg.infer.infer import list_images, run_inference
from hbseg.models import ModelCard, create_model, save_checkpoint


def make_ckpt(path, size=64, seed=0, bias=None, **card) -> str:
    torch.manual_seed(seed)
    model = create_model("unet", "resnet18")
    if bias is not None:  # a constant model: every pixel gets logit ``bias``
        head = model.segmentation_head[0]
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.constant_(head.bias, bias)
    save_checkpoint(path, model, ModelCard(arch="unet", encoder="resnet18", size=size, **card))
    return str(path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    return {
        "a": make_ckpt(d / "a.pt", 64, seed=0),
        "b": make_ckpt(d / "b.pt", 96, seed=1, clahe={"p": 0.0, "clip_limit": 2.0, "tile_grid": [8, 8]},
                       normalize={"mean": 0.5, "std": 0.25}),
        "full": make_ckpt(d / "full.pt", 64, bias=20.0),
    }


def check_csv(path, df) -> dict:
    """Every image once, 29 rows in class order, every RLE decodable at its size."""
    lines = path.read_text().splitlines()
    assert lines[0] == "image_name,class,rle"
    assert len(lines) == 1 + NUM_CLASSES * len(df)
    for k in range(len(df)):
        rows = [ln.split(",") for ln in lines[1 + k * NUM_CLASSES: 1 + (k + 1) * NUM_CLASSES]]
        assert len({r[0] for r in rows}) == 1
        assert [r[1] for r in rows] == list(CLASSES)
    sub = read_submission(path)
    assert sorted(sub.images) == sorted(df["image_name"])
    for r in df.itertuples(index=False):
        sub.masks(r.image_name, r.height, r.width)  # raises on a run past the end
    return sub.rles


def test_cli_end_to_end_on_tiny_set(tiny_root, ckpts, tmp_path, monkeypatch, capsys):
    from hbseg.infer.cli import infer_main

    out = tmp_path / "sub.csv"
    args = ["--checkpoint", ckpts["a"], "--data", tiny_root, "--out", out, "--device", "cpu",
            "--overlays", tmp_path / "ov", "--save-probs", tmp_path / "probs", "--quiet"]
    assert run_main(infer_main, args, monkeypatch) == 0
    assert "images/s" in capsys.readouterr().out
    df = list_images(tiny_root)  # the root: its test/ split
    assert len(df) >= 1 and all(df["json_path"] == "")
    check_csv(out, df)
    cfg = json.loads((tmp_path / "sub.csv.config.json").read_text())
    assert cfg["kind"] == "InferConfig" and cfg["summary"]["images"] == len(df)
    assert cfg["predictor"]["models"][0]["preprocess"]["clahe"] is True
    index = json.loads((tmp_path / "probs" / "index.json").read_text())
    for r in df.itertuples(index=False):
        stem = r.image_name[:-4]
        assert png_header(tmp_path / "ov" / f"{stem}.png")["width"] > 0
        p = np.load(tmp_path / "probs" / f"{stem}.npy")
        assert p.dtype == np.float16 and p.shape == (NUM_CLASSES, r.height, r.width)
        assert index["images"][r.image_name]["file"] == f"{stem}.npy"


def test_sliding_tta_on_labelled_split_then_eval(tiny_root, ckpts, tmp_path):
    thr = tmp_path / "thr.json"
    thr.write_text(json.dumps({"Radius": 0.6, "finger-1": 0.4}))
    out = tmp_path / "train.csv"
    s = run_inference(InferConfig(
        checkpoints=(ckpts["a"],), data=str(tiny_root / "train"), out=str(out), device="cpu",
        window=160, stride=96, tta_hflip=True, scales=(1.0, 1.25), thresholds_file=str(thr),
        min_size=20, overlays=str(tmp_path / "ov"), overlay_max_side=128, progress=False))
    df = list_images(tiny_root / "train")
    assert s["images"] == len(df) and s["images_per_s"] > 0 and s["overlay_mean_dice"] is not None
    check_csv(out, df)
    res = evaluate(EvalConfig(pred=str(out), data=str(tiny_root), workers=1, progress=False))
    assert 0.0 <= res["mean_dice"] <= 1.0 and res["images"] == len(df)
    # the picture holds two panels side by side: ground truth | prediction
    info = png_header(tmp_path / "ov" / f"{df['image_name'].iloc[0][:-4]}.png")
    assert info["width"] > 2 * 128 and info["height"] > 128


def test_soft_vote_of_models_with_different_preprocessing(tiny_root, ckpts, tmp_path):
    from hbseg.infer.predictor import Predictor

    pred = Predictor([ckpts["a"], ckpts["b"]], device="cpu")
    assert len(pred.specs) == 2 and pred.input_size is None  # two decoding passes, full res
    probs = {}
    for key, cks, w in [("a", (ckpts["a"],), None), ("b", (ckpts["b"],), None),
                        ("ab", (ckpts["a"], ckpts["b"]), (3.0, 1.0))]:
        run_inference(InferConfig(checkpoints=cks, weights=w, data=str(tiny_root), out=str(tmp_path / f"{key}.csv"),
                                  device="cpu", save_probs=str(tmp_path / key), loader="cv2", progress=False))
        probs[key] = {p.name: np.load(p).astype(np.float32) for p in (tmp_path / key).glob("*.npy")}
    for name in probs["ab"]:
        expected = 0.75 * probs["a"][name] + 0.25 * probs["b"][name]
        # alone, each model gets its input resized by the loader (uint8, as in training); together
        # they get full-resolution input resized on the device: the same up to rounding
        np.testing.assert_allclose(probs["ab"][name], expected, atol=1e-2)
        assert np.abs(probs["ab"][name] - expected).mean() < 1e-3


@pytest.mark.parametrize("size", [64, None])
def test_loader_backends_agree(tiny_root, size):
    from hbseg.infer.preprocess import PreprocessSpec, dali_available, open_loader

    if not dali_available():
        pytest.skip("DALI not installed")
    real = real_hands_dir()  # optional here: synthetic images alone still test the parity
    real_pngs = sorted(real.glob("*.png"))[:2] if real else []
    paths = [*list_images(tiny_root)["image_path"], *map(str, real_pngs)]
    spec = PreprocessSpec()
    dali = open_loader(paths, spec, batch_size=2, device="cpu", size=size, backend="dali")
    cv = open_loader(paths, spec, batch_size=2, device="cpu", size=size, backend="cv2")
    assert (dali.backend, cv.backend) == ("dali", "cv2")
    for (xd, hwd, nd), (xc, hwc, nc) in zip(dali, cv, strict=True):
        assert nd == nc and hwd == hwc
        for a, b, hw in zip(xd, xc, hwc, strict=True):
            assert a.shape == b.shape == (1, 1, *((size, size) if size else hw))
            if size is None:  # same CLAHE (DALI's equals OpenCV's) and normalisation
                torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
            else:  # and resizes that agree up to rounding
                assert (a - b).abs().mean() < 0.05


def test_real_radiographs_of_odd_sizes(real_hands, ckpts, tmp_path):
    folder = real_hands[0].parent  # a plain folder of PNGs: 592x910 up to 1344x1573
    df = list_images(folder)
    assert len(df) == len(real_hands)
    out = tmp_path / "real.csv"
    run_inference(InferConfig(checkpoints=(ckpts["a"],), data=str(folder), out=str(out), device="cpu",
                              batch_size=2, progress=False))
    check_csv(out, df)
    # a constant model through the sliding window: every mask is exactly the whole image
    some = tmp_path / "some"
    some.mkdir()
    for p in sorted(real_hands, key=lambda p: png_header(p)["width"])[:3]:
        (some / p.name).symlink_to(p)
    df = list_images(some)
    out = tmp_path / "full.csv"
    run_inference(InferConfig(checkpoints=(ckpts["full"],), data=str(some), out=str(out), device="cpu",
                              window=512, stride=384, min_size=10, progress=False))
    rles = check_csv(out, df)
    for r in df.itertuples(index=False):
        assert rles[r.image_name] == [f"1 {r.height * r.width}"] * NUM_CLASSES


@pytest.mark.parametrize("extra,needle", [
    (["--stride", "8"], "--stride needs --window"),
    (["--window", "64", "--stride", "100"], "1 <= --stride <= --window"),
    (["--weights", "1,2"], "--weights has 2 values for 1 checkpoints"),
    (["--thresholds", "THR"], "unknown class 'Radious'"),
])
def test_cli_errors_are_one_line(tiny_root, ckpts, tmp_path, monkeypatch, capsys, extra, needle):
    from hbseg.infer.cli import infer_main

    thr = tmp_path / "thr.json"
    thr.write_text(json.dumps({"Radious": 0.5}))
    extra = [str(thr) if e == "THR" else e for e in extra]
    args = ["--checkpoint", ckpts["a"], "--data", tiny_root, "--out", tmp_path / "x.csv", "--quiet", *extra]
    assert run_main(infer_main, args, monkeypatch) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err
    assert not (tmp_path / "x.csv").exists()


def test_cuda_without_gpu_is_a_clear_error(tiny_root, ckpts, tmp_path, monkeypatch, capsys):
    from hbseg.infer.cli import infer_main

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    args = ["--checkpoint", ckpts["a"], "--data", tiny_root, "--out", tmp_path / "x.csv", "--device", "cuda"]
    assert run_main(infer_main, args, monkeypatch) == 1
    assert "no CUDA GPU" in capsys.readouterr().err


def test_speed_measure(ckpts):
    from hbseg.infer.predictor import Predictor
    from hbseg.infer.speed import measure

    row = measure(Predictor([ckpts["a"]], device="cpu"), height=96, width=80, n=2, warmup=1)
    assert row["images"] == 2 and row["images_per_s"] > 0 and row["ms_per_image"] > 0


@pytest.mark.gpu
def test_cuda_matches_cpu_end_to_end(tiny_root, ckpts, tmp_path):
    subs = {}
    for dev in ("cpu", "cuda"):
        out = tmp_path / f"{dev}.csv"
        run_inference(InferConfig(checkpoints=(ckpts["a"],), data=str(tiny_root), out=str(out), device=dev,
                                  window=128, stride=64, tta_hflip=True, min_size=5, amp=False,
                                  progress=False))
        subs[dev] = read_submission(out)
    for r in list_images(tiny_root).itertuples(index=False):
        a = subs["cpu"].masks(r.image_name, r.height, r.width)
        b = subs["cuda"].masks(r.image_name, r.height, r.width)
        off = float((a != b).mean())
        assert off < 0.01, f"{r.image_name}: {off:.4f} of mask pixels differ between CPU and CUDA"


def test_cli_module_is_light_and_package_exports_resolve():
    import subprocess

    code = "import sys, hbseg.infer.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"  # --help stays instant
    import hbseg.infer as hi

    for name in hi.__all__:
        assert getattr(hi, name) is not None
