"""Typed, frozen settings for inference, evaluation and ensembling, saved beside the outputs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from hbseg.atomic import atomic_write_text
from hbseg.errors import ConfigError

__all__ = ["InferConfig", "EvalConfig", "EnsembleConfig", "config_path", "save_config"]


def config_path(out: str | Path) -> Path:
    """``submission.csv`` → ``submission.csv.config.json``."""
    out = Path(out)
    return out.with_name(out.name + ".config.json")


def save_config(cfg, path: str | Path, **extra) -> Path:
    doc = {"kind": type(cfg).__name__, **cfg.to_dict(), **extra}
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return Path(path)


class _Base:
    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


@dataclass(frozen=True)
class InferConfig(_Base):
    """``hbseg-infer``. ``None`` means "use the default"."""

    checkpoints: tuple[str, ...]
    data: str
    out: str
    weights: tuple[float, ...] | None = None
    device: str = "auto"
    batch_size: int = 4
    window: int | None = None
    stride: int | None = None  # default: window // 2
    sigma: float = 0.125  # fraction of the window
    tta_hflip: bool = False
    scales: tuple[float, ...] = (1.0,)
    threshold: float = 0.5
    thresholds_file: str | None = None  # {class: thr}; classes left out use ``threshold``
    min_size: int = 0
    min_sizes_file: str | None = None  # {class: pixels}; classes left out use ``min_size``
    class_weights_file: str | None = None  # {class: [weight per checkpoint]}; others: ``weights``
    save_probs: str | None = None
    overlays: str | None = None
    overlay_max_side: int = 1024
    loader: str = "auto"  # auto | dali | cv2
    threads: int = 2
    amp: bool | None = None  # default: on for CUDA
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.checkpoints:
            raise ConfigError("give at least one --checkpoint")
        if self.weights is not None and len(self.weights) != len(self.checkpoints):
            raise ConfigError(f"--weights has {len(self.weights)} values for "
                              f"{len(self.checkpoints)} checkpoints")
        if self.class_weights_file is not None and len(self.checkpoints) < 2:
            raise ConfigError("--class-weights blends an ensemble: give two or more --checkpoint")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.stride is not None and self.window is None:
            raise ConfigError("--stride needs --window")
        if self.window is not None:
            stride = self.window // 2 if self.stride is None else self.stride
            if self.window < 32 or not 1 <= stride <= self.window:
                raise ConfigError(f"need --window >= 32 and 1 <= --stride <= --window, got "
                                  f"{self.window} and {stride}")
        if not self.sigma > 0:
            raise ConfigError(f"--sigma must be positive, got {self.sigma}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"--threshold must be in (0, 1), got {self.threshold}")
        if self.min_size < 0:
            raise ConfigError(f"--min-size must be >= 0, got {self.min_size}")
        if not self.scales or any(not s > 0 for s in self.scales):
            raise ConfigError(f"--scales must be positive numbers, got {self.scales}")


@dataclass(frozen=True)
class EvalConfig(_Base):
    """``hbseg-eval``: Dice of a submission against the JSON ground truth."""

    pred: str
    data: str
    out: str | None = None  # .json or .csv; default: <pred>.eval.json
    ids: tuple[str, ...] | None = None
    fold: int | None = None
    workers: int | None = None  # default: every core
    progress: bool = True

    def __post_init__(self) -> None:
        if self.out is not None and Path(self.out).suffix.lower() not in (".json", ".csv"):
            raise ConfigError(f"--out must end in .json or .csv, got {self.out}")

    @property
    def out_path(self) -> Path:
        return Path(self.out) if self.out else Path(self.pred).with_suffix(".eval.json")


@dataclass(frozen=True)
class EnsembleConfig(_Base):
    """``hbseg-ensemble``: hard vote of CSVs, or soft vote of saved probability maps."""

    out: str
    csvs: tuple[str, ...] = ()
    probs: tuple[str, ...] = ()
    min_votes: int | None = None  # default: a majority
    weights: tuple[float, ...] | None = None
    data: str | None = None  # image sizes from its PNG headers; a described set: its classes too
    size: tuple[int, int] = (2048, 2048)  # otherwise every image is this H x W
    threshold: float = 0.5
    thresholds_file: str | None = None
    min_size: int = 0
    min_sizes_file: str | None = None
    class_weights_file: str | None = None  # soft vote: {class: [weight per member]}
    progress: bool = True

    def __post_init__(self) -> None:
        if bool(self.csvs) == bool(self.probs):
            raise ConfigError("give either submission CSVs (hard vote) or --probs folders (soft vote)")
        n = len(self.csvs) or len(self.probs)
        if self.csvs and (self.weights is not None or self.thresholds_file is not None
                          or self.class_weights_file is not None):
            raise ConfigError("--weights, --class-weights and --thresholds apply to a soft vote "
                              "of --probs folders")
        if self.probs and self.min_votes is not None:
            raise ConfigError("--min-votes applies to a hard vote of CSVs")
        if n < 2:
            raise ConfigError(f"an ensemble needs at least 2 members, got {n}")
        if self.min_votes is not None and not 1 <= self.min_votes <= n:
            raise ConfigError(f"--min-votes must be between 1 and {n}, got {self.min_votes}")
        if self.weights is not None and len(self.weights) != n:
            raise ConfigError(f"--weights has {len(self.weights)} values for {n} members")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"--threshold must be in (0, 1), got {self.threshold}")
        if self.min_size < 0:
            raise ConfigError(f"--min-size must be >= 0, got {self.min_size}")

    @property
    def votes_needed(self) -> int:
        n = len(self.csvs)
        return self.min_votes if self.min_votes is not None else n // 2 + 1
