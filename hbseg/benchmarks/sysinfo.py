"""What machine a benchmark ran on: CPU, cores, memory, GPU and library versions.

``machine_info(gpu=True)`` initialises CUDA to read the GPU's name. The benchmark calls
it in a subprocess so that the parent process never holds a CUDA context (which would
take GPU memory during every measurement).
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

__all__ = ["cpu_model", "allowed_cpus", "machine_info", "library_versions", "relevant_env"]


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else whatever platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def allowed_cpus() -> list[int]:
    """Cores this process may run on (its affinity mask), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def _mem_total_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict:
    import hbseg

    out = {"python": sys.version.split()[0], "hbseg": hbseg.__version__}
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except ImportError:
        out["torch"] = None
    try:
        import nvidia.dali as dali

        out["dali"] = dali.__version__
    except ImportError:
        out["dali"] = None
    out["segmentation_models_pytorch"] = _version("segmentation-models-pytorch")
    out["opencv"] = _version("opencv-python-headless") or _version("opencv-python")
    out["numpy"] = _version("numpy")
    return out


def _gpu_info() -> list[dict]:
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        gpus = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({
                "index": i,
                "name": p.name,
                "memory_gb": round(p.total_memory / 2**30, 1),
                "capability": f"{p.major}.{p.minor}",
                "multiprocessors": p.multi_processor_count,
            })
        return gpus
    except Exception:  # noqa: BLE001 - a broken driver must not stop the benchmark
        return []


def _driver_version() -> str | None:
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


_ENV_KEYS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
             "PYTORCH_CUDA_ALLOC_CONF", "DALI_AFFINITY_MASK", "NVIDIA_TF32_OVERRIDE")


def relevant_env() -> dict:
    """Environment variables that change how fast things run, where set."""
    return {k: os.environ[k] for k in _ENV_KEYS if k in os.environ}


def machine_info(gpu: bool = True) -> dict:
    """CPU model and core counts, memory, GPUs (name, memory), driver and library versions."""
    cores = allowed_cpus()
    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_allowed": len(cores),
        "memory_gb": _mem_total_gb(),
        "platform": platform.platform(),
        "gpus": _gpu_info() if gpu else [],
        "gpu_name": None,
        "driver": _driver_version() if gpu else None,
        "versions": library_versions(),
        "env": relevant_env(),
    }
    if info["gpus"]:
        info["gpu_name"] = info["gpus"][0]["name"]
    return info
