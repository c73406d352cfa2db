"""Typed errors raised at hbseg's boundaries; every one names the file it is about."""

from __future__ import annotations

from pathlib import Path

__all__ = ["HbsegError", "DataError", "ConfigError", "CheckpointError"]


class HbsegError(Exception):
    """Base error. ``str(err)`` is one line: ``<path>: <problem>`` when a path is known."""

    def __init__(self, problem: str, path: str | Path | None = None):
        self.problem = problem
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)

    def __reduce__(self):
        # keep problem and path apart across process pools (worker errors are re-raised here)
        return (type(self), (self.problem, self.path))


class DataError(HbsegError):
    """A data file or folder is missing, unreadable or malformed."""


class ConfigError(HbsegError):
    """Settings that cannot work together, or a settings file that is malformed."""


class CheckpointError(HbsegError):
    """A checkpoint that is truncated, from another model, or not an hbseg checkpoint."""
