"""The README's "Use the pipeline in your project" snippets run as written on a CPU machine:
the loader over a mask cache, then (continuing it) the own-graph route."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Use the pipeline in your project"


def snippets() -> tuple[list[str], Path]:
    """The python blocks of the README's section, in order."""
    path = ROOT / "README.md"
    text = path.read_text()
    if SECTION in text:
        section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
        blocks = re.findall(r"```python\n(.*?)```", section, re.S)
        if len(blocks) >= 2:
            return blocks, path
    pytest.fail(f"no {SECTION!r} section with two python blocks in README.md")


def test_snippets_run_on_cpu(tmp_path):
    pytest.importorskip("nvidia.dali")
    blocks, source = snippets()
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp_path), "PYTHONPATH": path}
    res = subprocess.run([sys.executable, "-c", "\n".join(blocks[:2])], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{source} snippets failed:\n{res.stderr[-3000:]}"
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 8  # each block: 2 epochs x 2 batches of 2 hands
    assert lines[0].startswith("0 (2, 1, 128, 128) torch.float32 (2, 29, 128, 128) torch.uint8")
    assert lines[4] == "0 (2, 1, 96, 128) (2, 29, 96, 128)"  # the own graph, (H, W) = (96, 128)
    assert lines[7].startswith("1 ")
