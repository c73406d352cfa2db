"""The GPU session kit's dry run: every step's code path on CPU with tiny sizes, so the kit
cannot rot between GPU sessions (``hbseg-bench kit STEP --dry``)."""

from __future__ import annotations

import json
import re
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
    rep = _kit_json(kit, "test")["pytest"]
    assert rep["source"] == "report-log" and rep["degraded"] is None and rep["finished"]
    cases = rep["cases"]
    assert cases and all(c["outcome"] == "skipped" for c in cases)  # no GPU: all skip
    assert rep["counts"]["skipped"] == len(cases) == rep["selected"]
    assert all(c["message"] for c in cases)  # the skip reason
    log = (Path(kit.out) / "test" / "pytest.log").read_text()
    assert " SKIPPED" in log  # -v: one line per test, not dots

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


# a tiny test folder for the test step: one test passes, one fails, one passes its per-test
# timeout, one would outlast the step's budget (pytest-timeout disabled for it)
TINY_TESTS = """
import time

import pytest


def test_pass():
    pass


def test_fail():
    assert 1 == 2, "boom: the first line\\nthe second line"


def test_past_its_timeout():
    time.sleep(60)


@pytest.mark.timeout(0)
def test_hang():
    time.sleep(600)
"""


def _tiny_tests(tmp_path: Path) -> Path:
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "test_tiny.py").write_text(TINY_TESTS)
    return d


def test_test_step_killed_at_its_budget_keeps_finished_results(tmp_path):
    """The step's budget ends while pytest runs: kit.json still names every finished test
    with its outcome and message, and the test that was running."""
    tests = _tiny_tests(tmp_path)
    cfg = KitConfig.make(tmp_path / "out", tmp_path / "work", dry=True, budget_s=10,
                         bundle=False, test_marker="", test_paths=(str(tests),), test_timeout_s=2)
    r = run_step("test", cfg)
    assert not r.ok
    assert "1 passed, 2 failed" in r.line and "(rc 124" in r.line, r.line
    # node ids are relative to pytest's rootdir, which depends on where the checkout lies
    line = re.sub(r"[^\s,;]*(?=test_tiny\.py::)", "", r.line)
    assert "budget ended during test_tiny.py::test_hang" in line, r.line
    assert "failing: test_tiny.py::test_fail, test_tiny.py::test_past_its_timeout" in line, r.line
    rep = _kit_json(cfg, "test")["pytest"]
    assert rep["timed_out"] and not rep["finished"] and rep["source"] == "report-log"
    assert rep["running_at_kill"].endswith("test_tiny.py::test_hang")

    def short(nodeid: str) -> str:
        return nodeid[nodeid.index("test_tiny.py"):]

    failing = {short(c["nodeid"]): c["message"] for c in rep["failing"]}
    assert failing == {"test_tiny.py::test_fail": "AssertionError: boom: the first line",
                       "test_tiny.py::test_past_its_timeout":
                           "Failed: Timeout (>2.0s) from pytest-timeout."}
    assert [c["outcome"] for c in rep["cases"]] == ["passed", "failed", "failed"]
    assert rep["selected"] == 4 and rep["per_test_timeout_s"] == 2.0
    cmd = _kit_json(cfg, "test")["commands"][0]
    assert " -v " in cmd and "--timeout=2" in cmd and "--report-log=" in cmd


def test_test_step_without_reportlog_and_picked_tests(tmp_path, monkeypatch, capsys):
    """No pytest-reportlog (as on a machine without it): the step still runs and says so;
    node ids and -k pick the tests to rerun."""
    from hbseg.benchmarks import kit_test
    from hbseg.benchmarks.cli import main

    real = kit_test.have_plugin
    monkeypatch.setattr(kit_test, "have_plugin", lambda m: m != "pytest_reportlog" and real(m))
    tests = _tiny_tests(tmp_path)
    out = tmp_path / "out"
    args = ["kit", "test", f"{tests}/test_tiny.py::test_pass", f"{tests}/test_tiny.py::test_fail",
            f"{tests}/test_tiny.py::test_hang", "-k", "not hang", "--marker", "", "--dry",
            "--out", out, "--work", tmp_path / "work"]
    assert run_main(main, args, monkeypatch) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("kit test: FAILED 1 passed, 1 failed") and "of 2 in" in line, line
    assert "failing: " in line and "test_fail" in line and "no pytest-reportlog" in line, line
    k = json.loads((out / "test" / "kit.json").read_text())
    rep = k["pytest"]
    assert rep["source"] == "junit" and "no pytest-reportlog" in rep["degraded"]
    assert [c["message"] for c in rep["failing"]] == ["AssertionError: boom: the first line"]
    assert "--report-log" not in k["commands"][0] and "-k" in k["commands"][0]


def test_verbose_log_of_a_killed_run(tmp_path):
    """Without pytest-reportlog a killed run leaves only pytest's -v lines: outcomes and the
    test that was running, no messages."""
    from hbseg.benchmarks.kit_test import read_verbose_log

    log = tmp_path / "pytest.log"
    log.write_text("collecting ... collected 4 items\n\n"
                   "tests/test_a.py::test_one PASSED                [ 25%]\n"
                   "tests/test_a.py::test_two[x y] FAILED           [ 50%]\n"
                   "tests/test_a.py::test_two[x y] ERROR            [ 50%]\n"
                   "tests/test_a.py::test_three \n"
                   "kit: killed after 10 s\n")
    rep = read_verbose_log(log)
    assert [(c.nodeid, c.outcome) for c in rep.cases] == [
        ("tests/test_a.py::test_one", "passed"), ("tests/test_a.py::test_two[x y]", "failed")]
    assert rep.running == "tests/test_a.py::test_three" and not rep.finished


def test_bench_step_killed_mid_run_keeps_finished_rows(tmp_path, monkeypatch):
    """The step's budget ends during a loader run (here: as soon as the bound's row is on
    disk): the finished row is in results.json, merged, and the line names what was not
    reached; the bound's start-up calibrates the next part."""
    import subprocess
    import time

    from hbseg.benchmarks import kit_base, kit_bench

    real_run = kit_bench._run

    def killed_after_first_row(cmd, log_path, timeout, env=None, commands=None):
        if "loaders" not in cmd:
            return real_run(cmd, log_path, timeout, env, commands)
        commands.append(" ".join(cmd))
        results = Path(cmd[cmd.index("--out") + 1]) / "results.json"
        t0 = time.monotonic()
        with open(log_path, "w") as log:
            proc = kit_base._popen(cmd, log, {**kit_base._base_env(), **(env or {})})
            try:
                while proc.poll() is None and time.monotonic() - t0 < 120:
                    time.sleep(0.2)
                    try:
                        if json.loads(results.read_text())["runs"]:
                            break
                    except (OSError, ValueError, KeyError):
                        pass
            finally:
                kit_base._kill(proc)  # what the budget's end does
        assert isinstance(proc, subprocess.Popen)
        return 124, time.monotonic() - t0

    monkeypatch.setattr(kit_bench, "_run", killed_after_first_row)
    cfg = KitConfig.make(tmp_path / "out", tmp_path / "work", dry=True, budget_s=240,
                         bundle=False, bench_loaders=("dali", "torch"))
    r = run_step("bench", cfg, cpus=1)
    assert not r.ok
    assert "bound " in r.line and "not reached: dali, torch" in r.line and "budget ended" in r.line
    d = Path(cfg.out) / "bench-1"
    runs = json.loads((d / "run" / "results.json").read_text())["runs"]
    assert [x["loader"] for x in runs] == ["bound"] and runs[0]["status"] == "ok"
    merged = json.loads((d / "merged" / "results.json").read_text())["runs"]
    assert [x["loader"] for x in merged] == ["bound"]
    k = _kit_json(cfg, "bench-1")
    assert k["plan"]["runs"] == ["bound", "dali", "torch"]
    assert dict(k["plan"]["timeouts"])["bound"] > 0
    cal = json.loads((Path(cfg.work) / "bench" / "calibration.json").read_text())
    assert cal["startup_s"] > 0 and cal["step_s"] > 0 and "imports_s" in cal["startup_parts"]
    # the next part on this machine starts from what was measured, and skips the bound
    from hbseg.benchmarks.kit_bench import _has_bound, calibration

    assert calibration(cfg, 1).source.startswith("measured") and _has_bound(cfg, 1)


def test_bench_plan_gives_the_baseline_what_is_left():
    from hbseg.benchmarks.kit_bench import Calibration, plan_runs

    cfg = KitConfig.make("out", "work")  # GPU sizes: 50 batches per epoch, 3+1 epochs
    cal = Calibration(startup_s=45, step_s=0.108, batch_s={"baseline": 1.0}, source="test")
    kinds = ("baseline", "torch", "dali", "dali-cache")
    plan = plan_runs(cfg, cal, kinds, bound=True, available_s=500)
    assert plan.runs == ("bound", "dali-cache", "dali", "torch", "baseline")
    t = dict(plan.timeouts)
    assert t["bound"] == pytest.approx((45 + 153 * 0.108) * 1.5, abs=0.1)
    assert plan.steps == 50 and dict(plan.loader_steps)["baseline"] < 50
    assert any("baseline:" in n for n in plan.notes)
    # the others' expected times (limits / margin), then all that is left for the baseline
    left = 500 - (t["bound"] + 3 * t["dali"]) / 1.5
    assert t["baseline"] == pytest.approx(left, abs=0.5) and plan.expected_s <= 500
    tight = plan_runs(cfg, cal, kinds, bound=True, available_s=300)
    assert tight.steps < 50 and any("batches per epoch instead of 50" in n for n in tight.notes)


# run in a fresh interpreter: every attempt to resolve a name or open an internet
# connection is recorded (and refused), then hbseg, albumentations and a DALI CPU loader run
NO_NETWORK = r"""
import json, os, socket, sys

attempts = []

def refuse(what):
    def guard(*args, **kwargs):
        attempts.append(f"{what}{args[:2]!r}")
        raise OSError("no network in this test")
    return guard

socket.getaddrinfo = refuse("getaddrinfo")
socket.create_connection = refuse("create_connection")
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex

def connect(self, address, _real=_connect):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        return refuse("connect")(address)
    return _real(self, address)

def connect_ex(self, address, _real=_connect_ex):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        return refuse("connect_ex")(address)
    return _real(self, address)

socket.socket.connect, socket.socket.connect_ex = connect, connect_ex

import hbseg  # noqa: E402
import albumentations  # noqa: E402,F401

loaded = None
if sys.argv[1] != "-":
    from hbseg.dali_pipes.config import LoaderConfig
    from hbseg.loaders import build_loader
    from hbseg.data.cache import load_cache_index

    index = load_cache_index(sys.argv[1])
    loader = build_loader("dali", index, LoaderConfig(size=64, batch_size=2, num_threads=1),
                          "train", "cpu")
    image, _ = next(iter(loader))
    loaded = list(image.shape)
print(json.dumps({"attempts": attempts, "env": os.environ.get("NO_ALBUMENTATIONS_UPDATE"),
                  "batch": loaded}))
"""


def test_no_process_reaches_for_the_network(tiny_root):
    """Importing hbseg (then albumentations) and running a loader opens no socket: hbseg
    sets NO_ALBUMENTATIONS_UPDATE=1 for itself and every process it starts."""
    import os
    import subprocess
    import sys

    pytest.importorskip("nvidia.dali")
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run([sys.executable, "-c", NO_NETWORK, str(tiny_root / "hbseg-cache")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["attempts"] == [] and out["env"] == "1" and out["batch"] == [2, 1, 64, 64]
    # and the kit's commands get it whatever their parent's environment
    from hbseg.benchmarks.kit_base import _base_env

    assert _base_env()["NO_ALBUMENTATIONS_UPDATE"] == "1"
