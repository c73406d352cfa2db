"""The bad-input catalogue: every command rejects messy input with one line naming the file
and the problem, a non-zero exit code, no traceback, and no partial output.

Each case builds its broken input in a copy of the tiny synthetic data set, runs the real
console script in a subprocess and checks all four properties. docs/errors.md lists the
same catalogue for users.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

BIN = Path(sys.executable).parent


@dataclass
class Case:
    argv: list[str]
    message: str  # the problem, as the user reads it
    path: Path  # the file or folder the message must name
    outputs: list[Path] = field(default_factory=list)  # must not exist afterwards


def _first(root: Path, sub: str, pattern: str) -> Path:
    return sorted((root / "train" / sub).glob(pattern))[0]


def _csv_rows(root: Path, rle_for=None, header="image_name,class,rle") -> str:
    from hbseg.data import CLASSES

    names = sorted(p.name for p in (root / "train" / "DCM").glob("*/*.png"))
    lines = [header]
    for n in names:
        for c in CLASSES:
            lines.append(f"{n},{c},{rle_for(n, c) if rle_for else ''}")
    return "\n".join(lines) + "\n"


def _corrupt(png: Path) -> None:
    data = bytearray(png.read_bytes())
    data[60:200] = bytes(140)  # IHDR and IEND intact, image data garbled
    png.write_bytes(bytes(data))


def _cache_case(root: Path, problem: str, path: Path) -> Case:
    return Case([str(BIN / "hbseg-data"), "cache", str(root)], problem, path, [root / "hbseg-cache"])


# Each builder takes (root, tmp, ckpt) and returns a Case.
def corrupt_png(root, tmp, ckpt):
    p = _first(root, "DCM", "*/*.png")
    _corrupt(p)
    return _cache_case(root, "corrupt PNG", p)


def truncated_png(root, tmp, ckpt):
    p = _first(root, "DCM", "*/*.png")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return _cache_case(root, "truncated PNG", p)


def png_16bit(root, tmp, ckpt):
    p = _first(root, "DCM", "*/*.png")
    cv2.imwrite(str(p), cv2.imread(str(p), cv2.IMREAD_UNCHANGED).astype(np.uint16) * 257)
    return _cache_case(root, "16-bit grey PNG; expected 8-bit grey", p)


def png_rgb(root, tmp, ckpt):
    p = _first(root, "DCM", "*/*.png")
    g = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(p), np.dstack([g, g // 2, g]))
    return _cache_case(root, "RGB PNG with real colour", p)


def json_zero_bytes(root, tmp, ckpt):
    p = _first(root, "outputs_json", "*/*.json")
    p.write_bytes(b"")
    return _cache_case(root, "empty annotation file", p)


def json_invalid(root, tmp, ckpt):
    p = _first(root, "outputs_json", "*/*.json")
    p.write_text('{"annotations": [')
    return _cache_case(root, "invalid JSON", p)


def json_unknown_label(root, tmp, ckpt):
    p = _first(root, "outputs_json", "*/*.json")
    doc = json.loads(p.read_text())
    doc["annotations"][3]["label"] = "finger-20"
    p.write_text(json.dumps(doc))
    return _cache_case(root, "unknown label 'finger-20'", p)


def json_polygon_outside(root, tmp, ckpt):
    p = _first(root, "outputs_json", "*/*.json")
    doc = json.loads(p.read_text())
    doc["annotations"][0]["points"] = [[5000, 5000], [5100, 5000], [5100, 5100]]
    p.write_text(json.dumps(doc))
    return _cache_case(root, "wholly outside", p)


def image_without_json(root, tmp, ckpt):
    j = _first(root, "outputs_json", "*/*.json")
    j.unlink()
    png = root / "train" / "DCM" / j.parent.name / f"{j.stem}.png"
    return _cache_case(root, "image has no annotation", png)


def json_without_image(root, tmp, ckpt):
    p = _first(root, "DCM", "*/*.png")
    p.unlink()
    j = root / "train" / "outputs_json" / p.parent.name / f"{p.stem}.json"
    return _cache_case(root, "annotation has no matching image", j)


def empty_data_folder(root, tmp, ckpt):
    empty = tmp / "empty"
    empty.mkdir()
    return Case([str(BIN / "hbseg-data"), "cache", str(empty)], "no DCM/ folder", empty,
                [empty / "hbseg-cache"])


def train_empty_data_folder(root, tmp, ckpt):
    empty = tmp / "empty"
    (empty / "train" / "DCM").mkdir(parents=True)
    out = tmp / "run"
    return Case([str(BIN / "hbseg-train"), "--data", str(empty), "--device", "cpu", "--out", str(out)],
                "no PNG images found", empty / "train" / "DCM", [out / "last.pt"])


def _infer(ckpt, root, out, *extra):
    return [str(BIN / "hbseg-infer"), "--checkpoint", str(ckpt), "--data", str(root / "test"),
            "--out", str(out), "--device", "cpu", "--quiet", *extra]


def checkpoint_other_arch(root, tmp, ckpt):
    from hbseg.models import ModelCard, create_model, save_checkpoint

    bad = tmp / "fpn-as-unet.pt"
    # saved by hbseg, so its hash holds: only the card and the weights disagree
    save_checkpoint(bad, create_model("fpn", "resnet18"), ModelCard("unet", "resnet18", size=64))
    out = tmp / "sub.csv"
    return Case(_infer(bad, root, out), "weights do not fit a unet/resnet18 model", bad, [out])


def checkpoint_truncated(root, tmp, ckpt):
    bad = tmp / "cut.pt"
    bad.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 3])
    out = tmp / "sub.csv"
    return Case(_infer(bad, root, out), "unreadable or truncated checkpoint", bad, [out])


def checkpoint_foreign(root, tmp, ckpt):
    import torch

    bad = tmp / "other.pt"
    torch.save({"model": {}}, bad)
    out = tmp / "sub.csv"
    return Case(_infer(bad, root, out), "not an hbseg checkpoint", bad, [out])


def _eval(root, pred, out):
    return [str(BIN / "hbseg-eval"), "--pred", str(pred), "--data", str(root / "train"),
            "--out", str(out), "--quiet", "--workers", "1"]


def csv_wrong_header(root, tmp, ckpt):
    pred = tmp / "pred.csv"
    pred.write_text(_csv_rows(root, header="image,label,rle"))
    return Case(_eval(root, pred, tmp / "r.json"), "line 1: header", pred, [tmp / "r.json"])


def csv_unknown_class(root, tmp, ckpt):
    pred = tmp / "pred.csv"
    pred.write_text(_csv_rows(root).replace(",Lunate,", ",Lunatic,", 1))
    return Case(_eval(root, pred, tmp / "r.json"), "unknown class 'Lunatic'", pred, [tmp / "r.json"])


def csv_rle_past_end(root, tmp, ckpt):
    pred = tmp / "pred.csv"
    pred.write_text(_csv_rows(root, lambda n, c: "65530 100" if c == "Radius" else ""))
    return Case(_eval(root, pred, tmp / "r.json"), "past", pred, [tmp / "r.json"])


def csv_missing_rows(root, tmp, ckpt):
    pred = tmp / "pred.csv"
    lines = _csv_rows(root).splitlines()
    pred.write_text("\n".join(lines[:-29]) + "\n")  # the last image has no rows
    return Case(_eval(root, pred, tmp / "r.json"), "no rows", pred, [tmp / "r.json"])


def csv_odd_values(root, tmp, ckpt):
    good, bad = tmp / "a.csv", tmp / "b.csv"
    good.write_text(_csv_rows(root))
    bad.write_text(_csv_rows(root, lambda n, c: "1 5 9" if c == "Ulna" else ""))
    out = tmp / "vote.csv"
    argv = [str(BIN / "hbseg-ensemble"), str(good), str(bad), "--out", str(out), "--size", "256x256",
            "--quiet"]
    return Case(argv, "odd number of values", bad, [out])


def thresholds_unknown_class(root, tmp, ckpt):
    thr = tmp / "thr.json"
    thr.write_text(json.dumps({"Radius": 0.4, "Femur": 0.5}))
    out = tmp / "sub.csv"
    return Case(_infer(ckpt, root, out, "--thresholds", str(thr)), "unknown class 'Femur'", thr, [out])


def description_invalid_yaml(root, tmp, ckpt):
    desc = root / "hbseg-dataset.yaml"
    desc.write_text("name: spine\nclasses: [L1, L2\nformat: index-png\n")
    return _cache_case(root, "invalid YAML at line 3", desc)


def class_weights_wrong_length(root, tmp, ckpt):
    weights = tmp / "weights.json"
    weights.write_text(json.dumps({"Radius": [1.0]}))
    out = tmp / "sub.csv"
    argv = _infer(ckpt, root, out, "--checkpoint", str(ckpt), "--class-weights", str(weights))
    return Case(argv, "expected 2 numbers >= 0", weights, [out])


def output_read_only(root, tmp, ckpt):
    ro = tmp / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    if os.access(ro, os.W_OK):  # root ignores permission bits; /sys refuses new files
        ro = Path("/sys")
    out = ro / "sub.csv"
    return Case(_infer(ckpt, root, out), "not writable" if ro != Path("/sys") else "cannot write into output folder",
                ro, [out])


CATALOGUE = [
    corrupt_png, truncated_png, png_16bit, png_rgb,
    json_zero_bytes, json_invalid, json_unknown_label, json_polygon_outside,
    image_without_json, json_without_image, empty_data_folder, train_empty_data_folder,
    checkpoint_other_arch, checkpoint_truncated, checkpoint_foreign,
    csv_wrong_header, csv_unknown_class, csv_rle_past_end, csv_missing_rows, csv_odd_values,
    thresholds_unknown_class, description_invalid_yaml, class_weights_wrong_length,
    output_read_only,
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from hbseg.models import ModelCard, create_model, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "unet.pt"
    save_checkpoint(path, create_model("unet", "resnet18"), ModelCard("unet", "resnet18", size=64))
    return path


@pytest.mark.parametrize("build", CATALOGUE, ids=[f.__name__ for f in CATALOGUE])
def test_bad_input(build, tiny_root, tmp_path, checkpoint):
    root = tmp_path / "data"
    shutil.copytree(tiny_root / "train", root / "train")
    shutil.copytree(tiny_root / "test", root / "test")
    case = build(root, tmp_path, checkpoint)
    env = {**os.environ, "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(case.argv, capture_output=True, text=True, env=env, timeout=300)

    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    # one error line, the last thing said (progress notes such as "building the cache" may precede it)
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert str(case.path) in errors[0], errors[0]
    assert case.message in errors[0], errors[0]
    for out in case.outputs:
        assert not out.exists(), f"{out} was left behind"
        leftovers = [p.name for p in out.parent.glob(f".{out.name}*")] if out.parent.is_dir() else []
        assert not leftovers, leftovers


def test_debug_shows_traceback(tiny_root, tmp_path):
    empty = tmp_path / "nothing"
    proc = subprocess.run([str(BIN / "hbseg-data"), "cache", str(empty), "--debug"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_fewer_than_29_bones_is_accepted(tiny_root, tmp_path):
    """Documented choice: missing bones are allowed, their masks stay empty."""
    root = tmp_path / "data"
    shutil.copytree(tiny_root / "train", root / "train")
    p = _first(root, "outputs_json", "*/*.json")
    doc = json.loads(p.read_text())
    doc["annotations"] = doc["annotations"][:20]
    p.write_text(json.dumps(doc))
    proc = subprocess.run([str(BIN / "hbseg-data"), "cache", str(root)], capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert (root / "hbseg-cache" / "index.csv").is_file()
