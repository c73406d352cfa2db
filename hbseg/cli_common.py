"""What every hbseg command shares: one-line errors, ``--debug`` for tracebacks."""

from __future__ import annotations

import functools
import math
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

import click

from hbseg.errors import HbsegError

__all__ = ["debug_option", "run_cli", "main_entry", "FiniteFloat", "check_out_file", "Terminated"]

debug_option = click.option(
    "--debug", is_flag=True, default=False, help="Show the full Python traceback on errors."
)


def _one_line(err: BaseException) -> str:
    if isinstance(err, HbsegError):
        return str(err)
    if isinstance(err, OSError) and err.filename:
        return f"{err.filename}: {err.strerror or err}"
    return f"{type(err).__name__}: {err}"


class FiniteFloat(click.FloatRange):
    """``click.FloatRange`` that also refuses nan and inf (a FloatRange lets nan through,
    since every comparison with nan is false)."""

    name = "finite float"

    def convert(self, value, param, ctx):
        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


def check_out_file(out, inputs, option: str = "--out") -> None:
    """Usage errors for an output file that is one of the inputs (writing it would destroy
    the input, a checkpoint or a prediction CSV, that the user still needs) or that lies in
    a folder that does not exist (most often a typo, found before any work is done)."""
    if out is None:
        return
    out = Path(out)
    if not out.parent.is_dir():
        raise click.BadParameter(f"the folder {out.parent} does not exist; create it first or "
                                 "fix the path", param_hint=f"'{option}'")
    for src in inputs:
        if src is None:
            continue
        src = Path(src)
        same = out.resolve() == src.resolve()
        if not same and out.exists() and src.exists():
            same = os.path.samefile(out, src)
        if same:
            raise click.BadParameter(f"{out} is also an input ({src}); writing it would destroy "
                                     "that input, choose another file", param_hint=f"'{option}'")


def _usable_config_dirs() -> None:
    """With HOME missing or read-only, matplotlib (and anything following XDG) prints
    warnings about its config/cache folder on every run; point them at a temporary
    folder instead, so the one error line stays the only line."""
    home = Path(os.path.expanduser("~"))
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    probe = config if config.exists() else (home if home.exists() else None)
    if probe is not None and os.access(probe, os.W_OK | os.X_OK):
        return
    base = Path(tempfile.gettempdir()) / f"hbseg-{os.getuid()}"
    try:
        base.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return
    os.environ.setdefault("MPLCONFIGDIR", str(base / "matplotlib"))
    os.environ.setdefault("XDG_CACHE_HOME", str(base / "cache"))
    os.environ.setdefault("XDG_CONFIG_HOME", str(base / "config"))


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's time limit, ``kill``, a container stopping), raised in the
    main thread like Ctrl-C, so that every ``finally`` runs: no temporary output is left
    behind, and training says how to resume."""


def _terminate_like_ctrl_c():
    """SIGTERM becomes :class:`Terminated` in this process (a second one kills at once);
    a forked worker that inherits the handler dies of the signal as it would have.
    Returns a function that puts the previous handlers back."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGXFSZ)}

    def restore() -> None:
        for s, h in previous.items():
            if h is not None:
                signal.signal(s, h)

    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # handlers can only be set in the main thread
    main_pid = os.getpid()

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if os.getpid() != main_pid:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    if previous[signal.SIGTERM] is signal.SIG_DFL:  # else someone (torchrun) handles it
        signal.signal(signal.SIGTERM, handler)
    # past the file size limit (ulimit -f), write() then fails with EFBIG, which names the
    # file (hbseg.atomic), instead of the process being killed with a core dump
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return restore


def _usage_error(e: click.UsageError) -> None:
    """A usage error in one line, ``Error: <problem>``, as every hbseg command gives it
    (click's own block adds the usage and a hint around it); help asked for by giving no
    arguments is shown as it is."""
    if type(e).__name__ == "NoArgsIsHelpError":
        e.show()
    else:
        click.echo(f"Error: {e.format_message()}", err=True)
    sys.exit(e.exit_code)


def run_cli(command: click.Command) -> None:
    """Run a click command; known failures become ``error: <file>: <problem>`` and exit 1,
    usage errors ``Error: <problem>`` and exit 2, Ctrl-C exit 130 and SIGTERM exit 143."""
    debug = "--debug" in sys.argv or os.environ.get("HBSEG_DEBUG") == "1"
    from hbseg.lifetime import DIE_WITH_PARENT_ENV, die_with_parent

    if os.environ.get(DIE_WITH_PARENT_ENV) == "1":
        die_with_parent()
    _usable_config_dirs()
    restore = _terminate_like_ctrl_c()
    try:
        _run(command, debug)
    finally:
        restore()  # for a caller that goes on (tests run commands in-process)


def _run(command: click.Command, debug: bool) -> None:
    try:
        command.main(standalone_mode=False)
    except click.exceptions.Abort as e:  # click turns KeyboardInterrupt into Abort
        if isinstance(e.__cause__, Terminated):
            click.echo("Terminated.", err=True)
            sys.exit(143)
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.UsageError as e:
        _usage_error(e)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except Terminated:
        click.echo("Terminated.", err=True)
        sys.exit(143)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except (HbsegError, OSError, ValueError, RuntimeError) as e:
        if debug:
            raise
        click.echo(f"{getattr(e, 'label', 'error')}: {_one_line(e)}", err=True)
        sys.exit(getattr(e, "exit_code", 1))
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - a bug, but still one line without --debug
        if debug:
            raise
        click.echo(f"error: unexpected {type(e).__name__}: {e} (a bug in hbseg; run again with "
                   "--debug for the traceback and report it)", err=True)
        sys.exit(1)


def main_entry(command: click.Command):
    """Wrap a click command into a console-script entry point."""

    @functools.wraps(command)
    def entry() -> None:
        run_cli(command)

    return entry
