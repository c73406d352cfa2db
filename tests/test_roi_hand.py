"""Hand ROI crop and handedness: one matrix per sample, the same on both back-ends, and
predictions mapped back onto the original pixels exactly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import run_main

from hbseg.dali_pipes.config import NO_AUGMENT, AugmentConfig, LoaderConfig
from hbseg.dali_pipes.draw import SampleDraw, draw_sample, sample_matrix, to_opencv_matrix
from hbseg.dali_pipes.roi import (
    ROI_MEMO,
    SampleGeometry,
    hand_side,
    infer_matrix,
    intensity_bbox,
    label_windows,
    mask_bbox,
    needs_flip,
    square_window,
)
from hbseg.errors import ConfigError
from hbseg.infer.unwarp import unwarp

MARGIN = 0.1


@pytest.fixture(scope="module")
def hands(tmp_path_factory):
    """2 patients (2 left, 2 right hands) at 192 px with their mask cache; the module's own,
    since the ROI memo is written into the cache."""
    from hbseg.data import build_cache, load_cache_index
    from hbseg.data.synth import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("roi") / "data"
    generate_dataset(root, SynthConfig(ids=2, size=192, seed=3, test_ids=1), workers=1,
                     progress=False)
    build_cache(root, workers=1, progress=False)
    return load_cache_index(root / "hbseg-cache")


# ------------------------------------------------------------------ geometry, numpy only
def test_hand_side_from_the_competition_names():
    assert hand_side("ID001/image1661130828152_L.png") == "left"
    assert hand_side("image1661130828152_r.PNG") == "right"
    assert hand_side("scan.png") is None
    assert needs_flip("a_L.png", "right") and not needs_flip("a_R.png", "right")
    assert not needs_flip("a.png", "right") and not needs_flip("a_L.png", None)
    assert needs_flip("a_R.png", "left")


def test_roi_matrix_maps_the_window_onto_the_output_and_flips_in_place():
    hw, size = (300, 200), 64
    assert np.array_equal(sample_matrix(SampleDraw(), hw, size, None, (0, 0, 200, 300)),
                          sample_matrix(SampleDraw(), hw, size, None))
    roi = square_window((40, 90, 140, 170), MARGIN, hw)  # box 100 x 80 → side 120
    assert roi == pytest.approx((30.0, 70.0, 120.0, 120.0))
    m = sample_matrix(SampleDraw(), hw, size, None, roi)
    corners = np.array([[30, 70, 1], [150, 190, 1]], float) @ m.T
    assert corners == pytest.approx(np.array([[0, 0], [size, size]]), abs=1e-4)
    mf = sample_matrix(SampleDraw(flip=True), hw, size, None, roi)
    # the mirror turns about the window's centre: the output is mirrored, nothing moves out
    assert (np.array([[30, 70, 1], [150, 190, 1]], float) @ mf.T) == pytest.approx(
        np.array([[size, 0], [0, size]]), abs=1e-4)
    with pytest.raises(ValueError, match="exclude"):
        sample_matrix(SampleDraw(), hw, size, 100, roi)


def test_label_windows_hold_every_label_and_are_memoised(hands, monkeypatch):
    from hbseg.data.masks import read_packed_png

    hw = hands[["height", "width"]].to_numpy()
    rois = label_windows(hands["mask_path"], hw, MARGIN)
    for p, (x0, y0, w, h) in zip(hands["mask_path"], rois, strict=True):
        bx0, by0, bx1, by1 = mask_bbox(read_packed_png(p))
        assert w == h  # square
        assert x0 < bx0 and y0 < by0 and bx1 < x0 + w and by1 < y0 + h
        assert max(bx1 - bx0, by1 - by0) * (1 + 2 * MARGIN) == pytest.approx(w)
    memo = hands["mask_path"].iloc[0].rsplit("/masks/", 1)[0] + "/" + ROI_MEMO
    assert len(json.load(open(memo))) == len(hands)

    def no_read(path):
        raise AssertionError(f"{path} read again")

    monkeypatch.setattr("hbseg.data.masks.read_packed_png", no_read)
    assert np.array_equal(label_windows(hands["mask_path"], hw, MARGIN), rois)


# ------------------------------------------------------------------ loaders
def _collect(loader):
    images, masks = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(masks)


def _cfg(**kw) -> LoaderConfig:
    base = dict(size=96, batch_size=2, num_threads=1, augment=dataclasses.replace(
        NO_AUGMENT, clahe_p=0.0))
    return LoaderConfig(**{**base, **kw})


def test_eval_loaders_crop_to_the_labels_and_mirror_left_hands(hands):
    from hbseg.torch_loaders.torch_loader import TorchLoader

    _, roi = _collect(TorchLoader(hands, _cfg(roi_margin=MARGIN), "eval"))
    _, both = _collect(TorchLoader(hands, _cfg(roi_margin=MARGIN, canonical_hand="right"),
                                   "eval"))
    # the labels' box, widened by the margin, is the window: its longer side spans the
    # output less the margin band on each side, and the band holds no label
    labelled = roi.any(1)
    for k in range(len(hands)):
        x0, y0, x1, y1 = mask_bbox(labelled[k].numpy()[..., None])
        assert max(x1 - x0, y1 - y0) == pytest.approx(96 / (1 + 2 * MARGIN), abs=2)
    band = int(96 * MARGIN / (1 + 2 * MARGIN)) - 1
    assert not labelled[:, :band].any() and not labelled[:, -band:].any()
    assert not labelled[:, :, :band].any() and not labelled[:, :, -band:].any()
    # left hands (and only they) are the mirror image of the unflipped window
    left = torch.tensor([needs_flip(n, "right") for n in hands["image_name"]])
    assert left.any() and (~left).any()
    assert torch.equal(both[~left], roi[~left])
    assert (both[left] != roi[left].flip(-1)).float().mean() < 1e-3


def test_dali_and_torch_apply_the_same_roi_and_flip(hands):
    pytest.importorskip("nvidia.dali")
    from hbseg.dali_pipes.cache_loader import DaliCacheLoader
    from hbseg.dali_pipes.dali_loader import DaliLoader
    from hbseg.torch_loaders.torch_loader import TorchLoader

    aug = dataclasses.replace(AugmentConfig(), clahe_p=0.0, brightness_contrast_p=0.0,
                              ssr_p=1.0, hflip_p=0.5)
    cfg = _cfg(roi_margin=MARGIN, canonical_hand="right", augment=aug, seed=5)
    for mode in ("train", "eval"):
        t_img, t_mask = _collect(TorchLoader(hands, cfg, mode))
        d_img, d_mask = _collect(DaliLoader(hands, cfg, mode))
        assert (t_img - d_img).abs().mean() < 1e-3  # measured 1e-5 (train), 3e-5 (eval)
        assert (t_mask != d_mask).float().mean() < 1e-4  # measured 1e-6, 0
        c_img, c_mask = _collect(DaliCacheLoader(hands, cfg, mode, "cpu", headroom_bytes=0))
        assert torch.equal(c_img, d_img) and torch.equal(c_mask, d_mask)
    # the handedness flip is XOR-ed with the random one: a left hand the coin flipped stays
    g = SampleGeometry(flips=np.array([True, False]))
    d = dataclasses.replace(draw_sample(aug, 5, 0, 0), flip=True)
    assert not g.draw(d, 0).flip and g.draw(d, 1).flip
    assert g.draw(dataclasses.replace(d, flip=False), 0).flip


# ------------------------------------------------------------------ back to the original frame
def test_unwarp_inverts_the_forward_warp_inside_the_roi():
    h, w, size = 150, 210, 128
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    probs = np.stack([0.5 + 0.5 * np.sin(xx / 17.0) * np.cos(yy / 23.0),
                      np.clip((xx - 40) / 120.0, 0, 1)]).astype(np.float32)
    roi = square_window((60, 30, 160, 120), 0.05, (h, w))
    m = sample_matrix(SampleDraw(flip=True), (h, w), size, None, roi)
    fwd = np.stack([cv2.warpAffine(p, to_opencv_matrix(m), (size, size), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT) for p in probs])
    back = unwarp(torch.from_numpy(fwd), m, (h, w)).numpy()
    x0, y0, side, _ = roi
    inside = ((xx > x0 + 2) & (xx < x0 + side - 2) & (yy > y0 + 2) & (yy < y0 + side - 2))
    outside = ((xx < x0 - 1) | (xx > x0 + side + 1) | (yy < y0 - 1) | (yy > y0 + side + 1))
    assert inside.sum() > 5000 and outside.sum() > 1000
    err = np.abs(back - probs)[:, inside]
    assert err.max() < 0.03 and err.mean() < 0.005
    assert np.all(back[:, outside] == 0)


class Bright(torch.nn.Module):
    """A model stand-in: the input's bright pixels (> grey 128) as the one class, and the
    inputs it saw."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.thr = (128 / 255 - mean) / std
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return 40.0 * (x - self.thr)


def _hand_pictures(folder):
    """The same off-centre bright L-shape as a left hand and as a right hand image."""
    img = np.zeros((180, 240), np.uint8)
    img[40:150, 140:170] = 220
    img[120:150, 170:215] = 220
    folder.mkdir()
    for name in ("scan_L.png", "scan_R.png"):
        cv2.imwrite(str(folder / name), img)
    return img, [folder / "scan_L.png", folder / "scan_R.png"]


@pytest.mark.parametrize("backend", ["cv2", "dali"])
def test_predictor_maps_a_mirrored_cropped_hand_back_onto_its_pixels(tmp_path, backend):
    if backend == "dali":
        pytest.importorskip("nvidia.dali")
    from hbseg.infer.predictor import Predictor
    from hbseg.infer.preprocess import open_loader
    from hbseg.models.card import ModelCard

    img, paths = _hand_pictures(tmp_path / "test")
    x0, y0, x1, y1 = intensity_bbox(paths[0])
    assert (140 - 4 <= x0 <= 140) and (40 - 4 <= y0 <= 40) and (215 <= x1 <= 219)
    card = ModelCard(arch="stand-in", encoder="none", classes=1, class_names=("hand",),
                     clahe={"p": 0.0}, size=64, roi_margin=0.05, canonical_hand="right")
    model = Bright(0.485, 0.229)
    pred = Predictor([(model, card)], device="cpu")
    spec = pred.specs[0]
    assert spec.geometric and spec.size == 64
    loader = open_loader(paths, spec, batch_size=2, device="cpu", size=None, backend=backend)
    (images, hws, names), = list(loader)
    assert names == ["scan_L.png", "scan_R.png"] and hws == [(180, 240)] * 2
    assert all(tuple(x.shape) == (1, 1, 64, 64) for x in images)
    truth = torch.from_numpy(img > 128)
    for x, hw, path in zip(images, hws, paths, strict=True):
        mask = pred.predict_masks(x, hw, path)[0]
        inter, union = (mask & truth).sum().item(), (mask | truth).sum().item()
        assert inter / union > 0.9, (path.name, inter / union)
    # the model saw the left hand mirrored: its input is the right hand's, flipped
    left_in, right_in = model.seen[0], model.seen[1]
    assert (left_in - right_in.flip(-1)).abs().max() < 0.05
    assert (left_in - right_in).abs().max() > 1.0
    # and the matrix is the one the loader used, memoised
    assert infer_matrix(str(paths[0]), 64, 0.05, "right") is spec.matrix(paths[0])


def test_options_reach_the_loaders_and_the_model_card(tmp_path):
    from hbseg.infer.preprocess import PreprocessSpec
    from hbseg.models.card import ModelCard
    from hbseg.train.config import TrainConfig
    from hbseg.train.trainer import model_card

    cfg = TrainConfig(out=str(tmp_path), data=str(tmp_path), roi_crop=0.05,
                      canonical_hand="right", size=64)
    for mode in ("train", "eval"):
        lc = cfg.loader_config(mode)
        assert (lc.roi_margin, lc.canonical_hand) == (0.05, "right")
    card = ModelCard.from_dict(json.loads(json.dumps(model_card(cfg).to_dict())))
    assert (card.roi_margin, card.canonical_hand) == (0.05, "right")
    spec = PreprocessSpec.from_card(card)
    assert spec.geometric and spec.size == 64
    assert not PreprocessSpec.from_card(ModelCard(arch="unet", encoder="resnet18")).geometric
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    bad = [dict(crop=128), dict(loader="baseline"), dict(val_full_res=True),
           dict(canonical_hand="both"), dict(roi_crop=-1.0)]
    for kw in bad:
        with pytest.raises(ConfigError):
            TrainConfig(out=str(tmp_path), data=str(tmp_path),
                        **{**dict(roi_crop=0.05, canonical_hand="right"), **kw})


def test_train_help_documents_both_options():
    from click.testing import CliRunner

    from hbseg.train.cli import train

    text = CliRunner().invoke(train, ["--help"]).output
    assert "--roi-crop MARGIN" in text and "--canonical-hand [right|left]" in text


@pytest.mark.slow
def test_cli_train_then_infer_applies_the_card(hands, tmp_path, monkeypatch, capsys):
    pytest.importorskip("nvidia.dali")
    from hbseg.infer.cli import infer_main
    from hbseg.infer.csv_io import read_submission
    from hbseg.models import read_checkpoint
    from hbseg.train.cli import main as train_main

    root = Path(hands["mask_path"].iloc[0]).parents[3]
    run = tmp_path / "run"
    args = ["--data", root, "--loader", "dali", "--device", "cpu", "--encoder", "resnet18",
            "--size", "64", "--batch-size", "2", "--epochs", "1", "--roi-crop", "0.05",
            "--canonical-hand", "right", "--no-progress", "--no-tensorboard", "--out", run]
    assert run_main(train_main, args, monkeypatch) == 0
    card = read_checkpoint(run / "best.pt")["card"]
    assert (card["roi_margin"], card["canonical_hand"]) == (0.05, "right")
    subs = {}
    for loader in ("dali", "cv2"):
        out = tmp_path / f"{loader}.csv"
        assert run_main(infer_main, ["--checkpoint", run / "best.pt", "--data", root / "test",
                                     "--out", out, "--device", "cpu", "--loader", loader,
                                     "--quiet"], monkeypatch) == 0
        doc = json.loads(Path(f"{out}.config.json").read_text())
        assert doc["predictor"]["models"][0]["preprocess"]["canonical_hand"] == "right"
        subs[loader] = read_submission(out)
    # the loaders' warps differ by at most a grey level: the masks agree but for a few pixels
    assert subs["dali"].images == subs["cv2"].images and len(subs["dali"].images) == 2
    for name in subs["dali"].images:
        a, b = (s.masks(name, 192, 192) for s in (subs["dali"], subs["cv2"]))
        assert a.shape == (29, 192, 192) and a.any()
        assert (a != b).mean() < 1e-3
