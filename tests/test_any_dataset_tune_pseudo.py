"""k-fold OOF tuning and pseudo-labels on a data set that is not the hands: the 6-class
synthetic spine (hbseg.data.synth_shapes), constant-probability checkpoints so that the
tuned thresholds are known in advance."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_main

from hbseg.data import build_cache, load_cache_index, read_packed_png, unpack_masks
from hbseg.data.synth_shapes import ShapesConfig, generate_shapes
from hbseg.errors import CheckpointError, ConfigError, DataError

# per class the constant probability of the fake model: below 0.5 the untuned threshold
# predicts nothing (Dice 0), so tuning must lower it; above 0.5 it already predicts all
PROBS = (0.4, 0.7, 0.3, 0.8, 0.45, 0.6)


@pytest.fixture(scope="module")
def spine(tmp_path_factory) -> tuple[Path, Path, object]:
    """6 labelled spine images at 64 px (3 groups, cached) and 2 unlabelled ones beside."""
    base = tmp_path_factory.mktemp("spine")
    root, unlabelled = base / "spine", base / "unlabelled"
    spec = generate_shapes(root, ShapesConfig(kind="spine", images=8, size=64))
    shutil.move(root / "images" / "G003", unlabelled / "G003")
    shutil.rmtree(root / "labels" / "G003")
    build_cache(root, workers=1, progress=False)
    return root, unlabelled, spec


def spec_ckpt(path: Path, spec, probs=PROBS) -> Path:
    """A constant model of the data set's classes: class c is probs[c] everywhere."""
    from hbseg.models import ModelCard, create_model, save_checkpoint

    model = create_model("unet", "resnet18", spec.channels, spec.num_classes)
    head = model.segmentation_head[0]
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([math.log(p / (1 - p)) for p in probs]))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model, ModelCard(
        arch="unet", encoder="resnet18", in_channels=spec.channels, classes=spec.num_classes,
        class_names=spec.classes, dataset=spec.to_dict(), size=64))
    return path


def fake_kfold(root: Path, out: Path, spec) -> list[int]:
    """An hbseg-kfold folder as `hbseg-kfold train` leaves it, a constant model per fold."""
    from hbseg.train.config import TrainConfig, save_config
    from hbseg.train.kfold import KFOLD_CONFIG

    folds = sorted(int(f) for f in load_cache_index(root / "hbseg-cache")["fold"].unique())
    out.mkdir(parents=True)
    save_config(TrainConfig(data=str(root), out=str(out), size=64, encoder="resnet18"),
                out / KFOLD_CONFIG)
    for k in folds:
        spec_ckpt(out / f"fold-{k}" / "best.pt", spec)
    return folds


def test_oof_and_tuning_follow_the_data_sets_classes(spine, tmp_path, monkeypatch, capsys):
    from hbseg.infer.cli import infer_main
    from hbseg.infer.csv_io import read_submission
    from hbseg.tune.cli import main as tune_main
    from hbseg.tune.kfold_cli import main as kfold_main

    root, _, spec = spine
    kf = tmp_path / "kf"
    folds = fake_kfold(root, kf, spec)
    assert len(folds) > 1  # so the report has a cross-validated figure
    assert run_main(kfold_main, ["oof", kf, "--device", "cpu", "--loader", "cv2", "--quiet"],
                    monkeypatch) == 0
    assert f"{(6 * 64 * 64 * 6 + 6 * 128) / 1e6:.1f} MB as uint8" in capsys.readouterr().out
    meta = json.loads((kf / "oof" / "oof.json").read_text())
    assert meta["class_names"] == list(spec.classes)
    oof = pd.read_csv(kf / "oof" / "oof.csv")
    assert len(oof) == 6
    for r in oof.itertuples(index=False):
        q = np.load(kf / "oof" / r.file)
        assert q.shape == (6, 64, 64) and q.dtype == np.uint8
        np.testing.assert_array_equal(q[:, 0, 0], [round(p * 255) for p in PROBS])

    tuned = tmp_path / "tuned"
    assert run_main(tune_main, [kf / "oof", "--out", tuned, "--quiet"], monkeypatch) == 0
    thr = json.loads((tuned / "thresholds.json").read_text())
    mins = json.loads((tuned / "min_sizes.json").read_text())
    assert list(thr) == list(mins) == list(spec.classes)
    for c, p in zip(spec.classes, PROBS, strict=True):
        assert thr[c] < p if p < 0.5 else thr[c] == 0.5  # lowered only where 0.5 finds nothing
    report = json.loads((tuned / "tune-report.json").read_text())
    assert report["mean"]["step2_in_sample"] > report["mean"]["baseline"]
    assert report["mean"]["step2_cv"] is not None

    # hbseg-infer on the same data set takes the files: every class now covers the image
    def infer(name: str, *extra) -> dict[str, list[str]]:
        csv = tmp_path / name
        args = ["--checkpoint", kf / f"fold-{folds[0]}" / "best.pt", "--data", root, "--out",
                csv, "--device", "cpu", "--loader", "cv2", "--quiet", *extra]
        assert run_main(infer_main, args, monkeypatch) == 0
        sub = read_submission(csv, spec.classes)
        return {c: [sub.rles[n][i] for n in sub.images] for i, c in enumerate(spec.classes)}

    plain = infer("plain.csv")
    after = infer("tuned.csv", "--thresholds", tuned / "thresholds.json",
                  "--min-sizes", tuned / "min_sizes.json")
    for c, p in zip(spec.classes, PROBS, strict=True):
        assert all((r != "") == (p > 0.5) for r in plain[c])
        assert all(r == "1 4096" for r in after[c])


def test_oof_refuses_a_checkpoint_of_another_class_list(spine, tmp_path):
    from test_tune import make_ckpt

    from hbseg.tune.oof import OofConfig, predict_oof

    root, _, spec = spine
    kf = tmp_path / "kf"
    folds = fake_kfold(root, kf, spec)
    hands = Path(make_ckpt(kf / f"fold-{folds[-1]}" / "best.pt", 0.0))  # the hands' 29 classes
    cfg = OofConfig(kfold_dir=str(kf), out=str(kf / "oof"), device="cpu", loader="cv2",
                    progress=False)
    with pytest.raises(CheckpointError, match=r"predicts 29 classes .* this data set has 6 "
                                              r"\(L1, L2") as e:
        predict_oof(cfg)
    assert e.value.path == hands
    assert not (kf / "oof").exists() or not any((kf / "oof").iterdir())  # checked before any fold


def write_csv(path: Path, folder: Path, spec) -> dict[str, np.ndarray]:
    """A submission of random masks for the PNGs under ``folder``, with the spec's classes."""
    from hbseg.infer.csv_io import write_submission
    from hbseg.infer.rle import encode_masks

    rng = np.random.default_rng(0)
    masks = {p.name: (rng.random((spec.num_classes, 64, 64)) > 0.8).astype(np.uint8)
             for p in sorted(folder.rglob("*.png"))}
    write_submission(path, [(n, encode_masks(m)) for n, m in masks.items()], spec.classes)
    return masks


def test_pseudo_labels_train_on_a_described_data_set(spine, tmp_path):
    from hbseg.train import trainer as trainer_mod
    from hbseg.train.config import TrainConfig

    root, unlabelled, spec = spine
    csv = tmp_path / "sub.csv"
    want = write_csv(csv, unlabelled, spec)
    index = load_cache_index(root / "hbseg-cache")
    fold = int(index["fold"].iloc[0])
    cfg = TrainConfig(data=str(root), out=str(tmp_path / "run"), loader="torch", workers=0,
                      device="cpu", encoder="resnet18", size=64, batch_size=2, epochs=1,
                      fold=fold, progress=False, tensorboard=False, amp="off",
                      pseudo=str(csv), pseudo_data=str(unlabelled), pseudo_weight=1.0)
    seen = {}
    real_make = trainer_mod.make_loader

    def spy(kind, idx, lcfg, mode, device):
        seen[mode] = (idx, lcfg)
        return real_make(kind, idx, lcfg, mode, device)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_mod, "make_loader", spy)
        trainer_mod.train(cfg)
    rows, lcfg = seen["train"]
    pseudo = rows[rows["pseudo"]]
    assert sorted(pseudo["image_name"]) == sorted(want) == ["spine006.png", "spine007.png"]
    assert lcfg.num_classes == 6
    assert int((~rows["pseudo"]).sum()) == int((index["fold"] != fold).sum())
    assert not set(want) & set(seen["eval"][0]["image_name"])  # never validated on
    for r in pseudo.itertuples():  # decoded with the spec's classes, 6 planes each
        assert Path(r.image_path).parent == unlabelled / "G003"
        np.testing.assert_array_equal(unpack_masks(read_packed_png(r.mask_path), 6),
                                      want[r.image_name])
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["images"] == len(rows)


def test_bad_pseudo_inputs_of_a_described_data_set(spine, tmp_path):
    from hbseg.train.pseudo import build_pseudo_cache

    root, unlabelled, spec = spine
    csv = tmp_path / "sub.csv"
    write_csv(csv, unlabelled, spec)
    # a described root as --pseudo-data: its images folder, labels unused
    other = tmp_path / "other"
    (other / "images").mkdir(parents=True)
    shutil.copytree(unlabelled / "G003", other / "images" / "G003")
    shutil.copy(root / "hbseg-dataset.yaml", other / "hbseg-dataset.yaml")
    df = build_pseudo_cache(csv, other, tmp_path / "p1", progress=False, spec=spec)
    assert sorted(df["image_name"]) == ["spine006.png", "spine007.png"]
    # ... whose description must have the training data's classes
    yaml = other / "hbseg-dataset.yaml"
    yaml.write_text(yaml.read_text().replace("- S1", "- sacrum"))
    with pytest.raises(ConfigError, match="--pseudo-data describes 6 classes") as e:
        build_pseudo_cache(csv, other, tmp_path / "p2", progress=False, spec=spec)
    assert e.value.path == yaml and not (tmp_path / "p2").exists()
    # a CSV of the hands' classes is read with the spec's class names: refused
    from hbseg.infer.csv_io import write_submission

    hands_csv = tmp_path / "hands.csv"
    write_submission(hands_csv, [("spine006.png", [""] * 29)])
    with pytest.raises(DataError, match="line 2: .*class"):
        build_pseudo_cache(hands_csv, unlabelled, tmp_path / "p3", progress=False, spec=spec)
    # an image the folder does not hold
    csv.write_text(csv.read_text().replace("spine007.png", "spine099.png"))
    with pytest.raises(DataError, match=r"image 'spine099.png' is not in .*unlabelled"):
        build_pseudo_cache(csv, unlabelled, tmp_path / "p4", progress=False, spec=spec)
    assert not (tmp_path / "p3").exists() and not (tmp_path / "p4").exists()


def test_pseudo_images_among_the_validation_fold_are_refused(spine, tmp_path):
    """Pseudo-labelling a labelled image of the validation fold would leak its label."""
    from hbseg.train.config import TrainConfig
    from hbseg.train.pseudo import add_pseudo_labels
    from hbseg.train.trainer import split_folds

    root, _, spec = spine
    csv = tmp_path / "sub.csv"
    write_csv(csv, root / "images", spec)  # every labelled image
    index = load_cache_index(root / "hbseg-cache")
    fold = int(index["fold"].iloc[0])
    train, val = split_folds(index, fold)
    cfg = TrainConfig(data=str(root), out=str(tmp_path / "run"), fold=fold, progress=False,
                      pseudo=str(csv), pseudo_data=str(root / "images"))
    with pytest.raises(ConfigError, match="validation images: their labels would leak") as e:
        add_pseudo_labels(cfg, train, labelled=index)
    assert sorted(val["image_name"])[0] in str(e.value)
    with pytest.raises(ConfigError, match="labelled training images"):
        add_pseudo_labels(cfg, train)
