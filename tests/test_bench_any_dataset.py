"""hbseg-bench loaders on a described data set (not the hands): colour images, 3 classes,
its cache where hbseg-train keeps it, and the hands-only baseline loader refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from hbseg.benchmarks.cli import bench
from hbseg.benchmarks.config import BenchConfig
from hbseg.data.synth_shapes import ShapesConfig, generate_shapes
from hbseg.errors import ConfigError


def _blobs(root: Path):
    """8 colour images at 64 px (cell, nucleus, debris), described but not yet cached."""
    return generate_shapes(root, ShapesConfig(kind="blobs", images=8, size=64))


# the tiny CPU settings of test_bench_loaders' tiny run, shrunk to one batch of 2 at 32 px
TINY = ["--size", "32", "--arch", "unet", "--encoder", "resnet18", "--batch-size", "2",
        "--epochs", "1", "--warmup-epochs", "0", "--warmup-steps", "1", "--steps-limit", "1",
        "--cpus", "1", "--device", "cpu", "--timeout", "300"]


@pytest.mark.slow
def test_loaders_bench_on_described_colour_data_set(tmp_path):
    """Default loaders on CPU less baseline: torch and dali train on 3-channel images and 3
    mask planes; the results name the data set; --synth does not apply."""
    root = tmp_path / "blobs"
    spec = _blobs(root)
    out = tmp_path / "bench"
    args = ["loaders", "--data", str(root), "--synth", "2", *TINY, "--out", str(out)]
    result = CliRunner().invoke(bench, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "baseline left out of the default --loaders" in result.output
    assert "--synth 2 ignored" in result.output
    assert not (root / "train").exists()  # no synthetic hands written beside the blobs
    assert (root / "hbseg-cache" / "index.csv").is_file()  # where hbseg-train keeps it

    res = json.loads((out / "results.json").read_text())
    assert BenchConfig.from_dict(res["config"]).loaders == ("torch", "dali")
    ds = res["dataset"]
    assert ds["name"] == spec.name == "synthetic-blobs"
    assert ds["classes"] == ["cell", "nucleus", "debris"] and ds["num_classes"] == 3
    assert ds["channels"] == 3 and ds["description"]["format"] == spec.format
    assert ds["images"] == 8 and ds["cache_dir"] == str(root / "hbseg-cache")
    assert any("'synthetic-blobs': 3 classes (cell, nucleus, debris)" in n for n in res["notes"])

    runs = {r["loader"]: r for r in res["runs"]}
    assert set(runs) == {"bound", "torch", "dali"}
    for kind, r in runs.items():
        assert r["status"] == "ok", f"{kind}: {r.get('error')}"
        assert (r["channels"], r["num_classes"]) == (3, 3)  # what the subprocess trained on
        assert [e["images"] for e in r["train_epochs"]] == [2]
        assert r["train_images_per_s"] > 0 and math.isfinite(r["train_epochs"][0]["loss"])
        assert r["speedup_vs_baseline"] is None  # nothing to compare with
    assert runs["torch"]["load_images_per_s"] > 0 and runs["dali"]["load_images_per_s"] > 0
    assert "synthetic-blobs" in (out / "table.md").read_text()


def test_baseline_refused_on_a_described_data_set(tmp_path):
    """Named in --loaders: one ConfigError naming the option, before a cache or OUT is made."""
    root = tmp_path / "blobs"
    _blobs(root)
    out = tmp_path / "bench"
    args = ["loaders", "--data", str(root), "--loaders", "baseline,torch", *TINY, "--out", str(out)]
    with pytest.raises(ConfigError, match=r"--loaders baseline reads the hands' JSON only"):
        CliRunner().invoke(bench, args, catch_exceptions=False)
    assert not (root / "hbseg-cache").exists() and not out.exists()

    from hbseg.benchmarks.loaders_bench import run_loaders_bench

    cfg = BenchConfig(data=str(root), loaders=("baseline", "dali"), size=32, device="cpu")
    with pytest.raises(ConfigError, match="synthetic-blobs"):  # the library call as well
        run_loaders_bench(cfg, out, log=lambda m: None, plot=False)
    assert not out.exists()


def test_ops_refuses_a_described_data_set(tmp_path):
    """hbseg-bench ops times the hands' operations: a usage error, before any cache is built."""
    root = tmp_path / "blobs"
    _blobs(root)
    r = CliRunner().invoke(bench, ["ops", "--data", str(root), "--out", str(tmp_path / "ops")])
    assert r.exit_code == 2 and "not data set 'synthetic-blobs'" in r.output
    assert not (root / "hbseg-cache").exists() and not (tmp_path / "ops").exists()
