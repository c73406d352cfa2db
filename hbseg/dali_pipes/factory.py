"""Moved to :mod:`hbseg.loaders` (above both back-end families); importable from here, with a
DeprecationWarning, until the next release."""

from __future__ import annotations

import importlib
import warnings

_MOVED = ("LOADERS", "build_loader")


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"hbseg.dali_pipes.factory.{name} moved to hbseg.loaders.{name}",
                  DeprecationWarning, stacklevel=2)
    # by name, at use: the DALI package itself never depends on the torch back-ends
    return getattr(importlib.import_module("hbseg.loaders"), name)
