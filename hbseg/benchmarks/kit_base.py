"""What every step of ``hbseg-bench kit`` shares: its sizes (:class:`KitConfig`), its
clock, and running one command in a subprocess with a timeout, its output in a log."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["STEPS", "KitConfig", "StepResult", "real_hands_dir", "default_out", "default_work",
           "dry_requested", "ensure_data"]

STEPS = ("env", "test", "ops", "bench", "quality")
DATA_VERSION = 1  # bump when the synthetic generator's output changes


@dataclass(frozen=True)
class KitConfig:
    """Sizes of every step; ``KitConfig.make(dry=True)`` is the CPU dry run's."""

    out: str
    work: str
    dry: bool = False
    budget_s: float = 540.0  # a device command may run 600 s; keep a minute for transfers
    ids: int = 400  # patients: 800 images, 792 after the default exclusions
    synth_size: int = 2048
    seed: int = 0
    size: int = 1024
    batch_size: int = 8
    arch: str = "unet"
    encoder: str = "efficientnet-b2"
    device: str = "cuda"
    amp: str = "bf16"
    ops_iters: int = 10
    ops_warmup: int = 2
    ops_repeats: int = 3
    bench_epochs: int = 3
    bench_warmup_epochs: int = 1
    bench_warmup_steps: int = 3
    bench_steps: int = 50  # batches per epoch, fewer when the calibration says they won't fit
    bench_loaders: tuple[str, ...] = ()  # () = every loader this device runs
    bench_margin: float = 1.5  # each run's time limit: its calibrated need × this
    quality_loader: str = "dali-cache"
    quality_epochs: int = 40
    quality_slice_epochs: int | None = None  # at most this many epochs per command
    test_marker: str = "gpu"  # pytest -m; "" runs every test selected
    test_paths: tuple[str, ...] = ()  # node ids or folders; () = tests/ (dry: test_gpu_paths.py)
    test_keyword: str | None = None  # pytest -k, to rerun failing tests alone
    test_timeout_s: float = 120.0  # pytest-timeout, per test: one hang costs 2 min, not the step
    test_workers: int = 3  # pytest-xdist processes where installed: GPU tests wait on start-up
    bundle: bool = True  # OUT/<step>/ = kit.json + <step>.tar.gz (a device command returns 8 files)

    @classmethod
    def make(cls, out: str | Path, work: str | Path, dry: bool = False, **changes) -> KitConfig:
        base = cls(out=str(out), work=str(work), dry=dry)
        if dry:
            base = replace(base, ids=4, synth_size=128, size=64, batch_size=2, encoder="resnet18",
                           device="cpu", amp="off", ops_iters=1, ops_warmup=0, ops_repeats=1,
                           bench_epochs=1, bench_warmup_epochs=0, bench_warmup_steps=0,
                           bench_steps=1, quality_loader="dali", quality_epochs=2, test_workers=1)
        return replace(base, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class StepResult:
    step: str
    ok: bool
    summary: str
    seconds: float

    @property
    def line(self) -> str:
        return f"kit {self.step}: {'ok' if self.ok else 'FAILED'} {self.summary}"


def dry_requested() -> bool:
    return os.environ.get("HBSEG_GPU_DRY", "") not in ("", "0")


def default_out() -> Path:
    return Path(os.environ.get("OUT") or "kit-out")


def default_work(dry: bool) -> Path:
    return Path(os.environ.get("HBSEG_KIT_WORK") or ("/tmp/hbseg-kit-dry" if dry else "/tmp/hbseg-kit"))


def _repo_root() -> Path:
    import hbseg

    return Path(hbseg.__file__).resolve().parents[1]


def real_hands_dir() -> Path:
    """``$HBSEG_REAL_HANDS``, else the checkout's ignored ``tests/data/real-hands``."""
    env = os.environ.get("HBSEG_REAL_HANDS")
    return Path(env) if env else _repo_root() / "tests" / "data" / "real-hands"


# --------------------------------------------------------------------------- helpers


class _Clock:
    def __init__(self, budget_s: float) -> None:
        self.t0, self.budget = time.monotonic(), budget_s

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return max(0.0, self.budget - self.elapsed())


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cores() -> int:
    from .sysinfo import allowed_cpus

    return len(allowed_cpus())


def _run(cmd: list[str], log_path: Path, timeout: float, env: dict | None = None,
         commands: list | None = None) -> tuple[int, float]:
    """Run ``cmd`` with its output in ``log_path``; rc 124 when killed at ``timeout``."""
    _log("$ " + " ".join(cmd))
    if commands is not None:
        commands.append(" ".join(cmd))
    full_env = {**_base_env(), **(env or {})}
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = _popen(cmd, log, full_env)
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            _kill(proc)
            rc = 124
            with open(log_path, "a") as f:
                f.write(f"\nkit: killed after {timeout:.0f} s\n")
        finally:
            if proc.poll() is None:  # the kit itself is stopping (SIGTERM, Ctrl-C)
                _kill(proc)
    return rc, time.monotonic() - t0


def _popen(cmd: list[str], log, env: dict) -> subprocess.Popen:
    # its own process group (killed as one), but the kit's session: a device command
    # that ends takes every process of its session with it, and none stays on the GPU
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=_repo_root(), preexec_fn=os.setpgrp)


def _base_env() -> dict:
    # the hbseg commands the kit starts die with it (hbseg.lifetime), so a kit killed at the
    # device command's limit leaves no training or measurement on the GPU; albumentations
    # asks the network for its newest version at import (4 s of DNS failure on the H200)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1",
            "HBSEG_DIE_WITH_PARENT": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


def _threads(cfg: KitConfig) -> dict:
    """The dry run's processes use one OpenMP thread: on a shared 2-core runner more made
    its tiny models several times slower."""
    return {"OMP_NUM_THREADS": "1"} if cfg.dry else {}


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _py(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def _tail(path: Path, n: int = 2) -> str:
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])[-300:]


def _smi(query: str) -> list[str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        r = subprocess.run([exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [x.strip() for x in r.stdout.splitlines()[0].split(",")] if r.returncode == 0 and r.stdout else []


# --------------------------------------------------------------------------- data


def ensure_data(cfg: KitConfig, log=_log) -> Path:
    """The kit's synthetic data set and mask cache in WORK/data, made once per machine:
    reused while ``kit-data.json`` records the same parameters, else made again."""
    root = Path(cfg.work) / "data"
    want = {"ids": cfg.ids, "size": cfg.synth_size, "seed": cfg.seed, "version": DATA_VERSION}
    marker = root / "kit-data.json"
    try:
        if json.loads(marker.read_text()) == want and (root / "hbseg-cache" / "index.csv").is_file():
            return root
    except (OSError, ValueError):
        pass
    from hbseg.atomic import atomic_write_text
    from hbseg.data.cache import build_cache
    from hbseg.data.synth import SynthConfig, generate_dataset

    shutil.rmtree(root, ignore_errors=True)
    workers = 1 if cfg.dry else None
    t0 = time.monotonic()
    generate_dataset(root, SynthConfig(ids=cfg.ids, size=cfg.synth_size, seed=cfg.seed),
                     workers=workers, progress=False)
    t1 = time.monotonic()
    build_cache(root, workers=workers, progress=False)
    t2 = time.monotonic()
    atomic_write_text(marker, json.dumps(want) + "\n")  # last: a half-made set has no marker
    log(f"data: {2 * cfg.ids} images of {cfg.synth_size} px in {root}: synth {t1 - t0:.0f} s, "
        f"mask cache {t2 - t1:.0f} s")
    return root


def _loaders_for(cfg: KitConfig) -> tuple[str, ...]:
    if cfg.dry:  # one back-end covers every code path of the kit; each costs a process
        return ("dali",)
    return ("baseline", "torch", "dali") + (("dali-cache",) if cfg.device.startswith("cuda") else ())
