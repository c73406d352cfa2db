"""Bad inputs, round 3 (issue 30, classes 2-4): runs that share a folder, what must be
refused rather than accepted in silence, and inputs that used to hang or dump a stack.

Every case runs a real entry point (in-process through ``run_main``, or as a subprocess
where a second process or a possible hang is the point) and checks the exit code, one
``error: <file>: <problem>`` line naming the file, no traceback and nothing written.
Nothing here trains: run folders are made by ``save_checkpoint``/``save_config``, and
every refusal comes before the first batch. docs/errors.md lists the cases.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_main

from hbseg.data import build_cache

BIN = Path(sys.executable).parent
ENV = {**os.environ, "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""}
TRAIN = ["--device", "cpu", "--encoder", "resnet18", "--size", "64", "--batch-size", "4",
         "--epochs", "1", "--loader", "torch", "--workers", "0", "--no-progress",
         "--no-tensorboard"]


@pytest.fixture
def root(tiny_root, tmp_path) -> Path:
    """A private copy of the tiny data set, its cache included."""
    r = tmp_path / "data"
    for sub in ("train", "test", "hbseg-cache"):
        shutil.copytree(tiny_root / sub, r / sub, symlinks=True)
    return r


def _one_error(code: int, err: str, path: Path, needle: str, exit_code: int = 1) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.lower().startswith("error:")]
    assert code == exit_code, err
    assert "Traceback" not in err and "a bug in hbseg" not in err, err
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert errors[0].split(": ", 1)[1].startswith(f"{path}: "), errors[0]
    assert needle in errors[0], errors[0]
    return errors[0]


def _run(entry: str, args, monkeypatch, capsys) -> tuple[int, str]:
    module, name = {"train": ("hbseg.train.cli", "main"), "data": ("hbseg.data.cli", "main"),
                    "eval": ("hbseg.report.cli", "eval_main"),
                    "infer": ("hbseg.infer.cli", "infer_main"),
                    "ensemble": ("hbseg.infer.cli", "ensemble_main"),
                    "tune": ("hbseg.tune.cli", "main"), "bench": ("hbseg.benchmarks.cli", "main")}[entry]
    import importlib

    code = run_main(getattr(importlib.import_module(module), name), args, monkeypatch)
    return code, capsys.readouterr().err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _fake_run(run: Path, data_root: Path, epoch: int = 1, classes: int = 29, save_yaml: bool = True,
              **changes):
    """A run folder as hbseg-train leaves it after ``epoch`` epochs (untrained weights):
    config.yaml and a resumable last.pt of the same config, unless ``changes`` say otherwise."""
    from hbseg.data.classes import CLASSES
    from hbseg.models import ModelCard, create_model, save_checkpoint
    from hbseg.train.config import TrainConfig, save_config

    base = dict(out=str(run), data=str(data_root), device="cpu", encoder="resnet18", size=64,
                epochs=2, loader="torch", workers=0, progress=False, tensorboard=False)
    cfg = TrainConfig(**base)
    run.mkdir(parents=True, exist_ok=True)
    if save_yaml:
        save_config(cfg, run / "config.yaml")
    ckpt_cfg = cfg.replace(**changes)
    names = CLASSES if classes == 29 else tuple(f"c{i}" for i in range(classes))
    save_checkpoint(run / "last.pt", create_model("unet", "resnet18", 1, classes),
                    ModelCard("unet", "resnet18", classes=classes, class_names=names, size=64),
                    epoch=epoch, optimizer={}, config=ckpt_cfg.to_dict())
    return cfg


# -- 2. one writer per folder -------------------------------------------------------------
HOLD = textwrap.dedent("""
    import sys, time
    from hbseg.locks import folder_lock
    with folder_lock(sys.argv[1], "run folder"):
        print("held", flush=True)
        time.sleep(120)
""")


def _holder(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s lock, as a training run does."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                            text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("how", ["overwrite", "resume"])
def test_a_second_writer_of_a_run_folder_is_refused(how, root, tmp_path):
    """Two processes: one writing RUN (holding its lock), then hbseg-train --overwrite or
    --resume on the same RUN is refused with the holder's pid, and RUN is left as it was."""
    run = tmp_path / "run"
    _fake_run(run, root)
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    before = _snapshot(run)
    holder = _holder(run)
    try:
        argv = (["--data", str(root), "--out", str(run), "--overwrite", *TRAIN] if how == "overwrite"
                else ["--resume", str(run), "--no-progress"])
        proc = subprocess.run([str(BIN / "hbseg-train"), *argv], capture_output=True, text=True,
                              env=ENV, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    _one_error(proc.returncode, proc.stderr, run,
               f"another process (pid {holder.pid}) is writing this run folder")
    assert _snapshot(run) == before


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    from hbseg.locks import FolderBusyError, folder_lock, lock_path

    run = tmp_path / "run"
    holder = _holder(run)
    with pytest.raises(FolderBusyError, match=f"pid {holder.pid}"):
        with folder_lock(run, "run folder"):
            pass
    holder.send_signal(signal.SIGKILL)  # no cleanup runs; the kernel drops the flock
    holder.wait()
    with folder_lock(run, "run folder"):
        assert lock_path(run).read_text().split()[0] == str(os.getpid())
    assert not lock_path(run).exists()  # removed on release


def test_tune_and_oof_folders_are_locked_too(tmp_path):
    from hbseg.locks import FolderBusyError, folder_lock
    from hbseg.tune.config import TuneConfig
    from hbseg.tune.oof import OofConfig, predict_oof
    from hbseg.tune.tuner import run_tune

    out = tmp_path / "out"
    with folder_lock(out, "run folder"):
        with pytest.raises(FolderBusyError, match="is writing this tuning folder"):
            run_tune(TuneConfig(oof=(str(tmp_path / "oof"),), out=str(out)))
        with pytest.raises(FolderBusyError, match="is writing this OOF folder"):
            predict_oof(OofConfig(kfold_dir=str(tmp_path / "kf"), out=str(out)))


# -- 3. accepted what must be refused ------------------------------------------------------
def test_last_pt_of_another_run_is_refused_on_resume(root, tmp_path, monkeypatch, capsys):
    """A 6-class last.pt of another data set, copied into a 29-class run."""
    run = tmp_path / "run"
    _fake_run(run, root, classes=6, data=str(tmp_path / "spine"), arch="unet")
    before = _snapshot(run)
    code, err = _run("train", ["--resume", run, "--no-progress"], monkeypatch, capsys)
    _one_error(code, err, run / "last.pt", "does not belong to this run folder (data: ")
    assert _snapshot(run) == before  # config.yaml is not rewritten


def test_last_pt_predicting_other_classes_is_refused_without_config_yaml(root, tmp_path,
                                                                         monkeypatch, capsys):
    run = tmp_path / "run"
    _fake_run(run, root, classes=6, save_yaml=False)
    code, err = _run("train", ["--resume", run, "--no-progress"], monkeypatch, capsys)
    _one_error(code, err, run / "last.pt", "its model predicts 6 classes (c0, c1, c2, ...) but "
                                            "the run's data has 29")
    assert sorted(p.name for p in run.iterdir()) == ["last.pt"]


@pytest.mark.parametrize("args, needle", [
    (["--epochs", "1"], "--epochs 1 is fewer than the 2 epochs this run has done"),
    (["--stop-after", "2", "--epochs", "3"], "--stop-after 2: this run has already done 2 epochs"),
])
def test_resume_never_undoes_finished_epochs(args, needle, root, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _fake_run(run, root, epoch=2)
    before = _snapshot(run)
    code, err = _run("train", ["--resume", run, "--no-progress", *args], monkeypatch, capsys)
    _one_error(code, err, run, needle, exit_code=2)
    assert _snapshot(run) == before


def _small_copy(root: Path, tmp_path: Path) -> Path:
    """The data set with 2 of its 4 patients, its own cache built."""
    small = tmp_path / "small"
    for sub in ("DCM", "outputs_json"):
        for pid in sorted(p.name for p in (root / "train" / sub).iterdir())[:2]:
            shutil.copytree(root / "train" / sub / pid, small / "train" / sub / pid)
    build_cache(small, workers=1, progress=False)
    return small


def test_cache_of_another_data_root_is_refused(root, tmp_path, monkeypatch, capsys):
    small = _small_copy(root, tmp_path)
    cache = small / "hbseg-cache"
    before = _snapshot(cache)
    code, err = _run("train", ["--data", root, "--cache", cache, "--out", tmp_path / "run", *TRAIN],
                     monkeypatch, capsys)
    _one_error(code, err, cache, f"this mask cache was built from the data in {small.resolve()}, "
                                 f"not {root.resolve()}")
    assert not (tmp_path / "run").exists() and _snapshot(cache) == before
    # hbseg-data cache refuses it as well, and rebuilds it with --force, saying so
    code, err = _run("data", ["cache", root, "--out", cache, "--workers", 1], monkeypatch, capsys)
    _one_error(code, err, cache, "this mask cache was built from the data in")
    code, err = _run("data", ["cache", root, "--out", cache, "--workers", 1, "--force"],
                     monkeypatch, capsys)
    assert code == 0 and f"rebuilding the mask cache {cache} from {root.resolve()}" in err, err


CONFIG_CASES = {
    "hflip_p": ("augment: {hflip_p: 7, rotate_limit: -400, scale_limit: 5}",
                "augment.hflip_p must be in [0, 1]"),
    "rotate_limit": ("augment: {rotate_limit: -400}", "augment.rotate_limit must be in [0, 180]"),
    "scale_limit": ("augment: {scale_limit: 5}", "augment.scale_limit must be in [0, 0.99]"),
    "tile_grid_zero": ("augment: {clahe_tile_grid: [0, 0]}", "augment.clahe_tile_grid must be"),
    "clip_limit": ("augment: {clahe_clip_limit: 0}", "augment.clahe_clip_limit must be"),
    "std_zero": ("normalize: {std: 0}", "normalize.std must be positive"),
    "lr_nan": ("lr: .nan", "lr is nan; expected a positive finite number"),
    "epochs_zero": ("epochs: 0", "epochs is 0; expected an integer of at least 1"),
    "size_small": ("size: 8", "size is 8; expected an integer of at least 16"),
    "seed_negative": ("seed: -3", "seed is -3; expected an integer from 0"),
    "min_lr_ratio": ("min_lr_ratio: 2", "min_lr_ratio is 2; expected a number from 0 to 1"),
    "grad_clip": ("grad_clip: -1", "grad_clip is -1; expected null or a finite number"),
    "loader": ("loader: fast", "loader is 'fast'; expected one of dali, dali-cache, torch"),
    "loss": ("loss: dice:-1", "loss: "),
    "arch": ("arch: unett", "arch is 'unett'; expected one of"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_settings_out_of_range_name_the_file_and_key(case, root, tmp_path, monkeypatch,
                                                            capsys):
    text, needle = CONFIG_CASES[case]
    f = tmp_path / "s.yaml"
    f.write_text(text + "\n")
    code, err = _run("train", ["--config", f, "--data", root, "--out", tmp_path / "run", *TRAIN],
                     monkeypatch, capsys)
    _one_error(code, err, f, needle, exit_code=2)
    assert not (tmp_path / "run").exists()


def _rgba(p: Path) -> None:
    g = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(p), np.dstack([g, g, g, np.full_like(g, 255)]))


def _twelve_in_sixteen(p: Path) -> None:
    g = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 16  # 12 bits in 16
    g[0, 0] = 4095
    cv2.imwrite(str(p), g)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from hbseg.models import ModelCard, create_model, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "unet.pt"
    save_checkpoint(path, create_model("unet", "resnet18"), ModelCard("unet", "resnet18", size=64))
    return path


@pytest.mark.parametrize("loader", ["auto", "cv2"])
@pytest.mark.parametrize("kind, needle", [
    ("rgba", "RGBA PNG with an alpha channel; expected 8-bit grey"),
    ("sixteen", "16-bit grey PNG; expected 8-bit grey (its largest value is 4095, so 12 of its "
                "16 bits are used"),
])
def test_inference_refuses_what_training_refuses(kind, needle, loader, root, tmp_path, checkpoint,
                                                 monkeypatch, capsys):
    """One reader rule: DALI decodes anything, so its loader is checked by the same rule."""
    p = sorted((root / "test" / "DCM").glob("*/*.png"))[0]
    (_rgba if kind == "rgba" else _twelve_in_sixteen)(p)
    out = tmp_path / "sub.csv"
    code, err = _run("infer", ["--checkpoint", checkpoint, "--data", root / "test", "--out", out,
                               "--device", "cpu", "--quiet", "--loader", loader],
                     monkeypatch, capsys)
    _one_error(code, err, p, needle)
    assert not out.exists()


def _csv(root: Path, rle: str) -> str:
    from hbseg.data import CLASSES

    names = sorted(p.name for p in (root / "train" / "DCM").glob("*/*.png"))
    return "image_name,class,rle\n" + "".join(
        f"{n},{c},{rle if c == 'Radius' and n == names[0] else ''}\n" for n in names for c in CLASSES)


@pytest.mark.parametrize("rle, needle", [
    ("5 2 1 2", "RLE run 2 (1 2) comes before run 1 (5 2); runs must be sorted by start"),
    ("1 3 2 3", "RLE run 2 (2 3) overlaps run 1 (1 3)"),
    ("1 2 1 2", "RLE run 2 (1 2) overlaps run 1 (1 2)"),
    ("0 2", "starts at 0"),
    ("3 -1", "has length -1"),
])
def test_eval_refuses_runs_kaggle_refuses(rle, needle, root, tmp_path, monkeypatch, capsys):
    pred = tmp_path / "pred.csv"
    pred.write_text(_csv(root, rle))
    out = tmp_path / "r.json"
    code, err = _run("eval", ["--pred", pred, "--data", root / "train", "--out", out, "--quiet",
                              "--workers", 1], monkeypatch, capsys)
    line = _one_error(code, err, pred, needle)
    assert ", Radius): RLE" in line and not out.exists()


def test_adjacent_runs_are_accepted(root, tmp_path, monkeypatch, capsys):
    pred = tmp_path / "pred.csv"
    pred.write_text(_csv(root, "1 2 3 2"))
    code, err = _run("eval", ["--pred", pred, "--data", root / "train", "--out", tmp_path / "r.json",
                              "--quiet", "--workers", 1], monkeypatch, capsys)
    assert code == 0, err


def _probs_folder(folder: Path, arr: np.ndarray) -> Path:
    folder.mkdir()
    np.save(folder / "a.npy", arr)
    (folder / "index.json").write_text(json.dumps({
        "class_names": ["x", "y"], "images": {"a.png": {"file": "a.npy", "height": 4, "width": 4}}}))
    return folder


@pytest.mark.parametrize("value, needle", [
    (np.nan, "holds 1 non-finite values (nan first, class plane 1 at row 2, column 3)"),
    (np.inf, "non-finite values (inf first"),
    (1.5, "holds values from 0.25 to 1.5; expected [0, 1]"),
    (-0.5, "holds values from -0.5 to 0.25; expected [0, 1]"),
])
def test_ensemble_refuses_probabilities_outside_0_1(value, needle, tmp_path, monkeypatch, capsys):
    good = np.full((2, 4, 4), 0.25, np.float16)
    bad = good.copy()
    bad[1, 2, 3] = value
    a = _probs_folder(tmp_path / "a", good)
    b = _probs_folder(tmp_path / "b", bad)
    out = tmp_path / "vote.csv"
    code, err = _run("ensemble", ["--probs", a, "--probs", b, "--out", out, "--quiet"],
                     monkeypatch, capsys)
    _one_error(code, err, b / "a.npy", needle)
    assert not out.exists()


def _oof_on_cache(folder: Path, root: Path) -> Path:
    """An OOF folder as hbseg-kfold oof writes it, its truth in ROOT's mask cache."""
    from hbseg.data import load_cache_index
    from hbseg.data.classes import CLASSES
    from hbseg.tune.oof import LEVELS, OOF_INDEX, OOF_META, _fingerprints

    index = load_cache_index(root / "hbseg-cache").iloc[:4].copy()
    index["fold"] = [0, 0, 1, 1]
    index["file"] = [f"{i}/{Path(n).stem}.npy" for i, n in zip(index["id"], index["image_name"],
                                                                 strict=True)]
    for f, h, w in zip(index["file"], index["height"], index["width"], strict=True):
        (folder / f).parent.mkdir(parents=True, exist_ok=True)
        np.save(folder / f, np.full((len(CLASSES), h, w), 100, np.uint8))
    index[["image_name", "id", "fold", "height", "width", "file", "mask_path"]].to_csv(
        folder / OOF_INDEX, index=False)
    (folder / OOF_META).write_text(json.dumps({
        "class_names": list(CLASSES), "dtype": "uint8", "levels": LEVELS,
        "labels_fingerprint": _fingerprints(index)}))
    return folder


def test_tune_refuses_labels_changed_after_the_cache(root, tmp_path, monkeypatch, capsys):
    build_cache(root, workers=1, progress=False, force=True)  # a cache with its fingerprint
    oof = _oof_on_cache(tmp_path / "oof", root)
    j = sorted((root / "train" / "outputs_json").glob("*/*.json"))[0]
    doc = json.loads(j.read_text())
    doc["annotations"] = doc["annotations"][1:]
    j.write_text(json.dumps(doc))
    args = [oof, "--out", tmp_path / "t", "--no-min-sizes", "--thresholds", "0.5", "--quiet"]
    code, err = _run("tune", args, monkeypatch, capsys)
    _one_error(code, err, oof, f"is out of date ({j} changed after the cache was built); update the cache")
    assert not (tmp_path / "t" / "thresholds.json").exists()
    # updated, the cache is the truth again; tuning says the labels changed since the OOF run
    build_cache(root, workers=1, progress=False)
    code, err = _run("tune", args, monkeypatch, capsys)
    assert code == 0, err
    assert "note: the labels changed after" in err


def test_an_exclude_entry_matching_nothing_is_a_warning(root, tmp_path, monkeypatch, capsys):
    ex = tmp_path / "exclude.txt"
    ex.write_text("ID000\nID0001\n")  # the second is a typo
    code, err = _run("data", ["cache", root, "--exclude", ex, "--workers", 1], monkeypatch, capsys)
    assert code == 0, err
    assert err.strip().splitlines() == [
        f"warning: {root / 'train' / 'DCM'}: exclude list entry 'ID0001' matches no patient folder "
        "or image name; nothing was excluded for it"]


# -- 4. hangs and the bug path -----------------------------------------------------------
def _fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("what", ["png", "json"])
def test_a_fifo_with_a_data_name_is_refused_not_waited_on(what, root):
    sub, pattern = ("DCM", "*/*.png") if what == "png" else ("outputs_json", "*/*.json")
    fifo = _fifo(sorted((root / "train" / sub).glob(pattern))[0])
    shutil.rmtree(root / "hbseg-cache")
    for cmd in ("cache", "check"):
        proc = subprocess.run([str(BIN / "hbseg-data"), cmd, str(root)], capture_output=True,
                              text=True, env=ENV, timeout=120)
        _one_error(proc.returncode, proc.stderr, fifo, "a FIFO (named pipe), not a regular file")
    assert not (root / "hbseg-cache").exists()


def test_fifos_given_to_other_readers_are_refused(root, tmp_path, checkpoint):
    cases = []
    csv = _fifo(tmp_path / "pred.csv")
    cases.append(([str(BIN / "hbseg-eval"), "--pred", str(csv), "--data", str(root / "train"),
                   "--out", str(tmp_path / "r.json"), "--quiet"], csv, 1))
    cfg = _fifo(tmp_path / "s.yaml")
    cases.append(([str(BIN / "hbseg-train"), "--config", str(cfg), "--data", str(root), "--out",
                   str(tmp_path / "run"), "--device", "cpu"], cfg, 2))
    a = _probs_folder(tmp_path / "a", np.zeros((2, 4, 4), np.float16))
    b = _probs_folder(tmp_path / "b", np.zeros((2, 4, 4), np.float16))
    _fifo(b / "a.npy")
    cases.append(([str(BIN / "hbseg-ensemble"), "--probs", str(a), "--probs", str(b), "--out",
                   str(tmp_path / "v.csv"), "--quiet"], b / "a.npy", 1))
    res = _fifo(tmp_path / "results.json")
    cases.append(([str(BIN / "hbseg-bench"), "report", str(res), "--out", str(tmp_path / "rep")],
                  res, 1))
    for argv, path, code in cases:
        proc = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=120)
        _one_error(proc.returncode, proc.stderr, path, "a FIFO (named pipe), not a regular file",
                   exit_code=code)


@pytest.mark.parametrize("doc, needle", [
    ([1, 2], "the file is a list; expected an object"),
    ({"schema": "hbseg.bench.loaders/1"}, '"runs" is null; expected a list of runs'),
    ({"schema": "hbseg.bench.loaders/1", "runs": [3]}, "run 0 is a number; expected an object"),
    ({"schema": "hbseg.bench.loaders/1", "runs": [{"loader": "torch", "train_epoch_s": "1"}]},
     "run 0's \"train_epoch_s\" is a string; expected a number or null"),
    ({"schema": "hbseg.bench.loaders/1", "config": [], "runs": []}, '"config" is a list'),
    ({"schema": "other"}, "not an hbseg-bench loaders result (schema 'other'"),
])
def test_bench_report_on_json_of_another_shape(doc, needle, tmp_path, monkeypatch, capsys):
    f = tmp_path / "results.json"
    f.write_text(json.dumps(doc))
    code, err = _run("bench", ["report", f, "--out", tmp_path / "rep"], monkeypatch, capsys)
    _one_error(code, err, f, needle)
    assert not (tmp_path / "rep").exists()
