"""The GPU session kit's dry run: every step's code path on CPU with tiny sizes, so the kit
cannot rot between GPU sessions (``hbseg-bench kit STEP --dry``)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from conftest import run_main

from hbseg.benchmarks.kit import KitConfig, run_step


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> KitConfig:
    """One work folder (data made once, a training run) shared by the steps, as on a
    warm GPU machine; every step writes into the same OUT."""
    base = tmp_path_factory.mktemp("kit")
    return KitConfig.make(base / "out", base / "work", dry=True, budget_s=240, bundle=False)


def _kit_json(cfg: KitConfig, name: str) -> dict:
    return json.loads((Path(cfg.out) / name / "kit.json").read_text())


def test_env_through_the_cli(kit, monkeypatch, capsys):
    from hbseg.benchmarks.cli import main

    args = ["kit", "env", "--dry", "--out", kit.out, "--work", kit.work]
    assert run_main(main, args, monkeypatch) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("kit env: ok ") and "cores" in line
    # what a device command brings back: kit.json and one bundle per step
    d = Path(kit.out) / "env"
    assert sorted(p.name for p in d.iterdir()) == ["env.tar.gz", "kit.json"]
    with tarfile.open(d / "env.tar.gz") as tar:
        env = json.load(tar.extractfile("env.json"))
    assert env["versions"]["torch"] and env["cpus_allowed"] >= 1
    k = _kit_json(kit, "env")
    assert k["ok"] is True and "env.json" in k["bundle"] and k["env"]["cpus_allowed"] >= 1
    # bench needs its core count, and only bench takes one
    assert run_main(main, ["kit", "bench", "--dry", "--out", kit.out], monkeypatch) == 1
    assert run_main(main, ["kit", "env", "4", "--dry", "--out", kit.out], monkeypatch) == 1


def test_test_and_ops_steps(kit):
    r = run_step("test", kit)
    assert r.ok, r.line
    junit = _kit_json(kit, "test")["junit"]
    assert junit["tests"] > 0 and junit["skipped"] == junit["tests"]  # no GPU: all skip
    assert (Path(kit.out) / "test" / "pytest.log").is_file()

    r = run_step("ops", kit)
    assert r.ok, r.line
    d = Path(kit.out) / "ops"
    ops = json.loads((d / "ops" / "ops.json").read_text())["ops"]
    assert ops and all(x["status"] == "ok" for x in ops)
    latency = json.loads((d / "latency.json").read_text())
    assert [x["loader"] for x in latency] == ["dali"]
    for x in latency:
        assert x["pipeline_build_s"] > 0 and x["first_batch_s"] > 0 and x["batch_shape"] == [2, 1, 64, 64]
    marker = json.loads((Path(kit.work) / "data" / "kit-data.json").read_text())
    assert marker == {"ids": 4, "size": 128, "seed": 0, "version": 1}


@pytest.mark.slow
def test_bench_step_merges_parts(kit):
    r = run_step("bench", kit, cpus=16)  # the dry run clamps to the cores it has
    assert r.ok, r.line
    assert r.line.startswith("kit bench 16: ok ")
    merged = json.loads((Path(kit.out) / "bench-16" / "merged" / "results.json").read_text())
    assert {x["loader"] for x in merged["runs"]} == {"bound", "dali"}
    assert all(x["status"] == "ok" for x in merged["runs"])
    assert (Path(kit.work) / "bench").glob("cpus-*/results.json")


@pytest.mark.slow
def test_quality_continues_across_commands_and_restarts_fresh(kit):
    def quality(epochs: int):
        cfg = KitConfig.make(kit.out, kit.work, dry=True, budget_s=240, quality_slice_epochs=1,
                             quality_epochs=epochs, bundle=False)
        r = run_step("quality", cfg)
        assert r.ok, r.line
        return r.line

    assert "1/3 epochs (+1 now)" in quality(3)
    # planned differently (as on a fresh machine, or after new data): starts from scratch
    assert "1/2 epochs (+1 now)" in quality(2)
    line = quality(2)  # the next command on the warm machine resumes
    assert "2/2 epochs (+1 now)" in line and "finished" in line, line
    assert "--resume" in _kit_json(kit, "quality")["commands"][0]
    assert "2/2 epochs (+0 now)" in quality(2)  # nothing left: reports without training
    d = Path(kit.out) / "quality"
    assert [json.loads(x)["epoch"] for x in (d / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    summary = json.loads((d / "quality.json").read_text())
    assert summary["epochs_done"] == 2 and summary["state"] == "finished"
