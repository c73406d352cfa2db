"""Every settings file hbseg reads (run config, data set description, per-class values)
fails the same way: one line naming the file and the problem."""

from __future__ import annotations

import re

import pytest

from hbseg.data.spec import load_spec
from hbseg.errors import ConfigError
from hbseg.infer.postprocess import load_thresholds
from hbseg.settings_file import read_mapping
from hbseg.train.config import TrainConfig, load_config, save_config


@pytest.mark.parametrize("name, text, message", [
    ("a.yaml", "x: [1, 2\n", "invalid YAML at line 2"),
    ("a.json", '{"x": 1,\n "y": }', "invalid JSON at line 2 column 7"),
    ("a.yml", "", "is empty; expected an object"),
    ("a.json", "[1, 2]", "is a list; expected an object"),
    ("a.yaml", "- a\n- b\n", "is a list; expected an object"),
])
def test_bad_files_name_the_file_and_the_problem(tmp_path, name, text, message):
    f = tmp_path / name
    f.write_text(text)
    for read in (lambda p: read_mapping(p, "thing"), load_spec, load_config, load_thresholds):
        with pytest.raises(ConfigError, match=re.escape(message)) as e:
            read(f)
        assert str(e.value).startswith(f"{f}: ") and "\n" not in str(e.value)


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(ConfigError, match="run config not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="data set description not found"):
        load_spec(tmp_path / "nope.yaml")
    f = tmp_path / "t.json"
    f.write_bytes(b"\x80\x81{")  # not UTF-8 (b"\xff\xfe" would be UTF-16's byte-order mark)
    with pytest.raises(ConfigError, match="cannot read thresholds file: not UTF-8 text"):
        load_thresholds(f)


def test_json_and_yaml_read_alike(tmp_path):
    (tmp_path / "t.json").write_text('{"a": 0.3, "b": 0.7}')
    (tmp_path / "t.yaml").write_text("a: 0.3\nb: 0.7\n")
    assert load_thresholds(tmp_path / "t.json", ["a", "b"]) == load_thresholds(tmp_path / "t.yaml", ["a", "b"])


@pytest.mark.parametrize("name", ["config.yaml", "config.json", "config.yml"])
def test_run_config_round_trips(tmp_path, name):
    cfg = TrainConfig(data="d", out="o", epochs=3, lr=0.01)
    save_config(cfg, tmp_path / name)
    assert load_config(tmp_path / name) == cfg
