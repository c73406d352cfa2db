"""hbseg-train --config: settings from a YAML/JSON file (a run's config.yaml included),
overridden by the options given, with unknown names and wrong kinds refused."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from hbseg.dali_pipes.config import AugmentConfig
from hbseg.errors import ConfigError
from hbseg.train import trainer as trainer_mod
from hbseg.train.cli import train as train_command
from hbseg.train.config import TrainConfig, read_train_settings, save_config


@pytest.fixture
def captured(monkeypatch):
    """Run the CLI up to the trainer and keep the TrainConfig it would train with."""
    seen = []

    def fake_train(cfg, resume=False, overwrite=False):
        seen.append(cfg)
        return {"run_dir": cfg.out, "epochs_done": 0, "finished": False, "best_mean_dice": None,
                "best_epoch": None, "last": None, "seconds": 0.0}

    monkeypatch.setattr(trainer_mod, "train", fake_train)
    return seen


def _run(*args) -> tuple[int, str]:
    r = CliRunner().invoke(train_command, [str(a) for a in args])
    return r.exit_code, r.output


def test_file_settings_and_command_line_overrides(tmp_path, captured):
    f = tmp_path / "aug.yaml"
    f.write_text("lr: 0.01\nsize: 128\nmin_lr_ratio: 0.05\n"
                 "augment: {rotate_limit: 25, hflip_p: 0.5}\nnormalize: {mean: 0.4}\n")
    code, out = _run("--config", f, "--data", tmp_path, "--out", tmp_path / "r", "--lr", "0.02",
                     "--device", "cpu")
    assert code == 0, out
    cfg = captured[-1]
    assert cfg.lr == 0.02  # the command line wins
    assert cfg.size == 128 and cfg.min_lr_ratio == 0.05  # the file, even where no option exists
    assert cfg.augment == AugmentConfig.hand_xray(rotate_limit=25, hflip_p=0.5)  # the rest: the recipe
    assert cfg.normalize.mean == 0.4 and cfg.epochs == TrainConfig(out="x", data="d").epochs


def test_a_runs_config_yaml_starts_the_same_run_elsewhere(tmp_path, captured):
    old = TrainConfig(out=str(tmp_path / "a"), data=str(tmp_path), device="cpu", size=96,
                      encoder="resnet18", epochs=3, augment=AugmentConfig(ssr_p=0.9,
                                                                          clahe_tile_grid=(4, 4)))
    save_config(old, tmp_path / "config.yaml")
    code, out = _run("--config", tmp_path / "config.yaml", "--out", tmp_path / "b")
    assert code == 0, out
    assert captured[-1] == old.replace(out=str(tmp_path / "b"))


@pytest.mark.parametrize("text, message", [
    ("epoch: 3\n", "unknown setting 'epoch' (did you mean 'epochs'?)"),
    ("augment: {rotate_limt: 3}\n", "unknown setting 'augment.rotate_limt' (did you mean 'rotate_limit'?)"),
    ("size: big\n", "size is 'big'; expected int"),
    ("lr: true\n", "lr is True; expected float"),
    ("augment: {clahe_tile_grid: [8, x]}\n", "augment.clahe_tile_grid is [8, 'x']"),
    ("augment: 3\n", "'augment' must be a mapping"),
])
def test_bad_settings_name_the_file_and_the_setting(tmp_path, text, message):
    f = tmp_path / "s.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        read_train_settings(f)
    assert e.value.path == f


def test_bad_file_is_a_usage_error_and_resume_refuses_a_file(tmp_path, captured):
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"epochs": "many"}))
    code, out = _run("--config", f, "--data", tmp_path, "--out", tmp_path / "r")
    assert code == 2 and f"{f}: epochs is 'many'; expected int" in out and not captured
    f.write_text(json.dumps({"epochs": 2}))
    code, out = _run("--config", f, "--resume", tmp_path / "r")
    assert code == 2 and "--config starts a new run" in out and not captured
