"""Command-line values (issue 18): out-of-range, non-finite, and an --out that is one of
the inputs are usage errors naming the option; nothing is written."""

from __future__ import annotations

import shutil

import pytest
from conftest import run_main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from hbseg.models import ModelCard, create_model, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "unet.pt"
    save_checkpoint(path, create_model("unet", "resnet18"), ModelCard("unet", "resnet18", size=64))
    return path


def _infer(ckpt, tiny_root, out, *extra):
    return ["--checkpoint", ckpt, "--data", tiny_root / "test", "--out", out, "--device", "cpu",
            "--quiet", *extra]


def _usage(code: int, err: str, option: str, needle: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert f"'{option}'" in err and needle in err, err


@pytest.mark.parametrize("extra,option,needle", [
    (["--scales", "inf"], "--scales", "positive finite numbers"),
    (["--scales", "0"], "--scales", "positive finite numbers"),
    (["--sigma", "nan"], "--sigma", "not a finite number"),
    (["--stride", "0", "--window", "64"], "--stride", "0 is not in the range"),
    (["--threshold", "1.5"], "--threshold", "not in the range"),
    (["--batch-size", "0"], "--batch-size", "not in the range"),
])
def test_infer_values(extra, option, needle, ckpt, tiny_root, tmp_path, monkeypatch, capsys):
    from hbseg.infer.cli import infer_main

    out = tmp_path / "sub.csv"
    code = run_main(infer_main, _infer(ckpt, tiny_root, out, *extra), monkeypatch)
    _usage(code, capsys.readouterr().err, option, needle)
    assert not out.exists()


def test_infer_out_equal_to_checkpoint_is_refused(ckpt, tiny_root, tmp_path, monkeypatch, capsys):
    from hbseg.infer.cli import infer_main

    copy = tmp_path / "model.pt"
    shutil.copy(ckpt, copy)
    before = copy.read_bytes()
    code = run_main(infer_main, _infer(copy, tiny_root, copy), monkeypatch)
    _usage(code, capsys.readouterr().err, "--out", "is also an input")
    assert copy.read_bytes() == before


def test_infer_window_larger_than_the_image(ckpt, tiny_root, tmp_path, monkeypatch, capsys):
    from hbseg.infer.cli import infer_main

    out = tmp_path / "sub.csv"
    code = run_main(infer_main, _infer(ckpt, tiny_root, out, "--window", "4096"), monkeypatch)
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: --window 4096 is larger than image ") and err.count("\n") == 1
    assert "use --window 256 or less" in err and not out.exists()


def test_eval_and_ensemble_out_equal_to_an_input(tiny_root, tmp_path, monkeypatch, capsys):
    from hbseg.infer.cli import ensemble_main
    from hbseg.report.cli import eval_main

    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("image_name,class,rle\n")
    b.write_text("image_name,class,rle\n")
    code = run_main(eval_main, ["--pred", a, "--data", tiny_root, "--out", a, "--quiet"], monkeypatch)
    _usage(code, capsys.readouterr().err, "--out", "is also an input")
    code = run_main(ensemble_main, [a, b, "--out", tmp_path / "." / "b.csv", "--quiet"], monkeypatch)
    _usage(code, capsys.readouterr().err, "--out", "is also an input")
    assert a.read_text() == b.read_text() == "image_name,class,rle\n"


@pytest.mark.parametrize("extra,option,needle", [
    (["--lr", "nan"], "--lr", "not a finite number"),
    (["--lr", "-0.1"], "--lr", "not in the range"),
    (["--weight-decay", "inf"], "--weight-decay", "not a finite number"),
    (["--warmup-epochs", "inf"], "--warmup-epochs", "not a finite number"),
    (["--epochs", "0"], "--epochs", "not in the range"),
    (["--batch-size", "0"], "--batch-size", "not in the range"),
])
def test_train_values(extra, option, needle, tiny_root, tmp_path, monkeypatch, capsys):
    from hbseg.train.cli import main

    out = tmp_path / "run"
    code = run_main(main, ["--data", tiny_root, "--out", out, "--device", "cpu", *extra], monkeypatch)
    _usage(code, capsys.readouterr().err, option, needle)
    assert not out.exists()


def test_train_fold_that_does_not_exist(tiny_root, tmp_path, monkeypatch, capsys):
    from hbseg.train.cli import main

    code = run_main(main, ["--data", tiny_root, "--out", tmp_path / "run", "--device", "cpu",
                           "--loader", "torch", "--fold", "7", "--encoder", "resnet18"], monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and "--fold 7 has no images in this data set; folds present:" in err


def test_resume_refuses_a_model_only_checkpoint(ckpt, tmp_path, monkeypatch, capsys):
    """A best.pt (or exported model) copied as last.pt: an error, never a fresh start."""
    from hbseg.train.cli import main

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ckpt, run / "last.pt")
    code = run_main(main, ["--resume", run], monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and "not a resumable checkpoint" in err and "Traceback" not in err
    (run / "last.pt").write_bytes((run / "last.pt").read_bytes()[:5000])  # truncated
    code = run_main(main, ["--resume", run], monkeypatch)
    err = capsys.readouterr().err
    assert code == 1 and f"error: {run / 'last.pt'}: unreadable or truncated checkpoint" in err


@pytest.mark.slow
def test_resume_of_a_copied_run_writes_into_the_copy(tiny_root, tmp_path, monkeypatch, capsys):
    from hbseg.models import read_checkpoint
    from hbseg.train.cli import main

    a, b = tmp_path / "a", tmp_path / "b"
    args = ["--data", tiny_root, "--out", a, "--loader", "torch", "--workers", 0, "--device", "cpu",
            "--encoder", "resnet18", "--size", 64, "--batch-size", 4, "--epochs", 2, "--stop-after", 1,
            "--no-progress", "--no-tensorboard"]
    assert run_main(main, args, monkeypatch) == 0
    shutil.copytree(a, b)
    assert run_main(main, ["--resume", b], monkeypatch) == 0, capsys.readouterr().err
    assert read_checkpoint(b / "last.pt")["epoch"] == 2
    assert read_checkpoint(a / "last.pt")["epoch"] == 1  # the original run is untouched


@pytest.mark.parametrize("entry", ["infer_main", "eval_main", "ensemble_main"])
def test_out_inside_a_missing_folder_is_a_usage_error_naming_the_option(entry, tmp_path,
                                                                         monkeypatch, capsys):
    import importlib

    module = "hbseg.report.cli" if entry == "eval_main" else "hbseg.infer.cli"
    missing = tmp_path / "no-such-folder" / "out.csv"
    args = {"infer_main": ["--checkpoint", tmp_path / "m.pt", "--data", tmp_path, "--out", missing],
            "eval_main": ["--pred", tmp_path / "p.csv", "--data", tmp_path, "--out", missing],
            "ensemble_main": [tmp_path / "a.csv", tmp_path / "b.csv", "--out", missing]}[entry]
    for name in ("m.pt", "p.csv", "a.csv", "b.csv"):
        (tmp_path / name).write_text("x")
    code = run_main(getattr(importlib.import_module(module), entry), args, monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and "'--out'" in err and "does not exist" in err
    assert not missing.parent.exists()
