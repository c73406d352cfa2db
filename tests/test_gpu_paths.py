"""GPU paths the rest of the suite does not reach: bf16 + channels-last training with the
DALI back-ends and its resume, random CLAHE / brightness-contrast / fp16 on the device,
full-resolution inference and eval batches, the cache's memory estimate, cupy's stream,
and the benchmarks with ``--device cuda``.

Everything here skips without CUDA (conftest) and nothing else: on a GPU machine a
missing input (DALI, cupy, nvidia-smi) is a failure, so a session cannot pass by skipping.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import run_main

pytestmark = pytest.mark.gpu

NORM_STD = 0.229
GREY = 1 / 255 / NORM_STD  # one grey level after normalisation


def _index(cache: Path):
    from hbseg.data import load_cache_index

    return load_cache_index(cache)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("loader", ["dali", "dali-cache"])
def test_bf16_channels_last_epoch_then_resume(tiny_root, tmp_path, monkeypatch, capfd, loader):
    from hbseg.models import read_checkpoint
    from hbseg.train.cli import main

    if not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bf16")
    run = tmp_path / "run"
    args = ["--data", tiny_root, "--loader", loader, "--device", "cuda", "--encoder", "resnet18",
            "--size", 64, "--batch-size", 2, "--epochs", 2, "--stop-after", 1, "--amp", "bf16",
            "--channels-last", "--val-full-res", "--workers", 2, "--no-progress", "--out", run]
    def tail() -> str:
        out, err = capfd.readouterr()
        return " | ".join((out + err).strip().splitlines()[-6:])

    rc = run_main(main, args, monkeypatch)
    assert rc == 0, f"step 1 (first epoch, --stop-after 1) exited {rc}: {tail()}"
    (first,) = _metrics(run)
    assert first["amp"] == "bf16" and np.isfinite(first["loss"]), f"step 1 metrics: {first}"
    # scored at full resolution (--val-full-res)
    assert 0.0 <= first["mean_dice"] <= 1.0, f"step 1 metrics: {first}"
    rng = read_checkpoint(run / "last.pt")["rng"][0]
    assert "cuda" in rng and len(rng["cuda"]) == torch.cuda.device_count(), \
        f"step 1 checkpoint rng keys {sorted(rng)}"

    rc = run_main(main, ["--resume", run, "--no-progress"], monkeypatch)
    assert rc == 0, f"step 2 (--resume in the same process) exited {rc}: {tail()}"
    recs = _metrics(run)
    assert [r["epoch"] for r in recs] == [1, 2] and all(np.isfinite(r["loss"]) for r in recs), \
        f"step 2 metrics: {recs}"
    assert read_checkpoint(run / "last.pt")["epoch"] == 2


def test_cuda_rng_state_round_trips():
    from hbseg.train.resume import get_rng_state, set_rng_state

    torch.zeros(1, device="cuda")  # get_rng_state saves CUDA's only once it is initialised
    state = get_rng_state()
    assert "cuda" in state
    a = torch.rand(5, device="cuda")
    set_rng_state(state)
    assert torch.equal(torch.rand(5, device="cuda"), a)


# ----------------------------------------------------------------------------- loaders


def test_gpu_random_clahe_brightness_fp16_match_cpu(tiny_cache):
    from hbseg.dali_pipes import AugmentConfig, DaliLoader, LoaderConfig, NormalizeConfig

    aug = AugmentConfig(clahe_p=0.5, ssr_p=0.0, brightness_contrast_p=1.0)
    cfg = LoaderConfig(size=64, batch_size=4, seed=3, augment=aug,
                       normalize=NormalizeConfig(dtype="float16"))
    index = _index(tiny_cache)
    gpu = list(DaliLoader(index, cfg, "train", "cuda"))
    cpu = list(DaliLoader(index, cfg, "train", "cpu"))
    assert len(gpu) == len(cpu) == 2
    for (xg, mg), (xc, mc) in zip(gpu, cpu, strict=True):
        assert xg.is_cuda and xg.dtype == torch.float16 and torch.isfinite(xg).all()
        diff = (xg.float().cpu() - xc.float()).abs()
        # the same samples got CLAHE (exact on both) and the same gains: the GPU warp's fused
        # multiply-adds (±1 level) and brightness rounding (±1), scaled by the contrast gain
        # (≤ 1.2), and fp16 rounding (≤ 0.02 at these magnitudes) remain
        worst, mean = float(diff.max()), float(diff.mean())
        assert worst <= 2.5 * GREY + 0.02, f"max |GPU - CPU| {worst / GREY:.2f} grey levels"
        assert mean <= 0.5 * GREY, f"mean |GPU - CPU| {mean / GREY:.3f} grey levels"
        agree = float((mg.cpu() == mc).float().mean())
        assert agree > 0.999, f"mask agreement {agree:.5f}"  # nearest: float ties may differ


def test_gpu_infer_loader_full_resolution(tmp_path):
    from hbseg.dali_pipes import AugmentConfig, DaliInferLoader

    rng = np.random.default_rng(1)
    files = []
    for i, (h, w) in enumerate([(256, 200), (128, 264), (64, 64)]):  # sides the 8x8 grid divides
        p = tmp_path / f"f{i}.png"
        cv2.imwrite(str(p), cv2.GaussianBlur(rng.integers(0, 256, (h, w), dtype=np.uint8), (7, 7), 2))
        files.append(p)
    aug = AugmentConfig(clahe_p=1.0)
    gpu = list(DaliInferLoader(files, size=None, augment=aug, batch_size=2, device="cuda"))
    cpu = list(DaliInferLoader(files, size=None, augment=aug, batch_size=2, device="cpu"))
    images_g = [x for b, _, _ in gpu for x in b]
    images_c = [x for b, _, _ in cpu for x in b]
    assert [tuple(x.shape) for x in images_g] == [(1, h, w) for h, w in [(256, 200), (128, 264), (64, 64)]]
    assert [hw for _, b, _ in gpu for hw in b] == [(256, 200), (128, 264), (64, 64)]
    for g, c in zip(images_g, images_c, strict=True):
        assert g.is_cuda
        # no warp at full resolution and CLAHE exact on both: only the normalisation's float
        # rounding may differ, far below a grey level
        worst = float((g.cpu() - c).abs().max())
        assert worst <= 1e-3, f"{tuple(g.shape)}: max |GPU - CPU| {worst / GREY:.3f} grey levels"


def test_gpu_cache_eval_full_resolution_masks_are_exact(tiny_cache):
    from hbseg.dali_pipes import DaliCacheLoader, LoaderConfig
    from hbseg.dali_pipes.config import NO_AUGMENT
    from hbseg.data.masks import read_packed_png, unpack_masks

    index = _index(tiny_cache)
    cfg = LoaderConfig(size=64, batch_size=3, full_res_mask=True, augment=NO_AUGMENT)
    batches = list(DaliCacheLoader(index, cfg, "eval", "cuda", headroom_bytes=0))
    masks = [m for _, ms in batches for m in ms]
    assert len(masks) == len(index)
    for m, row in zip(masks, index.itertuples(index=False), strict=True):
        assert m.is_cuda and m.dtype == torch.uint8
        ref = unpack_masks(read_packed_png(row.mask_path))
        assert m.shape == ref.shape == (29, row.height, row.width)
        assert np.array_equal(m.cpu().numpy(), ref)


def test_cache_byte_estimate_matches_cuda_allocation(tiny_cache):
    import gc

    from hbseg.dali_pipes import DaliCacheLoader, LoaderConfig
    from hbseg.dali_pipes.cache_loader import cache_bytes

    index = _index(tiny_cache)
    torch.zeros(1, device="cuda")
    # an earlier test's loader freed by a collection inside the window would shrink the
    # growth (seen on the H200: -143360 B): collect first, and hold the collector off
    gc.collect()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    gc.disable()
    try:
        loader = DaliCacheLoader(index, LoaderConfig(size=64, batch_size=3), "train", "cuda",
                                 headroom_bytes=0)
        torch.cuda.synchronize()
        grown = torch.cuda.memory_allocated() - before
    finally:
        gc.enable()
    est = cache_bytes(index)
    assert loader.cache_bytes == est, (loader.cache_bytes, est)
    # torch rounds each of the 2·N tensors up to 512 bytes; nothing else may stay behind
    assert est <= grown <= est + 2 * len(index) * 512 + (1 << 20), \
        f"estimate {est} B, CUDA allocation grew {grown} B ({grown - est:+d}) for {len(index)} images"


def test_closing_the_cache_loader_returns_cuda_memory(tiny_cache):
    import gc

    from hbseg.dali_pipes import DaliCacheLoader, LoaderConfig

    index = _index(tiny_cache)
    torch.zeros(1, device="cuda")
    gc.collect()  # nothing another test left for the collector may fall into the window
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    gc.disable()  # close() must free the cache, not a collection
    try:
        loader = DaliCacheLoader(index, LoaderConfig(size=64, batch_size=3), "train", "cuda",
                                 headroom_bytes=0)
        assert sum(1 for _ in loader) == len(loader)  # no batch outlives the loop
        held = torch.cuda.memory_allocated() - before
        loader.close()
        torch.cuda.synchronize()
        left = torch.cuda.memory_allocated() - before
    finally:
        gc.enable()
    assert held >= loader.cache_bytes and left <= 0, \
        f"cache {loader.cache_bytes} B; held {held} B while open, {left} B after close()"


# ----------------------------------------------------------------------------- cupy


def test_cupy_uses_torch_stream_without_deprecation():
    try:
        import cupy as cp
    except ImportError:
        pytest.fail("cupy is not importable on this CUDA machine (hbseg[cuda12|cuda13] installs it)")
    from hbseg.data import NUM_CLASSES
    from hbseg.infer.postprocess import _cupy_stream, remove_small_objects

    ptr = torch.cuda.current_stream().cuda_stream
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        stream = _cupy_stream(cp, ptr)
        assert stream.ptr == ptr
        m = torch.zeros(NUM_CLASSES, 32, 32, dtype=torch.bool, device="cuda")
        m[0, 2:4, 2:4] = True  # 4 px: dropped
        m[0, 10:20, 10:20] = True  # 100 px: kept
        out = remove_small_objects(m, [10] * NUM_CLASSES)
    assert out.is_cuda and int(out[0].sum()) == 100


# ----------------------------------------------------------------------------- benchmarks


@pytest.fixture
def bench_root(tiny_root, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_root, tmp_path / "data"))


def test_gpu_monitor_nvidia_smi_fallback(monkeypatch):
    from hbseg.benchmarks.gpu_monitor import GpuMonitor

    if shutil.which("nvidia-smi") is None:
        pytest.fail("nvidia-smi is not on PATH: GPU utilisation cannot be measured")
    monkeypatch.setattr(GpuMonitor, "_start_nvml", lambda self, index: False)  # as without pynvml
    x = torch.randn(2048, 2048, device="cuda")
    with GpuMonitor("cuda", interval=0.05) as mon:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 1.5:
            x = torch.nn.functional.normalize(x @ x, dim=1)
        torch.cuda.synchronize()
        time.sleep(0.2)
        t1 = time.perf_counter()
    s = mon.summary(t0, t1)
    assert s["backend"] == "nvidia-smi" and s["samples"] >= 3, s
    assert s["util_max"] > 0 and s["mem_used_peak_gb"] > 0


def test_bench_loaders_on_cuda(bench_root, tmp_path, monkeypatch):
    from hbseg.benchmarks.cli import main

    out = tmp_path / "b"
    # dali-cache only: the plain dali back-end on CUDA is covered by the loader tests, and
    # each run here is a fresh process (torch, DALI and CUDA start-up, ~15 s)
    args = ["loaders", "--data", bench_root, "--loaders", "dali-cache", "--size", 64,
            "--encoder", "resnet18", "--batch-size", 2, "--epochs", 1, "--warmup-epochs", 0,
            "--warmup-steps", 1, "--steps-limit", 2, "--amp", "bf16", "--device", "cuda",
            "--timeout", 300, "--out", out]
    assert run_main(main, args, monkeypatch) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["machine"]["gpu_name"]
    runs = {r["loader"]: r for r in res["runs"]}
    assert set(runs) == {"bound", "dali-cache"}, sorted(runs)
    for name, r in runs.items():
        assert r["status"] == "ok", (name, r.get("error"))
        assert r["amp"] == "bf16" and r["train_epoch_s"] > 0
        assert (r.get("gpu") or {}).get("backend") in ("nvml", "nvidia-smi"), r.get("gpu")


def test_bench_ops_on_cuda(bench_root, tmp_path, monkeypatch):
    from hbseg.benchmarks.cli import main

    out = tmp_path / "o"
    args = ["ops", "--data", bench_root, "--size", 64, "--batch-size", 2, "--iters", 1,
            "--warmup", 0, "--repeats", 1, "--device", "cuda", "--out", out]
    assert run_main(main, args, monkeypatch) == 0
    res = json.loads((out / "ops.json").read_text())
    assert res["config"]["cuda"] and res["machine"]["gpu_name"]
    gpu_rows = [r for r in res["ops"] if r["device"] == "gpu"]
    assert gpu_rows and all(r["status"] == "ok" for r in gpu_rows), \
        [(r["op"], r["impl"], r.get("error")) for r in gpu_rows if r["status"] != "ok"]
    assert {r["impl"] for r in gpu_rows} >= {"torch", "dali gpu"}
