"""Typed, frozen settings of an HTML report, saved inside the report folder."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hbseg.errors import ConfigError

__all__ = ["ReportConfig"]


@dataclass(frozen=True)
class ReportConfig:
    """``hbseg-eval --report DIR``. ``None`` means "use the default"."""

    preds: tuple[str, ...]  # submission CSVs, one panel each, in this order
    data: str  # data root (uses train/), a labelled split folder, or a described data set's root
    out: str  # the report folder; replaced whole on success
    ids: tuple[str, ...] | None = None
    fold: int | None = None
    display_size: int = 1024  # longest side of the radiograph shown before zooming in
    quality: int | None = 90  # WebP quality of the radiographs; None: lossless PNG
    workers: int | None = None  # default: every core
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.preds:
            raise ConfigError("a report needs at least one prediction CSV")
        if self.display_size < 64:
            raise ConfigError(f"display_size must be at least 64, got {self.display_size}")
        if self.quality is not None and not 1 <= self.quality <= 100:
            raise ConfigError(f"quality must be 1..100 or None (lossless), got {self.quality}")

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
