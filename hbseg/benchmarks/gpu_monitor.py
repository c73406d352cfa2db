"""GPU utilisation and memory, sampled every 100 ms in the background while a benchmark runs.

Back-ends, first that works: NVML through ``pynvml`` (in-process, cheap), else one
long-running ``nvidia-smi --query-gpu … -lms 100`` whose output is read through a pty
(so each line arrives as it is printed), else nothing: on a machine without a GPU the
monitor is a no-op and ``summary`` returns ``None``.

Memory is the device's used memory as the driver reports it, so it includes what DALI
allocates outside torch's caching allocator (and anything another process holds).
The ``nvidia-smi`` process is a child of ours: its pid is in ``pids`` so CPU accounting
can leave it out (see ``cpu_time.ProcessTreeClock(exclude=…)``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time

__all__ = ["GpuMonitor"]


class GpuMonitor:
    """``with GpuMonitor(device) as mon: …``; then ``mon.summary(t0, t1)`` for a window
    of ``time.perf_counter()`` values."""

    def __init__(self, device: str = "cuda", interval: float = 0.1):
        self.device = str(device)
        self.interval = float(interval)
        self.samples: list[tuple[float, float, float]] = []  # (perf_counter, util %, used GiB)
        self.backend: str | None = None
        self.pids: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self._fd: int | None = None

    # -- which GPU -------------------------------------------------------------------
    def _torch_index(self) -> int | None:
        if not self.device.startswith("cuda"):
            return None
        try:
            import torch

            if not torch.cuda.is_available():
                return None
            return torch.device(self.device).index or 0
        except Exception:  # noqa: BLE001
            return None

    def _physical(self, index: int) -> tuple[str | None, str]:
        """(uuid, nvidia-smi id) of torch's device ``index``."""
        uuid = None
        try:
            import torch

            u = getattr(torch.cuda.get_device_properties(index), "uuid", None)
            if u is not None:
                uuid = str(u)
                uuid = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
        except Exception:  # noqa: BLE001
            pass
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        smi_id = ids[index] if index < len(ids) else str(index)
        return uuid, (uuid or smi_id)

    # -- back-ends -------------------------------------------------------------------
    def _start_nvml(self, index: int) -> bool:
        try:
            import pynvml

            pynvml.nvmlInit()
            uuid, _ = self._physical(index)
            try:
                handle = pynvml.nvmlDeviceGetHandleByUUID(uuid) if uuid else None
            except pynvml.NVMLError:
                handle = None
            if handle is None:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetUtilizationRates(handle)
        except Exception:  # noqa: BLE001 - no pynvml, no driver: try the next back-end
            return False

        def poll() -> None:
            while not self._stop.is_set():
                try:
                    u = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
                    m = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**30
                    self.samples.append((time.perf_counter(), float(u), float(m)))
                except Exception:  # noqa: BLE001
                    pass
                self._stop.wait(self.interval)

        self.backend = "nvml"
        self._thread = threading.Thread(target=poll, name="gpu-monitor", daemon=True)
        self._thread.start()
        return True

    def _start_smi(self, index: int) -> bool:
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return False
        import pty

        _, smi_id = self._physical(index)
        master, slave = pty.openpty()  # a terminal: nvidia-smi flushes every line
        try:
            self._proc = subprocess.Popen(
                [exe, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 "-i", smi_id, "-lms", str(max(1, int(self.interval * 1000)))],
                stdout=slave, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, close_fds=True,
            )
        except OSError:
            os.close(master)
            os.close(slave)
            return False
        os.close(slave)
        self._fd = master
        self.pids = [self._proc.pid]

        def read() -> None:
            buf = b""
            while not self._stop.is_set():
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                now = time.perf_counter()
                for line in lines:
                    parts = line.decode(errors="replace").strip().split(",")
                    try:
                        self.samples.append((now, float(parts[0]), float(parts[1]) / 1024))
                    except (ValueError, IndexError):
                        continue

        self.backend = "nvidia-smi"
        self._thread = threading.Thread(target=read, name="gpu-monitor", daemon=True)
        self._thread.start()
        return True

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> GpuMonitor:
        index = self._torch_index()
        if index is not None and not self._start_nvml(index):
            self._start_smi(index)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def __enter__(self) -> GpuMonitor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- results ---------------------------------------------------------------------
    def summary(self, t0: float | None = None, t1: float | None = None) -> dict | None:
        """Mean and max utilisation (%) and peak used memory (GiB) between t0 and t1."""
        if self.backend is None:
            return None
        lo = -float("inf") if t0 is None else t0
        hi = float("inf") if t1 is None else t1
        window = [s for s in list(self.samples) if lo <= s[0] <= hi]
        if not window:
            return {"backend": self.backend, "samples": 0, "util_mean": None, "util_max": None,
                    "mem_used_peak_gb": None}
        utils = [s[1] for s in window]
        return {
            "backend": self.backend,
            "samples": len(window),
            "util_mean": round(sum(utils) / len(utils), 1),
            "util_max": max(utils),
            "mem_used_peak_gb": round(max(s[2] for s in window), 2),
        }
