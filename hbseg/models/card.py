"""What a checkpoint says about its model, so inference needs nothing but the path."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from hbseg.data.classes import CLASSES

__all__ = ["ModelCard"]


@dataclass(frozen=True)
class ModelCard:
    arch: str
    encoder: str
    in_channels: int = 1
    classes: int = len(CLASSES)
    class_names: tuple[str, ...] = CLASSES
    normalize: dict = field(default_factory=lambda: {"mean": 0.485, "std": 0.229})
    clahe: dict = field(default_factory=lambda: {"p": 1.0, "clip_limit": 2.0, "tile_grid": [8, 8]})
    size: int = 512  # training output side
    crop: int | None = None  # training crop window on the original image, if any
    model_kwargs: dict = field(default_factory=dict)
    # the data set description it was trained on (hbseg.data.spec); None: the hands
    dataset: dict | None = None
    # hand ROI crop margin and canonical hand (hbseg.dali_pipes.roi); inference applies them
    roi_margin: float | None = None
    canonical_hand: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelCard:
        d = dict(d)
        d["class_names"] = tuple(d.get("class_names", CLASSES))
        return cls(**d)
