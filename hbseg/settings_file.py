"""Read a settings file (a run config, a data set description, per-class values) as a mapping.

One reader, so every file hbseg takes from a user fails the same way: a one-line
:class:`~hbseg.errors.ConfigError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import json
from pathlib import Path

from hbseg.errors import ConfigError

__all__ = ["read_mapping"]


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_mapping(path: str | Path, what: str) -> dict:
    """The mapping in ``path``: JSON for ``.json``, YAML (which JSON also parses as) otherwise.

    ``what`` names the file in errors ("run config", "thresholds file", …).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{what} not found", path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {what} ({_first_line(e)})", path) from None
    if path.suffix.lower() != ".json":
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or _first_line(e)
            raise ConfigError(f"invalid YAML{where}: {problem}", path) from None
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}",
                              path) from None
    if not isinstance(doc, dict):
        got = "empty" if doc is None else f"a {type(doc).__name__}"
        raise ConfigError(f"{what} is {got}; expected an object of names to values", path)
    return doc
