"""Bad inputs, round 4 (issue 30, sections 5 and 6): every error names its file (and the
line or key), and no command leaves anything behind, whatever stops it.

Section 5: JSON nested 100 000 deep or holding a 5 001-digit integer, file names that are
not UTF-8, a UTF-16 exclude list, a full file size limit, a CSV with a byte-order mark,
``hbseg-data synth`` into a used folder, usage errors in one line. Section 6: SIGTERM,
the pseudo-label cache from another working folder, a run that failed before its first
epoch, ``hbseg-kfold`` resume and summary, ``hbseg-tune`` keeping the better settings, the
torch loader's Ctrl-C note, the encoder names in ``hbseg-train --help``.
docs/errors.md lists them (round 4).
"""

from __future__ import annotations

import codecs
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_main
from test_bad_inputs_2 import _assert_one_error, _json, _png
from test_bad_inputs_2 import root as root  # noqa: F401 - the fixture: a copy of tiny data
from test_interrupt_2 import _env, _interrupt_when

from hbseg.data import load_cache_index
from hbseg.data.classes import CLASSES
from hbseg.data.cli import main as data_main

BIN = Path(sys.executable).parent
TINY = ["--loader", "torch", "--device", "cpu", "--encoder", "resnet18", "--size", "64",
        "--batch-size", "4", "--workers", "0", "--no-progress", "--no-tensorboard", "--epochs", "1"]
ODD = os.fsdecode(b"r\xe9sum\xe9")  # a Latin-1 name: not UTF-8, surrogates in Python


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from hbseg.models import ModelCard, create_model, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "unet.pt"
    save_checkpoint(path, create_model("unet", "resnet18"), ModelCard("unet", "resnet18", size=64))
    return path


def _lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.strip()]


def _usage_line(code: int, err: str, needle: str) -> None:
    """A usage error: exit 2 and one line, ``Error: <problem>``, like every command's."""
    assert code == 2, err
    assert len(_lines(err)) == 1 and _lines(err)[0].startswith(needle), err


def _csv(root: Path, split: str = "train", rle=lambda name, c: "") -> str:
    names = sorted(p.name for p in (root / split / "DCM").glob("*/*.png"))
    rows = [f"{n},{c},{rle(n, c)}" for n in names for c in CLASSES]
    return "image_name,class,rle\n" + "\n".join(rows) + "\n"


# -- 5: JSON past Python's parser limits ------------------------------------------------
def _nested(text: str) -> str:
    doc = json.dumps(json.loads(text))  # "annotations": [ ... ], spaced as json.dumps does
    return doc.replace('"annotations": [', '"annotations": [' + "[" * 100_000 + "]" * 100_000 + ", ", 1)


def _long_int(text: str) -> str:
    doc = json.loads(text)
    x = doc["annotations"][0]["points"][0][0]
    return json.dumps(doc).replace(f"[{x}, ", f"[{'7' * 5001}, ", 1)


@pytest.mark.parametrize("case,edit,needle", [
    ("nested", _nested, "invalid JSON: nested 100002 levels deep (at line 1 column 100017)"),
    ("long_int", _long_int, "invalid JSON: an integer of 5001 digits at line 1 column"),
])
def test_json_past_parser_limits_names_file_and_place(case, edit, needle, root, monkeypatch, capsys):
    j = _json(root)
    j.write_text(edit(j.read_text()))
    for cmd in ("check", "cache"):
        code = run_main(data_main, [cmd, root, *(["--workers", 1] if cmd == "cache" else [])], monkeypatch)
        _assert_one_error(code, capsys.readouterr().err, j, needle)
    assert not (root / "hbseg-cache").exists()


@pytest.mark.parametrize("text,needle", [
    ('{"Radius": ' + "[" * 100_000 + "]" * 100_000 + "}", "invalid JSON: nested 100001 levels deep"),
    ('{"Radius": ' + "9" * 5001 + "}", "invalid JSON: an integer of 5001 digits at line 1 column 12"),
])
def test_settings_json_past_parser_limits(text, needle, checkpoint, root, tmp_path, monkeypatch, capsys):
    """The same reader serves every settings file: --thresholds here."""
    from hbseg.infer.cli import infer_main

    thr = tmp_path / "thr.json"
    thr.write_text(text)
    out = tmp_path / "sub.csv"
    code = run_main(infer_main, ["--checkpoint", checkpoint, "--data", root / "test", "--out", out,
                                 "--device", "cpu", "--quiet", "--thresholds", thr], monkeypatch)
    _assert_one_error(code, capsys.readouterr().err, thr, needle)
    assert not out.exists()


def test_yaml_settings_nested_too_deep(tmp_path):
    from hbseg.errors import ConfigError
    from hbseg.train.config import read_train_settings

    cfg = tmp_path / "s.yaml"
    cfg.write_text("augment: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"s.yaml: invalid YAML: nested 5000 levels deep \(at line 1"):
        read_train_settings(cfg)


# -- 5: file names that are not UTF-8 ---------------------------------------------------
def _rename_odd(root: Path) -> tuple[Path, Path]:
    """The first train image (and its JSON) and the first test image renamed r\\xe9sum\\xe9."""
    png, j = _png(root), _json(root)
    png.rename(png.with_name(f"{ODD}.png"))
    j.rename(j.with_name(f"{ODD}.json"))
    test = sorted((root / "test" / "DCM").glob("*/*.png"))[0]
    test.rename(test.with_name(f"{ODD}.png"))
    return png.with_name(f"{ODD}.png"), test.with_name(f"{ODD}.png")


def test_names_not_utf8_are_read_cached_predicted_and_scored(root, checkpoint, tmp_path, monkeypatch,
                                                             capsys):
    """Such a name keeps its bytes everywhere: in the cache index, in the submission CSV
    (the same bytes as on disk), and back in hbseg-eval."""
    from hbseg.infer.cli import infer_main
    from hbseg.report.cli import eval_main

    train_png, test_png = _rename_odd(root)
    for args in (["check", root], ["cache", root, "--workers", 1]):
        assert run_main(data_main, args, monkeypatch) == 0, capsys.readouterr().err
    index = load_cache_index(root / "hbseg-cache")
    assert f"{ODD}.png" in set(index["image_name"]) and len(index) == 8
    assert Path(index[index["image_name"] == f"{ODD}.png"]["mask_path"].iloc[0]).is_file()

    sub = tmp_path / "sub.csv"
    code = run_main(infer_main, ["--checkpoint", checkpoint, "--data", root / "test", "--out", sub,
                                 "--device", "cpu", "--quiet", "--overlays", tmp_path / "ov"], monkeypatch)
    assert code == 0, capsys.readouterr().err
    assert b"\nr\xe9sum\xe9.png,finger-1," in sub.read_bytes()  # the name's own bytes
    assert (tmp_path / "ov" / f"{ODD}.png").is_file()

    pred = tmp_path / "pred.csv"  # the train split's rows, one of them under the odd name
    pred.write_bytes(_csv(root).encode("utf-8", "surrogateescape"))
    code = run_main(eval_main, ["--pred", pred, "--data", root / "train", "--out", tmp_path / "r.json",
                                "--quiet", "--workers", 1], monkeypatch)
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text())["images"] == 8


def test_names_not_utf8_with_loader_dali_is_a_clear_error(root, checkpoint, tmp_path, monkeypatch,
                                                          capsys):
    from hbseg.infer.cli import infer_main
    from hbseg.infer.preprocess import dali_available

    if not dali_available():
        pytest.skip("DALI is not installed")
    _, test_png = _rename_odd(root)
    out = tmp_path / "sub.csv"
    code = run_main(infer_main, ["--checkpoint", checkpoint, "--data", root / "test", "--out", out,
                                 "--device", "cpu", "--quiet", "--loader", "dali"], monkeypatch)
    err = capsys.readouterr().err
    assert code == 1 and _lines(err) == [
        f"error: --loader dali: DALI opens only UTF-8 file names, and r\\xe9sum\\xe9.png in "
        f"{test_png.parent} is not one; use --loader cv2"], err
    assert not out.exists()


# -- 5: text in other encodings ------------------------------------------------------------
def test_exclude_list_in_utf16_is_read_or_named(root, tmp_path, monkeypatch, capsys):
    """Windows' "Unicode" (UTF-16 with its mark) is decoded; without the mark, or in Latin-1,
    the list is refused by name; nothing is cached."""
    ex = tmp_path / "exclude.txt"
    for data, needle in [("ID000\n".encode("utf-16-le"), "exclude list holds NUL characters (line 1)"),
                         (b"ID\xe9\n", "cannot read exclude list: not UTF-8 text (byte 0xe9 at offset 2)")]:
        ex.write_bytes(data)
        code = run_main(data_main, ["cache", root, "--workers", 1, "--exclude", ex], monkeypatch)
        _assert_one_error(code, capsys.readouterr().err, ex, needle)
        assert not (root / "hbseg-cache").exists()
    ex.write_bytes(codecs.BOM_UTF16_LE + "# typos\nID000\n".encode("utf-16-le"))
    assert run_main(data_main, ["cache", root, "--workers", 1, "--exclude", ex], monkeypatch) == 0
    assert len(load_cache_index(root / "hbseg-cache")) == 6  # ID000's two hands dropped


def test_csv_with_a_byte_order_mark_is_read(root, tmp_path, monkeypatch, capsys):
    """Excel's "CSV UTF-8" starts with a BOM: hbseg-eval and hbseg-ensemble read it as
    without one."""
    from hbseg.infer.cli import ensemble_main
    from hbseg.report.cli import eval_main

    text = _csv(root, rle=lambda n, c: "1 300" if c == "Radius" else "")
    scores = []
    for name, encoding in (("plain.csv", "utf-8"), ("bom.csv", "utf-8-sig")):
        pred = tmp_path / name
        pred.write_text(text, encoding=encoding)
        out = tmp_path / f"{name}.json"
        code = run_main(eval_main, ["--pred", pred, "--data", root / "train", "--out", out, "--quiet",
                                    "--workers", 1], monkeypatch)
        assert code == 0, capsys.readouterr().err
        scores.append(json.loads(out.read_text())["per_class"])
    assert scores[0] == scores[1]
    vote = tmp_path / "vote.csv"
    code = run_main(ensemble_main, [tmp_path / "bom.csv", tmp_path / "bom.csv", "--out", vote,
                                    "--size", "256x256", "--quiet"], monkeypatch)
    assert code == 0, capsys.readouterr().err
    from hbseg.infer.csv_io import read_submission

    assert read_submission(vote).rles == read_submission(tmp_path / "plain.csv").rles


# -- 5: no room for the file ----------------------------------------------------------------
def _file_size_limit(limit: int):
    def set_limit() -> None:  # in the child, before exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # hbseg ignores it too (run_cli)

    return set_limit


def test_file_size_limit_in_infer_names_the_output(root, checkpoint, tmp_path):
    out = tmp_path / "sub.csv"
    argv = [str(BIN / "hbseg-infer"), "--checkpoint", str(checkpoint), "--data", str(root / "test"),
            "--out", str(out), "--device", "cpu", "--quiet"]
    r = subprocess.run(argv, env=_env(PYTHONDONTWRITEBYTECODE="1"), capture_output=True, text=True,
                       preexec_fn=_file_size_limit(1000), timeout=300)
    assert r.returncode == 1 and _lines(r.stderr) == [
        f"error: {out}: could not write (file too large: the file size limit (ulimit -f) or the "
        "file system's largest file); nothing was written"], r.stderr
    assert not out.exists() and not list(tmp_path.glob(".sub.csv*"))


@pytest.mark.slow
def test_file_size_limit_in_train_names_the_checkpoint(root, tmp_path):
    run = tmp_path / "run"
    argv = [str(BIN / "hbseg-train"), "--data", str(root), "--out", str(run), *TINY]
    r = subprocess.run(argv, env=_env(PYTHONDONTWRITEBYTECODE="1"), capture_output=True, text=True,
                       preexec_fn=_file_size_limit(1 << 20), timeout=600)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert _lines(r.stderr)[-1] == (f"error: {run / 'best.pt'}: could not write (file too large: the "
                                    "file size limit (ulimit -f) or the file system's largest file); "
                                    "nothing was written"), r.stderr
    assert not list(run.glob(".*.tmp")) and not (run / "best.pt").exists()


def test_append_past_the_file_size_limit_names_the_file(tmp_path):
    log = tmp_path / "metrics.jsonl"
    code = ("import sys; from hbseg.atomic import append_text\n"
            "try:\n    append_text(sys.argv[1], 'x' * 5000)\nexcept Exception as e:\n    print(e)")
    r = subprocess.run([sys.executable, "-c", code, str(log)], capture_output=True, text=True,
                       preexec_fn=_file_size_limit(1000), env=_env(PYTHONDONTWRITEBYTECODE="1"))
    assert r.stdout.strip() == (f"{log}: could not append to the file (file too large: the file "
                                "size limit (ulimit -f) or the file system's largest file)"), r.stderr


# -- 5: messages in the command line's words -------------------------------------------------
def test_synth_into_a_used_folder_names_the_flag(tmp_path, monkeypatch, capsys):
    args = ["synth", tmp_path / "d", "--ids", 1, "--size", 64, "--workers", 1]
    assert run_main(data_main, args, monkeypatch) == 0
    capsys.readouterr()
    code = run_main(data_main, args, monkeypatch)
    err = capsys.readouterr().err
    _assert_one_error(code, err, tmp_path / "d" / "train" / "DCM", "pass --overwrite (which deletes")
    assert "overwrite=True" not in err
    assert run_main(data_main, [*args, "--overwrite"], monkeypatch) == 0


@pytest.mark.parametrize("module,entry,args,needle", [
    ("hbseg.train.cli", "main", ["--out", "RUN"], "Error: --data ROOT is required"),
    ("hbseg.train.cli", "main", ["--data", "DATA", "--out", "RUN", "--arch", "unett", "--device", "cpu"],
     "Error: unknown --arch 'unett'; did you mean 'unet'?"),
    ("hbseg.train.cli", "main", ["--epochs", "many"], "Error: Invalid value for '--epochs': 'many' is not"),
    ("hbseg.train.cli", "main", ["--bogus"], "Error: No such option '--bogus'"),
    ("hbseg.tune.kfold_cli", "main", ["train"], "Error: --out DIR is required"),
    ("hbseg.infer.cli", "infer_main", ["--sigma", "nan"], "Error: Invalid value for '--sigma'"),
    ("hbseg.data.cli", "main", ["cache"], "Error: Missing argument 'ROOT'."),
])
def test_usage_errors_are_one_line_in_every_command(module, entry, args, needle, tiny_root, tmp_path,
                                                     monkeypatch, capsys):
    import importlib

    args = [str(tiny_root) if a == "DATA" else str(tmp_path / "run") if a == "RUN" else a for a in args]
    code = run_main(getattr(importlib.import_module(module), entry), args, monkeypatch)
    _usage_line(code, capsys.readouterr().err, needle)


# -- 6: SIGTERM ------------------------------------------------------------------------------
SLOW_INFER = """
import sys, time
import hbseg.infer.predictor as p

predict = p.Predictor.predict_probs
def slow(self, *a, **k):  # a long prediction: SIGTERM arrives in the middle of the run
    out = predict(self, *a, **k)
    time.sleep(120)
    return out
p.Predictor.predict_probs = slow
from hbseg.infer.cli import infer_main
sys.argv[0] = "hbseg-infer"
infer_main()
"""


def test_sigterm_during_infer_leaves_no_temporary(root, checkpoint, tmp_path):
    script = tmp_path / "slow_infer.py"
    script.write_text(SLOW_INFER)
    out = tmp_path / "sub.csv"
    argv = [sys.executable, str(script), "--checkpoint", str(checkpoint), "--data", str(root / "test"),
            "--out", str(out), "--device", "cpu", "--quiet", "--loader", "cv2"]
    seen: list[float] = []

    def ready() -> bool:  # the temporary exists, and the run is well inside it
        if not seen and list(tmp_path.glob(".sub.csv.*.tmp")):
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] > 1.0

    code, err = _interrupt_when(argv, ready, signal.SIGTERM)
    assert seen, "the run never wrote its temporary"
    assert code == 143 and _lines(err) == ["Terminated."], err
    assert not out.exists() and not list(tmp_path.glob(".sub.csv*"))


def test_sigterm_runs_every_cleanup_and_exits_143(tmp_path):
    """The mechanism, for every command: SIGTERM is raised in the main thread, so
    atomic_path's temporary goes, and the command ends with one line and exit 143."""
    code = ("import os, time, click\n"
            "from hbseg.atomic import atomic_path\n"
            "from hbseg.cli_common import run_cli\n"
            "@click.command()\n"
            "def cmd():\n"
            "    with atomic_path(os.environ['OUT']) as tmp:\n"
            "        tmp.write_text('half')\n"
            "        time.sleep(120)\n"
            "run_cli(cmd)\n")
    out = tmp_path / "out.txt"
    code_, err = _interrupt_when([sys.executable, "-c", code],
                                 lambda: bool(list(tmp_path.glob(".out.txt.*.tmp"))), signal.SIGTERM,
                                 timeout=60, env=_env(OUT=str(out)))
    assert code_ == 143 and _lines(err) == ["Terminated."], err
    assert not list(tmp_path.iterdir())


# -- 6: leftovers ------------------------------------------------------------------------------
def test_pseudo_label_cache_serves_a_run_from_another_folder(root, tmp_path, monkeypatch):
    from hbseg.train.pseudo import build_pseudo_cache

    sub = root / "sub.csv"
    sub.write_text(_csv(root, "test", lambda n, c: "1 50" if c == "Ulna" else ""))
    monkeypatch.chdir(root.parent)  # relative paths, as typed on a command line
    first = build_pseudo_cache("data/sub.csv", "data", "data/pseudo", progress=False)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in first["image_path"])
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    again = build_pseudo_cache(root / "sub.csv", root, root / "pseudo", progress=False)  # reused
    assert list(again["image_path"]) == list(first["image_path"])
    assert all(Path(p).is_file() for p in [*again["image_path"], *again["mask_path"]])
    index = (root / "pseudo" / "index.csv").read_text()
    assert str(root) not in index and "../test/DCM/" in index  # relative to the cache folder


def test_a_run_that_failed_before_its_first_epoch_is_replaced(root, tmp_path, monkeypatch, capsys):
    """A folder holding only config.yaml and tb/ is taken without --overwrite; one with a
    checkpoint is not."""
    from hbseg.train.cli import main as train_main
    from hbseg.train.trainer import held_run_files

    run = tmp_path / "run"
    (run / "tb").mkdir(parents=True)
    (run / "config.yaml").write_text("epochs: 9\n")
    (run / "tb" / "events.out.tfevents.1.host").write_bytes(b"old")
    assert held_run_files(run) == []
    args = ["--data", root, "--out", run, *[a for a in TINY if a != "--no-tensorboard"]]
    assert run_main(train_main, args, monkeypatch) == 0, capsys.readouterr().err
    assert (run / "last.pt").is_file() and "epochs: 1" in (run / "config.yaml").read_text()
    assert not (run / "tb" / "events.out.tfevents.1.host").exists()  # the old curves went
    assert held_run_files(run) == ["config.yaml", "metrics.jsonl", "last.pt", "best.pt", "curves.png"]


def _fake_fold_training(calls: list[int]):
    """hbseg.train.trainer.train without the training: records the fold; fold 0 finishes."""
    from hbseg.models import ModelCard, create_model, save_checkpoint

    def train(cfg, resume=False, overwrite=False, index=None):
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        calls.append(cfg.fold)
        if cfg.fold == 0:
            rec = {"epoch": 1, "loss": 1.0, "mean_dice": 0.5, "dice": dict.fromkeys(CLASSES, 0.5)}
            (out / "metrics.jsonl").write_text(json.dumps(rec) + "\n")
            save_checkpoint(out / "last.pt", create_model("unet", "resnet18"),
                            ModelCard("unet", "resnet18", size=64), epoch=1)
        return {}

    return train


def test_kfold_resume_trains_the_planned_folds_and_summary_names_the_missing(
        tiny_root, tmp_path, monkeypatch, capsys):
    from hbseg.train.kfold import load_plan
    from hbseg.tune.kfold_cli import main as kfold_main

    calls: list[int] = []
    monkeypatch.setattr("hbseg.train.trainer.train", _fake_fold_training(calls))
    out = tmp_path / "kf"
    args = ["train", "--data", tiny_root, "--out", out, "--folds", "0,2", *TINY]
    assert run_main(kfold_main, args, monkeypatch) == 0, capsys.readouterr().err
    assert calls == [0, 2] and load_plan(out) == {"folds": [0, 2], "data_folds": [0, 1, 2, 3]}
    calls.clear()
    capsys.readouterr()
    assert run_main(kfold_main, ["train", "--resume", out], monkeypatch) == 0  # no --folds
    said = capsys.readouterr()
    assert calls == [2], said.err  # fold 0 is complete; folds 1 and 3 were never asked for
    assert "fold 0: complete, skipped" in said.err
    assert run_main(kfold_main, ["summary", out], monkeypatch) == 0
    text = capsys.readouterr().out
    assert "missing: fold 2 (planned, no epoch finished); continue with: hbseg-kfold train " \
           f"--resume {out}" in text
    assert "not planned: the data's folds 1, 3" in text and "mean over 1 of 2 planned folds" in text
    s = json.loads((out / "kfold.json").read_text())
    assert s["folds_missing"] == [2] and s["folds_planned"] == [0, 2] and not s["all_finished"]


def test_tune_keeps_the_untuned_setting_where_cross_validation_got_worse(tmp_path, monkeypatch,
                                                                          capsys):
    """Class 0: fold 1's images (3 of 4) want a threshold of 0.7, which loses everything on
    fold 0's image, where 0.5 is perfect: tuned in sample, worse cross-validated."""
    from test_tune import clean_probs, gt_squares, write_oof

    from hbseg.tune.cli import main as tune_main

    gts = gt_squares(np.random.default_rng(0), 4)
    probs = []
    for i, gt in enumerate(gts):
        p = clean_probs(gt)
        fg = gt[0] == 1
        p[0] = np.where(fg, 0.6, 0.2) if i == 0 else np.where(fg, 0.9, 0.65)
        probs.append(p.astype(np.float32))
    oof = write_oof(tmp_path / "oof", gts, probs, [0, 1, 1, 1])
    out = tmp_path / "tuned"
    assert run_main(tune_main, [oof, "--out", out, "--quiet", "--no-min-sizes"], monkeypatch) == 0
    said = capsys.readouterr().out
    r = json.loads((out / "tune-report.json").read_text())
    c0 = CLASSES[0]
    assert r["per_class"][c0]["step2_in_sample"] > r["per_class"][c0]["baseline"]  # tuning gained
    assert r["per_class"][c0]["step2_cv"] < r["per_class"][c0]["baseline"]  # ... but not really
    assert json.loads((out / "thresholds.json").read_text())[c0] == 0.5
    assert r["kept_untuned"] == [c0] and r["per_class"][c0]["kept_untuned"]
    assert ("tuning lowered the cross-validated mean Dice" in said
            and f"kept the untuned settings (threshold 0.50, no minimum size) for 1 class whose "
                f"cross-validated Dice fell with tuning: {c0}" in said), said


CTRL_C_WORKERS = """
import sys, time, torch
from hbseg.dali_pipes.config import LoaderConfig
from hbseg.torch_loaders.torch_loader import EpochSampler, make_dataloader
from hbseg.train.interrupt import graceful_sigint

class Slow(torch.utils.data.Dataset):
    def __len__(self):
        return 400
    def __getitem__(self, key):
        time.sleep(0.02)
        return torch.zeros(1), torch.zeros(1)

with graceful_sigint() as stop:
    loader = make_dataloader(Slow(), EpochSampler(400, 0, False, 0, 1),
                             LoaderConfig(batch_size=1, num_threads=3), True, False)
    batches = iter(loader)
    next(batches)
    print("ready", file=sys.stderr, flush=True)
    end = time.monotonic() + 60
    while not stop.requested and time.monotonic() < end:
        next(batches)
    time.sleep(1.0)  # a worker that would speak has spoken by now
print("stopped", stop.requested, flush=True)
"""


def test_ctrl_c_note_is_printed_once_not_once_per_worker(tmp_path):
    log = tmp_path / "err.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-c", CTRL_C_WORKERS], stdout=subprocess.PIPE,
                                stderr=f, text=True, start_new_session=True, env=_env())
        end = time.monotonic() + 120
        while proc.poll() is None and "ready" not in log.read_text() and time.monotonic() < end:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal sends it: to every process
        out, _ = proc.communicate(timeout=120)
    err = log.read_text()
    assert out.strip() == "stopped True", err
    assert err.count("Ctrl-C: finishing this epoch") == 1, err


def test_help_lists_the_hrnet_and_mit_encoders():
    from click.testing import CliRunner

    from hbseg.models.registry import COMPETITION_ENCODERS
    from hbseg.train.cli import ENCODER_LINES, train

    text = CliRunner().invoke(train, ["--help"]).output
    names = [n for family in COMPETITION_ENCODERS.values() for n in family]
    assert names == [n for line in ENCODER_LINES[:4] for n in line]
    for name in names:
        assert name in text, name
    from hbseg.models import create_model

    create_model("unet", "mit_b0")  # the names listed are accepted
    create_model("unet", "tu-hrnet_w18_small")
