"""hbseg-bench: a tiny CPU run of every loader, failure reporting, CPU accounting, outputs."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from hbseg.benchmarks.cli import bench
from hbseg.benchmarks.config import BenchConfig
from hbseg.benchmarks.cpu_time import ProcessTreeClock
from hbseg.errors import ConfigError


def _available_loaders(device: str = "cpu") -> list[str]:
    from hbseg.loaders import LOADERS

    out = []
    for kind in LOADERS:
        if kind.startswith("dali"):
            try:
                import nvidia.dali  # noqa: F401
            except ImportError:
                continue
        if kind == "dali-cache" and device == "cpu":
            continue
        out.append(kind)
    return out


def _is_png(path) -> bool:
    import cv2

    img = cv2.imread(str(path))
    return img is not None and img.ndim == 3 and min(img.shape[:2]) > 100


@pytest.mark.slow
def test_loaders_bench_tiny_cpu_run(tiny_root, tmp_path):
    """Every available loader, the bound, and dali-cache (which needs CUDA) reported failed."""
    kinds = _available_loaders()
    asked = ["baseline", *[k for k in kinds if k != "baseline"], "dali-cache"]
    out = tmp_path / "bench"
    args = ["loaders", "--data", str(tiny_root), "--loaders", ",".join(asked), "--size", "64",
            "--arch", "unet", "--encoder", "resnet18", "--batch-size", "2", "--epochs", "2",
            "--warmup-epochs", "1", "--warmup-steps", "1", "--steps-limit", "1",
            "--cpus", "1", "--device", "cpu", "--timeout", "300", "--note", "test run", "--out", str(out)]
    result = CliRunner().invoke(bench, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output

    res = json.loads((out / "results.json").read_text())
    assert res["schema"] == "hbseg.bench.loaders/1"
    m = res["machine"]
    for key in ("cpu_model", "cpu_count", "cpus_allowed", "gpus", "gpu_name", "versions"):
        assert key in m
    for key in ("torch", "dali", "cuda", "hbseg", "python"):
        assert key in m["versions"]
    assert m["cpu_count"] >= 1 and m["versions"]["hbseg"]
    assert BenchConfig.from_dict(res["config"]).size == 64
    assert res["dataset"]["images"] > 0
    assert "test run" in res["notes"]
    assert res["method"]["cpu_s_per_sample"]

    runs = {r["loader"]: r for r in res["runs"]}
    assert set(runs) == {"bound", *asked}
    assert runs["dali-cache"]["status"] == "error"
    assert "cuda" in runs["dali-cache"]["error"].lower()
    for kind in ["bound", *kinds]:
        r = runs[kind]
        assert r["status"] == "ok", r.get("error")
        assert r["cpus"] == 1 and r["cores"] and len(r["cores"]) == 1
        assert len(r["train_epochs"]) == 2
        secs = [e["seconds"] for e in r["train_epochs"]]
        assert r["train_epoch_s"] == pytest.approx(statistics.median(secs))
        assert all(e["images"] == 2 for e in r["train_epochs"])  # one capped batch of 2
        assert r["train_epoch_s"] > 0 and r["train_images_per_s"] > 0
        assert r["cpu_s_per_sample_train"] > 0
        assert 0.0 <= r["host_wait_fraction"] <= 1.0 and r["host_wait_s"] >= 0
        assert r["gpu_idle_fraction"] is None and r["first_batch_s"] >= 0
        assert r["ratio_to_bound"] > 0
        assert r["amp"] == "fp32"
        if kind != "bound":
            assert len(r["load_epochs"]) == 2
            assert r["load_images_per_s"] > 0 and r["cpu_s_per_sample_load"] > 0
            assert r["speedup_vs_baseline"] > 0
            assert r["num_threads"] >= 0 and r["first_batch_s_cold"] > 0
            if kind == "dali":  # one pipeline served every epoch
                assert r["pipeline_builds"] == 1 and r["pipeline_build_s"] > 0
    assert runs["bound"]["ratio_to_bound"] == pytest.approx(1.0)
    assert runs["baseline"]["speedup_vs_baseline"] == pytest.approx(1.0)

    table = (out / "table.md").read_text()
    assert "| baseline |" in table and "failed" in table and "dali-cache" in table
    assert "| baseline |" in result.stdout
    assert _is_png(out / "loaders.png")
    assert (out / "logs").is_dir()


@pytest.mark.slow
def test_ops_bench_tiny_run(tiny_root, tmp_path):
    from hbseg.benchmarks.ops_bench import OPS, run_ops_bench

    res = run_ops_bench(tiny_root, tmp_path, size=64, batch_size=2, threads=1, iters=1,
                        warmup=1, repeats=1, device="cpu", log=lambda m: None)
    saved = json.loads((tmp_path / "ops.json").read_text())
    assert saved["schema"] == "hbseg.bench.ops/1"
    assert len(saved["ops"]) == len(res["ops"])
    ok = [r for r in saved["ops"] if r["status"] == "ok"]
    assert {r["op"] for r in ok} >= set(OPS)
    assert all(r["ms_per_image"] > 0 and r["device"] == "cpu" for r in ok)
    assert "| clahe |" in (tmp_path / "ops.md").read_text()


def _fake_run(loader, cpus, epoch_s, load=None, status="ok"):
    if status != "ok":
        return {"loader": loader, "cpus": cpus, "status": "error", "error": "Boom: broken"}
    return {"loader": loader, "cpus": cpus, "status": "ok", "num_threads": cpus,
            "train_epoch_s": epoch_s, "train_images_per_s": 100 / epoch_s,
            "load_images_per_s": load, "host_wait_s": 0.1, "first_batch_s": 0.05,
            "cpu_s_per_sample_train": 0.5, "cpu_s_per_sample_load": 0.1, "gpu": None}


def _fake_results(cpus_values=(1, 2)):
    runs = []
    for c in cpus_values:
        runs += [_fake_run("bound", c, 2.0 / c), _fake_run("baseline", c, 8.0 / c, 10 * c),
                 _fake_run("torch", c, 4.0 / c, 20 * c), _fake_run("dali", c, 0, status="error")]
    return {"config": {"arch": "unet", "encoder": "resnet18", "size": 64, "batch_size": 2,
                       "device": "cpu", "epochs": 3},
            "machine": {"cpu_model": "test", "cpus_allowed": 2}, "dataset": {}, "runs": runs}


def test_ratios_table_and_plot(tmp_path):
    from hbseg.benchmarks.loaders_bench import add_ratios
    from hbseg.benchmarks.plot import plot_loaders
    from hbseg.benchmarks.report import markdown_table

    res = _fake_results()
    add_ratios(res["runs"])
    r = {(x["loader"], x["cpus"]): x for x in res["runs"]}
    assert r[("torch", 2)]["ratio_to_bound"] == pytest.approx(2.0)
    assert r[("torch", 1)]["speedup_vs_baseline"] == pytest.approx(2.0)
    assert r[("torch", 1)]["load_speedup_vs_baseline"] == pytest.approx(2.0)
    assert r[("bound", 1)]["speedup_vs_baseline"] is None
    assert "ratio_to_bound" not in r[("dali", 1)]
    table = markdown_table(res)
    assert table.count("| torch |") == 2 and table.count("| **bound** |") == 2
    assert "¹ dali (cores=1): Boom: broken" in table
    path = plot_loaders(res, tmp_path / "loaders.png")
    assert _is_png(path)
    import cv2

    assert cv2.imread(str(path)).shape[1] > 900  # two panels: epoch time and throughput/cores


def test_process_tree_clock_counts_children_once():
    clock = ProcessTreeClock()
    burn = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.4: pass\ntime.sleep(5)"
    r0 = clock.read()
    p = subprocess.Popen([sys.executable, "-c", burn])
    try:
        deadline = time.time() + 20
        live = 0.0
        while time.time() < deadline:
            live = (clock.read() - r0).children
            if live >= 0.38:
                break
            time.sleep(0.1)
        assert live >= 0.38  # a live child is counted from /proc
    finally:
        p.kill()
        p.wait()
    after = (clock.read() - r0).children  # reaped: now in RUSAGE_CHILDREN, not twice
    assert live - 0.05 <= after <= live + 0.3


def test_spawn_reports_failures(tiny_root, tmp_path):
    from hbseg.benchmarks.loaders_bench import _spawn

    cfg = BenchConfig(data=str(tiny_root), loaders=("nope",), size=64, batch_size=2,
                      encoder="resnet18", device="cpu")
    job = {"job": "loader", "kind": "nope", "cpus": 1, "config": cfg.to_dict(),
           "cache_dir": str(tiny_root / "hbseg-cache")}
    r = _spawn(job, tmp_path / "nope.log", timeout=120, threads=1)
    assert r["status"] == "error" and "unknown loader 'nope'" in r["error"]
    r = _spawn({"job": "sysinfo"}, tmp_path / "slow.log", timeout=0.05, threads=1)
    assert r["status"] == "timeout" and "timed out" in r["error"]


def test_loaders_bench_killed_mid_run_keeps_finished_rows(tiny_root, tmp_path):
    """results.json and table.md are rewritten after each run: killing hbseg-bench during a
    run keeps the rows before it; a run past its own --run-timeout ends as a timeout row."""
    import os
    import signal

    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "hbseg.benchmarks.cli", "loaders", "--data", str(tiny_root),
           "--loaders", "torch,dali", "--size", "64", "--arch", "unet", "--encoder", "resnet18",
           "--batch-size", "2", "--epochs", "1", "--warmup-epochs", "0", "--warmup-steps", "0",
           "--steps-limit", "1", "--cpus", "1", "--device", "cpu", "--timeout", "300",
           "--run-timeout", "torch=1", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    results = out / "results.json"
    try:
        deadline = time.monotonic() + 120
        rows = []
        while time.monotonic() < deadline and proc.poll() is None and len(rows) < 2:
            time.sleep(0.2)
            try:
                rows = json.loads(results.read_text())["runs"]
            except (OSError, ValueError, KeyError):
                rows = []
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # while dali runs: the benchmark is cut short
        proc.wait()
    runs = json.loads(results.read_text())["runs"]
    assert [r["loader"] for r in runs] == ["bound", "torch"]
    bound, torch_row = runs
    assert bound["status"] == "ok" and bound["train_epoch_s"] > 0
    assert set(bound["startup"]) >= {"process_start_s", "imports_s", "cuda_init_s",
                                     "model_build_s", "pipeline_build_s", "warmup_steps_s"}
    assert torch_row["status"] == "timeout" and "timed out after" in torch_row["error"]
    table = (out / "table.md").read_text()
    assert "**bound**" in table and "torch" in table and "timed out after" in table


def test_timed_out_run_keeps_what_it_measured():
    from hbseg.benchmarks.loaders_bench import _partial_row
    from hbseg.benchmarks.report import markdown_table

    epoch = {"seconds": 2.0, "images_per_s": 4.0, "host_wait_s": 0.5, "host_wait_fraction": 0.25,
             "gpu_idle_fraction": None, "first_batch_s": 0.1, "cpu_s_per_sample": 0.3}
    partial = {"loader": "baseline", "cpus": 4, "batches_planned": 40, "load_batches_done": 21,
               "train_batches_done": 13, "startup": {"imports_s": 5.0},
               "load_epochs": [{"seconds": 1.0, "images_per_s": 8.0, "cpu_s_per_sample": 0.2}],
               "train_epochs": [epoch]}
    r = _partial_row(partial, 60)
    assert r["status"] == "timeout" and r["error"] == "timed out after 34 of 40 batches (60 s)"
    assert r["train_epoch_s"] == 2.0 and r["load_images_per_s"] == 8.0 and r["batches_done"] == 34
    table = markdown_table({"runs": [r], "config": {}, "machine": {}})
    assert "baseline (partial¹)" in table and "| 2.00 |" in table and "34 of 40" in table


def test_config_and_cli_validation(tmp_path):
    with pytest.raises(ConfigError):
        BenchConfig(data="x", amp="bf16", device="cpu")
    with pytest.raises(ConfigError):
        BenchConfig(data="x", cpus=(0,))
    runner = CliRunner()
    r = runner.invoke(bench, ["loaders", "--data", str(tmp_path), "--loaders", "torh",
                              "--device", "cpu"])
    assert r.exit_code == 2 and "did you mean 'torch'" in r.output
    r = runner.invoke(bench, ["loaders", "--data", str(tmp_path), "--cpus", "100000",
                              "--device", "cpu"])
    assert r.exit_code == 2 and "--cpus" in r.output


def test_report_merges_runs_per_cpus(tmp_path):
    from hbseg.benchmarks.loaders_bench import SCHEMA

    paths = []
    for c in (1, 2):
        res = _fake_results(cpus_values=(c,))
        res.update(schema=SCHEMA, notes=[f"part {c}"], command=f"run {c}")
        res["config"]["cpus"] = [c]
        p = tmp_path / f"part{c}"
        p.mkdir()
        (p / "results.json").write_text(json.dumps(res))
        paths.append(str(p))
    out = tmp_path / "merged"
    r = CliRunner().invoke(bench, ["report", *paths, "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    merged = json.loads((out / "results.json").read_text())
    assert merged["config"]["cpus"] == [1, 2] and merged["notes"] == ["part 1", "part 2"]
    assert len(merged["runs"]) == 8 and merged["runs"][0]["loader"] == "bound"
    torch2 = [x for x in merged["runs"] if x["loader"] == "torch" and x["cpus"] == 2][0]
    assert torch2["speedup_vs_baseline"] == pytest.approx(2.0)
    assert _is_png(out / "loaders.png")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = CliRunner().invoke(bench, ["report", str(bad), "--out", str(out)])
    assert r.exit_code != 0
