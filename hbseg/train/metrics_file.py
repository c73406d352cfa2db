"""A run's ``metrics.jsonl``: one JSON record per finished epoch, appended as it ends."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["read_metrics"]


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl, in order; ``[]`` when it is missing or unreadable.

    A line that is not a whole JSON object (one cut short by a kill, or still being
    written by a running fold) is skipped.
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return []
    records = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records
