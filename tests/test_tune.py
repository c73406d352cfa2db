"""hbseg-tune on OOF arrays built by hand: planted optima, never worse in sample, the
histogram Dice equals brute-force post-processing, and the files feed hbseg-infer and
hbseg-ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_main

from hbseg.data.classes import CLASSES, NUM_CLASSES
from hbseg.data.masks import pack_masks, write_packed_png
from hbseg.errors import DataError
from hbseg.infer.evaluate import dice_scores
from hbseg.infer.postprocess import postprocess
from hbseg.tune.config import TuneConfig
from hbseg.tune.curves import cut_of, dice_at_cuts
from hbseg.tune.oof import LEVELS, OOF_INDEX, OOF_META, quantize
from hbseg.tune.tuner import run_tune

S = 32  # image side
SIZES = (0, 2, 5, 10, 30, 100)


def gt_squares(rng, n_images: int) -> list[np.ndarray]:
    """Per image, every class one 8x8 square in the left half (right half stays free)."""
    out = []
    for _ in range(n_images):
        gt = np.zeros((NUM_CLASSES, S, S), np.uint8)
        for c in range(NUM_CLASSES):
            y, x = rng.integers(0, S - 8), rng.integers(0, S // 2 - 8)
            gt[c, y:y + 8, x:x + 8] = 1
        out.append(gt)
    return out


def clean_probs(gt: np.ndarray) -> np.ndarray:
    return np.where(gt == 1, 0.9, 0.1).astype(np.float32)


def write_oof(folder: Path, gts: list[np.ndarray], probs: list[np.ndarray], folds: list[int],
              class_names=CLASSES) -> Path:
    """An OOF folder in the format ``hbseg-kfold oof`` writes, masks in a cache beside it."""
    masks = folder.parent / f"{folder.name}-masks"
    masks.mkdir(parents=True, exist_ok=True)
    (folder / "P").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (gt, p, f) in enumerate(zip(gts, probs, folds, strict=True)):
        name = f"img{i:03d}.png"
        write_packed_png(masks / f"{i}.png", pack_masks(gt))
        np.save(folder / "P" / f"img{i:03d}.npy", quantize(torch.from_numpy(p)))
        h, w = gt.shape[1:]
        rows.append(f"{name},P,{f},{h},{w},P/img{i:03d}.npy,{masks / f'{i}.png'}")
    (folder / OOF_INDEX).write_text("image_name,id,fold,height,width,file,mask_path\n"
                                    + "\n".join(rows) + "\n")
    (folder / OOF_META).write_text(json.dumps({"class_names": list(class_names), "dtype": "uint8",
                                               "levels": LEVELS}))
    return folder


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Class 0 is best cut at 0.3, class 1 at 0.7; class 2 has 4-pixel false blobs."""
    rng = np.random.default_rng(0)
    gts = gt_squares(rng, 10)
    probs = []
    for gt in gts:
        p = clean_probs(gt)
        fg = gt[0] == 1
        p[0] = np.where(fg, rng.uniform(0.31, 0.40, (S, S)), rng.uniform(0.15, 0.29, (S, S)))
        fg = gt[1] == 1
        p[1] = np.where(fg, rng.uniform(0.71, 0.80, (S, S)), rng.uniform(0.55, 0.69, (S, S)))
        p[2, 2:4, 26:28] = 0.9  # two blobs far from the square (which is in the left half)
        p[2, 26:28, 28:30] = 0.9
        probs.append(p)
    folder = write_oof(tmp_path_factory.mktemp("planted") / "oof", gts, probs,
                       [i % 5 for i in range(10)])
    out = folder.parent / "tuned"
    report = run_tune(TuneConfig(oof=(str(folder),), out=str(out), min_sizes=SIZES, progress=False))
    return folder, out, report, gts, probs


def test_recovers_planted_thresholds_and_min_sizes(planted):
    _, out, r, _, _ = planted
    thr = json.loads((out / "thresholds.json").read_text())
    mins = json.loads((out / "min_sizes.json").read_text())
    assert list(thr) == list(CLASSES) and list(mins) == list(CLASSES)
    assert thr[CLASSES[0]] == pytest.approx(0.3) and thr[CLASSES[1]] == pytest.approx(0.7)
    assert all(thr[c] == 0.5 for c in CLASSES[2:])  # ties keep the default
    assert mins[CLASSES[2]] in (5, 10, 30)  # drops the 4-pixel blobs, keeps the 64-pixel bone
    assert all(mins[c] == 0 for c in CLASSES if c != CLASSES[2])
    m = r["mean"]
    assert m["baseline"] < m["step1_in_sample"] < m["step2_in_sample"] == pytest.approx(1.0)
    # the same structure in every fold: cross-validation agrees with the in-sample figure
    assert m["step2_cv"] == pytest.approx(1.0) and m["step1_cv"] == pytest.approx(m["step1_in_sample"])
    assert not (out / "weights.json").exists()
    text = (out / "tune-report.txt").read_text()
    assert "cross-validated" in text and CLASSES[0] in text
    saved = json.loads((out / "tune-report.json").read_text())
    assert saved["per_class"][CLASSES[0]]["threshold"] == pytest.approx(0.3)


def brute_force_dice(probs, gts, thr: dict, mins: dict) -> np.ndarray:
    """What hbseg-infer would score: dequantised probabilities, then its post-processing."""
    scores = []
    for p, gt in zip(probs, gts, strict=True):
        q = torch.from_numpy(quantize(torch.from_numpy(p))).float() / LEVELS
        masks = postprocess(q, [thr[c] for c in CLASSES], [mins[c] for c in CLASSES])
        scores.append(dice_scores(masks.numpy(), gt))
    return np.mean(scores, 0)


def test_histogram_dice_equals_postprocess_and_never_drops(tmp_path):
    rng = np.random.default_rng(1)
    gts = gt_squares(rng, 6)
    # noisy, no planted structure: in-sample tuning may gain, it must never lose
    probs = [np.clip(0.5 * g + rng.uniform(0, 0.6, g.shape), 0, 1).astype(np.float32) for g in gts]
    folder = write_oof(tmp_path / "oof", gts, probs, [0, 1, 2, 0, 1, 2])
    r = run_tune(TuneConfig(oof=(str(folder),), out=str(tmp_path / "t"), min_sizes=SIZES,
                            progress=False))
    for c in CLASSES:
        row = r["per_class"][c]
        assert row["step1_in_sample"] >= row["baseline"] - 1e-12
        assert row["step2_in_sample"] >= row["step1_in_sample"] - 1e-12
    base = brute_force_dice(probs, gts, dict.fromkeys(CLASSES, 0.5), dict.fromkeys(CLASSES, 0))
    tuned = brute_force_dice(probs, gts, r["thresholds"], r["min_sizes"])
    np.testing.assert_allclose(base, [r["per_class"][c]["baseline"] for c in CLASSES], atol=1e-6)
    # a class whose cross-validated Dice fell with tuning keeps its untuned settings
    kept = set(r["kept_untuned"])
    want = [r["per_class"][c]["baseline" if c in kept else "step2_in_sample"] for c in CLASSES]
    np.testing.assert_allclose(tuned, want, atol=1e-6)


def test_every_threshold_from_one_histogram_matches_thresholding():
    rng = np.random.default_rng(2)
    q = torch.from_numpy(rng.integers(0, 256, (3, 20, 20), dtype=np.uint8))
    gt = torch.from_numpy((rng.uniform(size=(3, 20, 20)) < 0.3).astype(np.uint8))
    grid = [0.05, 0.2, 0.3, 0.5, 0.95, 0.999]
    got = dice_at_cuts(q, gt, torch.tensor([cut_of(t) for t in grid]))
    for j, t in enumerate(grid):
        want = dice_scores((q.float() / LEVELS > t).numpy(), gt.numpy())
        np.testing.assert_allclose(got[:, j].numpy(), want, atol=1e-12)


def save_probs_folder(folder: Path, probs: list[np.ndarray]) -> Path:
    """A ``hbseg-infer --save-probs`` folder: float16 maps and index.json."""
    folder.mkdir(parents=True)
    images = {}
    for i, p in enumerate(probs):
        np.save(folder / f"img{i:03d}.npy", p.astype(np.float16))
        images[f"img{i:03d}.png"] = {"file": f"img{i:03d}.npy", "height": S, "width": S}
    (folder / "index.json").write_text(json.dumps({"class_names": list(CLASSES), "images": images}))
    return folder


def test_class_weights_of_two_models_and_ensemble_round_trip(tmp_path, monkeypatch):
    from hbseg.infer.cli import ensemble_main
    from hbseg.infer.csv_io import read_submission

    rng = np.random.default_rng(3)
    gts = gt_squares(rng, 6)
    a, b = [], []
    for gt in gts:
        pa, pb = clean_probs(gt), clean_probs(gt)
        pa[3] = 1 - pa[3]  # model a is wrong about class 3, model b about class 4
        pb[4] = 1 - pb[4]
        a.append(pa)
        b.append(pb)
    folds = [0, 1, 2, 0, 1, 2]
    fa, fb = write_oof(tmp_path / "a", gts, a, folds), write_oof(tmp_path / "b", gts, b, folds)
    out = tmp_path / "tuned"
    r = run_tune(TuneConfig(oof=(str(fa), str(fb)), out=str(out), weight_step=0.5,
                            tune_min_sizes=False, progress=False))
    w = json.loads((out / "weights.json").read_text())
    assert w[CLASSES[3]] == [0.0, 1.0] and w[CLASSES[4]] == [1.0, 0.0]
    assert w[CLASSES[0]] == [0.5, 0.5]  # a tie keeps equal weights
    assert r["mean"]["step2_in_sample"] == pytest.approx(1.0)
    assert r["mean"]["baseline"] < 0.99
    assert r["mean"]["step2_cv"] == pytest.approx(1.0)
    # the same files steer hbseg-ensemble's soft vote of --save-probs folders
    pa, pb = save_probs_folder(tmp_path / "pa", a), save_probs_folder(tmp_path / "pb", b)
    names = [f"img{i:03d}.png" for i in range(len(gts))]

    def vote(*extra) -> np.ndarray:
        csv = tmp_path / f"vote{len(extra)}.csv"
        args = ["--probs", pa, "--probs", pb, "--out", csv, "--quiet", *extra]
        assert run_main(ensemble_main, args, monkeypatch) == 0
        sub = read_submission(csv)
        return np.mean([dice_scores(sub.masks(n, S, S), g) for n, g in zip(names, gts, strict=True)], 0)

    plain = vote()
    tuned = vote("--class-weights", out / "weights.json", "--thresholds", out / "thresholds.json",
                 "--min-sizes", out / "min_sizes.json")
    assert plain[3] < 0.5 and plain[4] < 0.5
    np.testing.assert_allclose(tuned, 1.0)


def test_oof_folders_must_cover_the_same_images(tmp_path):
    rng = np.random.default_rng(4)
    gts = gt_squares(rng, 4)
    probs = [clean_probs(g) for g in gts]
    fa = write_oof(tmp_path / "a", gts, probs, [0, 1, 0, 1])
    fb = write_oof(tmp_path / "b", gts[:3], probs[:3], [0, 1, 0])
    with pytest.raises(DataError, match="lacks 'img003.png'"):
        run_tune(TuneConfig(oof=(str(fa), str(fb)), out=str(tmp_path / "t"), progress=False))


def make_ckpt(path: Path, bias: float) -> str:
    """A constant model: every pixel of every class gets probability sigmoid(bias)."""
    from hbseg.models import ModelCard, create_model, save_checkpoint

    model = create_model("unet", "resnet18")
    head = model.segmentation_head[0]
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.constant_(head.bias, bias)
    save_checkpoint(path, model, ModelCard(arch="unet", encoder="resnet18", size=64))
    return str(path)


def test_tuned_files_round_trip_into_hbseg_infer(planted, tiny_root, tmp_path, monkeypatch):
    from hbseg.infer.cli import infer_main
    from hbseg.infer.csv_io import read_submission

    _, out, _, _, _ = planted
    ckpt = make_ckpt(tmp_path / "half.pt", 0.0)  # p = 0.5 everywhere

    def infer(name: str, *extra) -> tuple[dict, dict]:
        csv = tmp_path / name
        args = ["--checkpoint", ckpt, "--data", tiny_root, "--out", csv, "--device", "cpu",
                "--loader", "cv2", "--quiet", *extra]
        assert run_main(infer_main, args, monkeypatch) == 0
        cfg = json.loads((tmp_path / f"{name}.config.json").read_text())
        sub = read_submission(csv)
        return {c: [sub.rles[n][i] for n in sub.images] for i, c in enumerate(CLASSES)}, cfg

    plain, _ = infer("plain.csv")
    tuned, cfg = infer("tuned.csv", "--thresholds", out / "thresholds.json",
                       "--min-sizes", out / "min_sizes.json")
    thr = json.loads((out / "thresholds.json").read_text())
    mins = json.loads((out / "min_sizes.json").read_text())
    assert cfg["predictor"]["thresholds"] == pytest.approx([thr[c] for c in CLASSES])
    assert cfg["predictor"]["min_sizes"] == [mins[c] for c in CLASSES]
    assert all(r == "" for r in plain[CLASSES[0]])  # 0.5 > 0.5 is false: empty
    assert all(r != "" for r in tuned[CLASSES[0]])  # 0.5 > 0.3: the whole image
    assert all(r == "" for r in tuned[CLASSES[1]])  # 0.5 > 0.7 is false
    # a per-class minimum size larger than the image empties that class alone
    (tmp_path / "big.json").write_text(json.dumps({CLASSES[0]: 10**9}))
    big, cfg = infer("big.csv", "--thresholds", out / "thresholds.json",
                     "--min-sizes", tmp_path / "big.json", "--min-size", "3")
    assert all(r == "" for r in big[CLASSES[0]])
    assert cfg["predictor"]["min_sizes"] == [10**9] + [3] * (NUM_CLASSES - 1)


def test_cross_validation_exposes_an_optimum_that_does_not_generalise(tmp_path):
    """Class 0 is best cut at 0.3 in folds 0-1 and at 0.7 in folds 2-3: one threshold
    looks fine in sample, but chosen without a fold it fails on that fold."""
    rng = np.random.default_rng(5)
    gts = gt_squares(rng, 8)
    folds = [0, 1, 2, 3, 0, 1, 2, 3]
    probs = []
    for gt, f in zip(gts, folds, strict=True):
        p = clean_probs(gt)
        lo, hi = ((0.15, 0.29), (0.31, 0.40)) if f < 2 else ((0.55, 0.69), (0.71, 0.80))
        p[0] = np.where(gt[0] == 1, rng.uniform(*hi, (S, S)), rng.uniform(*lo, (S, S)))
        probs.append(p)
    folder = write_oof(tmp_path / "oof", gts, probs, folds)
    r = run_tune(TuneConfig(oof=(str(folder),), out=str(tmp_path / "t"), tune_min_sizes=False,
                            progress=False))
    row = r["per_class"][CLASSES[0]]
    assert row["step1_in_sample"] > row["baseline"]
    assert row["step1_cv"] < row["step1_in_sample"] - 0.3
    chosen = r["chosen_per_held_out_fold"]
    assert {chosen[str(f)]["thresholds"][0] for f in range(4)} == {0.3, 0.7}
