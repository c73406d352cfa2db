"""Per-class ensemble weights in hbseg-infer (hbseg-tune's weights.json): the named classes
blend with their own weights, the others with --weights, and soft voting agrees."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_main
from test_tune import make_ckpt

from hbseg.data.classes import CLASSES
from hbseg.errors import ConfigError
from hbseg.infer.class_weights import class_weight_table
from hbseg.infer.predictor import Predictor

HIGH, LOW = 2.0, -1.0  # constant models: sigmoid 0.881 and 0.269 everywhere


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("cw")
    return make_ckpt(d / "high.pt", HIGH), make_ckpt(d / "low.pt", LOW)


def test_table_normalises_each_class_on_its_own():
    t = class_weight_table([2.0, 1.0], ["a", "b", "c"], {"b": [0, 5], "c": [1, 3]})
    np.testing.assert_allclose(t, [[2 / 3, 0.0, 0.25], [1 / 3, 1.0, 0.75]])
    with pytest.raises(ConfigError, match="unknown class 'bb'"):
        class_weight_table([1, 1], ["a", "b"], {"bb": [1, 1]})
    with pytest.raises(ConfigError, match="expected 2 numbers >= 0, not all 0"):
        class_weight_table([1, 1], ["a", "b"], {"b": [0, 0]})


def test_predictor_blends_named_classes_with_their_own_weights(ckpts):
    image = torch.zeros(1, 1, 64, 64)
    p_high, p_low = torch.sigmoid(torch.tensor(HIGH)), torch.sigmoid(torch.tensor(LOW))
    plain = Predictor(list(ckpts), device="cpu", weights=[3, 1]).predict_probs(image)
    torch.testing.assert_close(plain, torch.full_like(plain, (3 * p_high + p_low) / 4))
    per_class = {CLASSES[0]: [0, 1], CLASSES[5]: [1, 1]}
    pred = Predictor(list(ckpts), device="cpu", weights=[3, 1], class_weights=per_class)
    probs = pred.predict_probs(image)
    torch.testing.assert_close(probs[0], torch.full_like(probs[0], p_low))
    torch.testing.assert_close(probs[5], torch.full_like(probs[5], (p_high + p_low) / 2))
    torch.testing.assert_close(probs[1], plain[1])
    assert pred.describe()["class_weights"][CLASSES[0]] == [0.0, 1.0]


def test_cli_class_weights_reach_the_csv(ckpts, tiny_root, tmp_path, monkeypatch):
    from hbseg.infer.cli import infer_main
    from hbseg.infer.csv_io import read_submission

    def infer(name: str, *extra) -> tuple[dict, dict]:
        csv = tmp_path / name
        args = ["--data", tiny_root, "--out", csv, "--device", "cpu", "--loader", "cv2",
                "--quiet", *extra]
        assert run_main(infer_main, args, monkeypatch) == 0
        sub = read_submission(csv)
        cfg = json.loads((tmp_path / f"{name}.config.json").read_text())
        return {c: [sub.rles[n][i] for n in sub.images] for i, c in enumerate(CLASSES)}, cfg

    both = ["--checkpoint", ckpts[0], "--checkpoint", ckpts[1]]
    plain, _ = infer("plain.csv", *both)  # mean 0.575 > 0.5: every class covers the image
    assert all(r != "" for c in CLASSES for r in plain[c])
    (tmp_path / "weights.json").write_text(json.dumps({CLASSES[0]: [0, 1], CLASSES[2]: [1, 0]}))
    tuned, cfg = infer("tuned.csv", *both, "--class-weights", tmp_path / "weights.json")
    assert all(r == "" for r in tuned[CLASSES[0]])  # the low model alone: 0.269
    assert tuned[CLASSES[1]] == plain[CLASSES[1]] and tuned[CLASSES[2]] == plain[CLASSES[2]]
    assert cfg["class_weights_file"] == str(tmp_path / "weights.json")
    assert cfg["predictor"]["class_weights"][CLASSES[0]] == [0.0, 1.0]

    (tmp_path / "bad.json").write_text(json.dumps({"radius": [1, 1]}))
    code = run_main(infer_main, ["--data", tiny_root, "--out", tmp_path / "bad.csv", *both,
                                 "--device", "cpu", "--quiet", "--class-weights",
                                 tmp_path / "bad.json"], monkeypatch)
    assert code != 0 and not (tmp_path / "bad.csv").exists()
    with pytest.raises(ConfigError, match="two or more --checkpoint"):
        from hbseg.infer.config import InferConfig

        InferConfig(checkpoints=(ckpts[0],), data="d", out="o.csv", class_weights_file="w.json")
