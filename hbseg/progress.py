"""Progress bars: shown on a terminal, hidden in logs, pipes and CI."""

from __future__ import annotations

__all__ = ["bar_disabled"]


def bar_disabled(enabled: bool = True) -> bool | None:
    """tqdm's ``disable`` for a bar the caller wants: ``None`` lets tqdm hide it when stderr
    is not a terminal, so errors stay the only lines a script or CI log sees."""
    return None if enabled else True
