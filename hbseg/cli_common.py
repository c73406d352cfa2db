"""What every hbseg command shares: one-line errors, ``--debug`` for tracebacks."""

from __future__ import annotations

import functools
import os
import sys

import click

from hbseg.errors import HbsegError

__all__ = ["debug_option", "run_cli", "main_entry"]

debug_option = click.option(
    "--debug", is_flag=True, default=False, help="Show the full Python traceback on errors."
)


def _one_line(err: BaseException) -> str:
    if isinstance(err, HbsegError):
        return str(err)
    if isinstance(err, OSError) and err.filename:
        return f"{err.filename}: {err.strerror or err}"
    return f"{type(err).__name__}: {err}"


def run_cli(command: click.Command) -> None:
    """Run a click command; known failures become ``error: <file>: <problem>`` and exit 1."""
    debug = "--debug" in sys.argv or os.environ.get("HBSEG_DEBUG") == "1"
    try:
        command.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
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


def main_entry(command: click.Command):
    """Wrap a click command into a console-script entry point."""

    @functools.wraps(command)
    def entry() -> None:
        run_cli(command)

    return entry
