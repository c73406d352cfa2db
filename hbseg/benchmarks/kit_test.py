"""The kit's ``test`` step: ``pytest -m gpu`` in a subprocess that keeps every result.

A lent GPU's first run lost most of its test results: pytest was killed at the step's budget
with only ``-q`` dots in its log and no junit written. So here:

- each finished test is on disk as it finishes: ``pytest-reportlog`` writes one JSON line
  per test report and flushes it, so the file read after a kill holds every finished test
  (name, outcome, duration, message) and names the test that was running;
- ``pytest-timeout`` stops any one test after ``KitConfig.test_timeout_s``, so a hang costs
  that test, not the rest of the step;
- pytest runs with ``-v``: ``pytest.log`` names each test as it starts and ends.

Without ``pytest-reportlog`` (a machine that lacks it) the step still runs: outcomes then
come from junit (a run that ended) or the ``-v`` log (a run killed mid-way, no messages),
and ``kit.json`` says so.
"""

from __future__ import annotations

import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

from .kit_base import KitConfig, _Clock, _py, _repo_root, _run, _threads, real_hands_dir

__all__ = ["CaseResult", "PytestReport", "step_test", "read_report_log", "read_junit",
           "read_verbose_log", "pytest_command"]

FAILING = ("failed", "error")
SHOWN_FAILING = 8  # node ids named in the summary line; kit.json lists all of them
MESSAGE_CHARS = 300


@dataclass(frozen=True)
class CaseResult:
    nodeid: str
    outcome: str  # passed, failed, error, skipped, xfailed, xpassed
    duration_s: float = 0.0
    message: str = ""  # first line of the failure, error or skip reason


@dataclass(frozen=True)
class PytestReport:
    cases: tuple[CaseResult, ...]
    source: str  # "report-log", "junit", "verbose log" or "none"
    running: str | None = None  # started, never finished: pytest was killed during it
    finished: bool = False  # the session reached its end

    def count(self, outcome: str) -> int:
        return sum(c.outcome == outcome for c in self.cases)

    @property
    def failing(self) -> list[CaseResult]:
        return [c for c in self.cases if c.outcome in FAILING]


def have_plugin(module: str) -> bool:
    """Whether pytest's subprocess (this interpreter) can load the plugin ``module``."""
    return importlib.util.find_spec(module) is not None


# --------------------------------------------------------------------------- reading


def _first_line(text: str) -> str:
    lines = [x.strip() for x in str(text).splitlines() if x.strip()]
    return lines[0][:MESSAGE_CHARS] if lines else ""


def _longrepr_message(longrepr) -> str:
    """The first line of a serialised report's ``longrepr``: a dict with ``reprcrash`` (an
    exception), a ``[path, line, reason]`` list (a skip) or plain text."""
    if isinstance(longrepr, dict):
        crash = longrepr.get("reprcrash") or {}
        if crash.get("message"):
            return _first_line(crash["message"])
        return _first_line(json.dumps(longrepr.get("reprtraceback", ""))[:MESSAGE_CHARS])
    if isinstance(longrepr, list) and len(longrepr) == 3:
        return _first_line(longrepr[2])
    return _first_line(longrepr or "")


def _phase_outcome(rec: dict) -> str:
    outcome, xfail = rec.get("outcome"), "wasxfail" in rec
    if rec.get("when") == "call":
        if xfail:
            return "xfailed" if outcome == "skipped" else "xpassed"
        return outcome
    # setup and teardown: a failure there is an error, a skip in setup a skip
    return {"failed": "error", "skipped": "skipped"}.get(outcome, "passed")


def read_report_log(path: Path) -> PytestReport | None:
    """Per test, from pytest-reportlog's JSON lines: the worst phase's outcome and message,
    the phases' summed duration. A test with a setup but no teardown line was running when
    pytest stopped. ``None`` when there is no such file."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    order: dict[str, dict] = {}
    finished, running = False, None
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:  # the last line of a killed run may be cut
            continue
        kind = rec.get("$report_type")
        if kind == "SessionFinish":
            finished = True
        elif kind == "CollectReport" and rec.get("outcome") == "failed":
            nodeid = rec.get("nodeid") or "<collection>"
            order[nodeid] = {"outcome": "error", "duration": 0.0,
                             "message": _longrepr_message(rec.get("longrepr")), "done": True}
        elif kind == "TestReport":
            case = order.setdefault(rec["nodeid"], {"outcome": "passed", "duration": 0.0,
                                                    "message": "", "done": False})
            case["duration"] += rec.get("duration") or 0.0
            outcome = _phase_outcome(rec)
            if outcome != "passed" and case["outcome"] not in FAILING:
                case["outcome"] = outcome
                case["message"] = _longrepr_message(rec.get("longrepr"))
            if rec.get("when") == "teardown":
                case["done"] = True
    cases = []
    for nodeid, c in order.items():
        if c["done"]:
            cases.append(CaseResult(nodeid, c["outcome"], round(c["duration"], 3), c["message"]))
        else:
            running = nodeid
    return PytestReport(tuple(cases), "report-log", running, finished)


def read_junit(path: Path) -> PytestReport | None:
    """Per test from a junit XML file, which pytest writes only at the session's end."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    cases = []
    for case in root.iter("testcase"):
        nodeid = f"{case.get('classname', '')}::{case.get('name')}"
        outcome, message = "passed", ""
        for tag, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            el = case.find(tag)
            if el is not None:
                outcome, message = name, _first_line(el.get("message") or el.text or "")
                break
        cases.append(CaseResult(nodeid, outcome, float(case.get("time") or 0.0), message))
    return PytestReport(tuple(cases), "junit", None, True)


_VERBOSE = re.compile(r"^(?P<id>\S.*?::.+?) (?P<out>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
_VERBOSE_START = re.compile(r"^(?P<id>\S+::.*?)\s*$")
_VERBOSE_END = re.compile(r"^=+ .*\b(passed|failed|skipped|errors?|deselected|no tests ran)\b.* =+$")
_VERBOSE_OUTCOMES = {"PASSED": "passed", "FAILED": "failed", "ERROR": "error",
                     "SKIPPED": "skipped", "XFAIL": "xfailed", "XPASS": "xpassed"}


def read_verbose_log(path: Path) -> PytestReport | None:
    """Outcomes only, from ``pytest -v`` lines ``NODEID PASSED …``: what is left of a run
    killed mid-way without pytest-reportlog (messages come only at the session's end)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    order: dict[str, str] = {}
    for line in lines:
        m = _VERBOSE.match(line)
        if m:
            new = _VERBOSE_OUTCOMES[m["out"]]
            if order.get(m["id"]) not in FAILING:  # a teardown ERROR after PASSED counts
                order[m["id"]] = new
    finished = any(_VERBOSE_END.match(x) for x in lines[-5:])
    # -v names a test when it starts and adds the outcome when it ends: a last line with a
    # node id and no outcome is the test pytest was killed in
    last = [x for x in lines if x.strip() and not x.startswith("kit: ")][-1:]
    running = None
    if last and not finished and not _VERBOSE.match(last[0]):
        s = _VERBOSE_START.match(last[0])
        running = s["id"] if s else None
    cases = tuple(CaseResult(k, v) for k, v in order.items())
    return PytestReport(cases, "verbose log", None if finished else running, finished)


def _selected(log: Path) -> int | None:
    """Tests pytest selected, from its ``collected N items / M deselected`` line."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"collected (\d+) items?(?: / (\d+) deselected)?(?: / (\d+) selected)?", text)
    if not m:
        return None
    return int(m[3]) if m[3] else int(m[1]) - int(m[2] or 0)


# --------------------------------------------------------------------------- the step


def _resolve(paths: tuple[str, ...], tests: Path, dry: bool) -> list[str]:
    """Node ids or folders as given, or relative to ``tests/`` (``test_gpu_paths.py::x``)."""
    if not paths:
        # the dry run only proves the plumbing: the GPU tests of one file, collected and skipped
        return [str(tests / "test_gpu_paths.py")] if dry else [str(tests)]
    out = []
    for p in paths:
        file = p.split("::")[0]
        if not (tests.parent / file).exists() and (tests / file).exists():
            p = str(tests / p)
        out.append(p)
    return out


def pytest_command(cfg: KitConfig, d: Path, where: list[str], reportlog: bool,
                   timeout: bool) -> list[str]:
    cmd = _py("pytest", "-v", "-ra", "-p", "no:cacheprovider", f"--junitxml={d / 'junit.xml'}")
    if cfg.test_marker:
        cmd += ["-m", cfg.test_marker]
    if cfg.test_keyword:
        cmd += ["-k", cfg.test_keyword]
    if reportlog:
        cmd.append(f"--report-log={d / 'report-log.jsonl'}")
    if timeout and cfg.test_timeout_s > 0:
        cmd.append(f"--timeout={cfg.test_timeout_s:g}")
    if cfg.test_workers > 1 and have_plugin("xdist"):
        # each GPU test spends most of its seconds starting DALI and CUDA: three at a time
        # took 41 tests through in 219 s on the H200 (2026-12-04), one at a time about 430
        cmd += ["-n", str(cfg.test_workers)]
    return cmd + where


def _short(nodeid: str) -> str:
    return nodeid.removeprefix("tests/")


def summary_line(rep: PytestReport, selected: int | None, secs: float, rc: int, n_hands: int,
                 degraded: str) -> str:
    counts = (f"{rep.count('passed')} passed, {rep.count('failed')} failed, "
              f"{rep.count('error')} errors, {rep.count('skipped')} skipped")
    xs = rep.count("xfailed") + rep.count("xpassed")
    if xs:
        counts += f", {xs} xfail/xpass"
    line = (f"{counts}{'' if selected is None else f' of {selected}'} in {secs:.0f} s "
            f"(rc {rc}, real hands {n_hands})")
    if rc == 124:
        line += "; budget ended" + (f" during {_short(rep.running)}" if rep.running else "")
    bad = rep.failing
    if bad:
        names = [_short(c.nodeid) for c in bad[:SHOWN_FAILING]]
        more = len(bad) - len(names)
        line += "; failing: " + ", ".join(names) + (f" +{more} more in kit.json" if more else "")
    if degraded:
        line += f"; {degraded}"
    return line


def step_test(cfg: KitConfig, d: Path, clock: _Clock, notes: dict) -> tuple[bool, str]:
    tests = _repo_root() / "tests"
    if not tests.is_dir():
        return False, f"no tests folder at {tests} (run from a checkout)"
    hands = real_hands_dir()
    n_hands = len(list(hands.glob("*.png"))) if hands.is_dir() else 0
    env = {"HBSEG_REAL_HANDS": str(hands)} if n_hands else {}
    reportlog, timeout = have_plugin("pytest_reportlog"), have_plugin("pytest_timeout")
    degraded = []
    if not reportlog:
        degraded.append("no pytest-reportlog: junit and the -v log only")
    if not timeout:
        degraded.append("no pytest-timeout: no per-test timeout")
    cmd = pytest_command(cfg, d, _resolve(cfg.test_paths, tests, cfg.dry), reportlog, timeout)
    rc, secs = _run(cmd, d / "pytest.log", clock.left(), {**env, **_threads(cfg)}, notes["commands"])
    rep = (read_report_log(d / "report-log.jsonl") if reportlog else None) \
        or read_junit(d / "junit.xml") or read_verbose_log(d / "pytest.log") \
        or PytestReport((), "none")
    selected = _selected(d / "pytest.log")
    notes["pytest"] = {
        "source": rep.source, "plugins": {"pytest_reportlog": reportlog, "pytest_timeout": timeout},
        "degraded": "; ".join(degraded) or None, "rc": rc, "finished": rep.finished,
        "timed_out": rc == 124, "running_at_kill": rep.running, "selected": selected,
        "per_test_timeout_s": cfg.test_timeout_s if timeout else None,
        "counts": {k: rep.count(k) for k in ("passed", "failed", "error", "skipped", "xfailed",
                                             "xpassed")},
        "failing": [asdict(c) for c in rep.failing],
        "cases": [asdict(c) for c in rep.cases],
    }
    line = summary_line(rep, selected, secs, rc, n_hands, "; ".join(degraded))
    return rc == 0, line
