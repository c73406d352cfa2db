"""``TuneConfig``: what ``hbseg-tune`` searches, saved in its report."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from hbseg.errors import ConfigError

__all__ = ["TuneConfig", "DEFAULT_THRESHOLDS"]

DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 … 0.95


@dataclass(frozen=True)
class TuneConfig:
    """``oof``: one OOF folder per model (several: per-class soft-vote weights are tuned).
    ``min_sizes``: candidate minimum object sizes in pixels; ``None`` picks a grid from the
    image area. ``weight_step``: weights are searched on the simplex in these steps."""

    oof: tuple[str, ...]
    out: str
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    default_threshold: float = 0.5  # the untuned baseline, always a candidate
    min_sizes: tuple[int, ...] | None = None
    weight_step: float = 0.1
    tune_thresholds: bool = True
    tune_min_sizes: bool = True
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.oof:
            raise ConfigError("give at least one OOF folder")
        if len(set(self.oof)) != len(self.oof):
            raise ConfigError("the same OOF folder is given twice")
        bad = [t for t in (*self.thresholds, self.default_threshold)
               if not 0.0 < t < 1.0 or math.isnan(t)]
        if bad:
            raise ConfigError(f"thresholds must be in (0, 1), got {bad[0]}")
        if self.min_sizes is not None and (not self.min_sizes or min(self.min_sizes) < 0):
            raise ConfigError(f"minimum sizes must be >= 0, got {self.min_sizes}")
        if not 0.0 < self.weight_step <= 1.0 or abs(1 / self.weight_step - round(1 / self.weight_step)) > 1e-6:
            raise ConfigError(f"--weight-step must divide 1 (0.1, 0.125, 0.25, ...), got {self.weight_step}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {self.device!r}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
