"""A benchmark worker dies with hbseg-bench, and an hbseg command started by the GPU kit
(HBSEG_DIE_WITH_PARENT=1) with the kit: a command killed at its time limit must not leave a
measurement or a training holding the GPU and the cores the next command measures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

# the child: a benchmark worker's first call, or any hbseg command the GPU kit starts
WORKER = ("from hbseg.lifetime import die_with_parent; die_with_parent(); "
          "import time; print('ready', flush=True); time.sleep(120)")
COMMAND = ("import os, time, click; os.environ['HBSEG_DIE_WITH_PARENT'] = '1'; "
           "from hbseg.cli_common import run_cli; "
           "run_cli(click.Command('x', callback=lambda: (print('ready', flush=True), time.sleep(120))))")

PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "ready"
print(child.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its reaper is gone for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
@pytest.mark.parametrize("child_code", [WORKER, COMMAND], ids=["bench-worker", "kit-command"])
def test_child_dies_when_its_parent_is_killed(child_code):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, child_code], stdout=subprocess.PIPE,
                              text=True)
    try:
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)  # no cleanup code of the parent runs
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the worker outlived its killed parent"
    finally:
        parent.kill()
