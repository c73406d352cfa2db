"""Where tests find inputs that do not live in git: the real radiographs.

Looked up in order: ``$HBSEG_REAL_HANDS`` (when set, only there), the ignored in-tree folder
``tests/data/real-hands`` (what travels to a GPU machine when carried), and
``../shared/data/real-hands`` beside the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REAL_HANDS_ENV", "real_hands_candidates", "real_hands_dir"]

REAL_HANDS_ENV = "HBSEG_REAL_HANDS"
_TESTS = Path(__file__).resolve().parent


def real_hands_candidates() -> list[Path]:
    env = os.environ.get(REAL_HANDS_ENV)
    if env:  # an explicit choice: a wrong path must not fall back to another folder
        return [Path(env)]
    return [_TESTS / "data" / "real-hands", _TESTS.parents[1] / "shared" / "data" / "real-hands"]


def real_hands_dir() -> Path | None:
    """The first candidate folder that holds PNGs, or None."""
    for folder in real_hands_candidates():
        if folder.is_dir() and any(folder.glob("*.png")):
            return folder
    return None
