"""Read a settings file (a run config, a data set description, per-class values) as a mapping,
and the text and JSON of any file a user gives hbseg.

One reader, so every file hbseg takes from a user fails the same way: a one-line
:class:`~hbseg.errors.ConfigError` (or the error class the caller names) naming the file
and what is wrong with it, including what Python's parsers raise past their limits (JSON
nested too deeply, an integer of more than 4300 digits). Text may be UTF-8, with or without
a byte-order mark, or UTF-16/UTF-32 with one (Windows editors write both).
"""

from __future__ import annotations

import codecs
import json
import re
import sys
from pathlib import Path

from hbseg.errors import ConfigError

__all__ = ["read_mapping", "read_text", "text_encoding", "parse_json"]

# byte-order marks, longest first (UTF-32's LE mark begins with UTF-16's)
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_mapping(path: str | Path, what: str) -> dict:
    """The mapping in ``path``: JSON for ``.json``, YAML (which JSON also parses as) otherwise.

    ``what`` names the file in errors ("run config", "thresholds file", …).
    """
    path = Path(path)
    text = read_text(path, what)
    if path.suffix.lower() != ".json":
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or _first_line(e)
            raise ConfigError(f"invalid YAML{where}: {problem}", path) from None
        except (RecursionError, ValueError) as e:  # nested too deeply, an integer too long
            raise ConfigError(f"invalid YAML: {_parse_limit(text, e)}", path) from None
    else:
        doc = parse_json(text, path)
    if not isinstance(doc, dict):
        got = "empty" if doc is None else f"a {type(doc).__name__}"
        raise ConfigError(f"{what} is {got}; expected an object of names to values", path)
    return doc


def text_encoding(path: str | Path) -> str:
    """The encoding to read ``path`` with: UTF-16 or UTF-32 when it starts with their
    byte-order mark (Windows "Unicode" text), else UTF-8 (a UTF-8 mark skipped)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return "utf-8-sig"  # the caller's open names the problem
    return next((enc for bom, enc in _BOMS if head.startswith(bom)), "utf-8-sig")


def read_text(path: str | Path, what: str, error: type[ConfigError] | None = None) -> str:
    """The text of a file a user gives hbseg, or one line naming it and the fault.

    UTF-8 (with or without a byte-order mark), and UTF-16/UTF-32 with one, are decoded;
    other bytes, and NUL characters (UTF-16 saved without a mark), are errors. ``error``:
    the HbsegError subclass to raise (``ConfigError`` by default)."""
    from hbseg.regular_files import check_regular

    error = error or ConfigError
    path = Path(path)
    try:
        check_regular(path, what)  # a FIFO would block the read below forever
    except OSError:
        pass  # missing or unreadable: the read below names it
    encoding = text_encoding(path)
    try:
        text = path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise error(f"{what} not found", path) from None
    except UnicodeDecodeError as e:
        raise error(f"cannot read {what}: not {encoding.replace('-sig', '').upper()} text "
                    f"(byte 0x{e.object[e.start]:02x} at offset {e.start}); save it as UTF-8",
                    path) from None
    except OSError as e:
        raise error(f"cannot read {what} ({_first_line(e)})", path) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise error(f"{what} holds NUL characters (line {line}): UTF-16 without a byte-order "
                    "mark, or not text at all? Save it as UTF-8", path)
    return text


def parse_json(text: str, path: str | Path, error: type[ConfigError] | None = None):
    """``json.loads(text)``; any failure is one line naming ``path`` and where in it:
    invalid JSON, nesting too deep for Python's parser, an integer too long to convert."""
    error = error or ConfigError
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", path) from None
    except (RecursionError, ValueError) as e:
        raise error(f"invalid JSON: {_parse_limit(text, e)}", path) from None


def _line_col(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    column = pos - text.rfind("\n", 0, pos)
    return f"line {line} column {column}"


def _parse_limit(text: str, e: Exception) -> str:
    """What a parser's RecursionError or integer-size ValueError means, with its place."""
    if isinstance(e, RecursionError):
        depth, at = 0, (0, 0)
        for m in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text):
            c = m.group()[0]
            if c in "[{":
                depth += 1
                at = max(at, (depth, -m.start()))
            elif c in "]}":
                depth -= 1
        if at[0] > 1:
            return (f"nested {at[0]} levels deep (at {_line_col(text, -at[1])}), too deep to "
                    "read")
        return "nested too deeply to read"
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    if limit and "digits" in str(e):
        m = re.search(rf"(?:^|[\[:,\s])-?(\d{{{limit + 1},}})", text)
        where = f" at {_line_col(text, m.start(1))}" if m else ""
        n = len(m.group(1)) if m else None
        return (f"an integer of {n or 'more than ' + str(limit)} digits{where}; Python reads "
                f"at most {limit}")
    return _first_line(e)
