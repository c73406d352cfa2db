"""The README's "Use the pipeline in your project" snippet runs as written on a CPU machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Use the pipeline in your project"


def snippet() -> tuple[str, Path]:
    """The first python block of the README's section."""
    path = ROOT / "README.md"
    text = path.read_text()
    if SECTION in text:
        match = re.search(r"```python\n(.*?)```", text.split(SECTION, 1)[1], re.S)
        if match:
            return match.group(1), path
    pytest.fail(f"no {SECTION!r} section with a python block in README.md")


def test_snippet_runs_on_cpu(tmp_path):
    pytest.importorskip("nvidia.dali")
    code, source = snippet()
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp_path), "PYTHONPATH": path}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{source} snippet failed:\n{res.stderr[-3000:]}"
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 4  # 2 epochs x 2 batches of 2 hands
    assert lines[0].startswith("0 (2, 1, 128, 128) torch.float32 (2, 29, 128, 128) torch.uint8")
