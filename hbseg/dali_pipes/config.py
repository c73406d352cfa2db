"""Typed, frozen settings for the data pipelines, shared by every loader back-end.

``AugmentConfig`` uses albumentations-style ranges so the DALI graph and the plain
DataLoader baseline are driven by the same numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from hbseg.data.classes import NUM_CLASSES

__all__ = ["AugmentConfig", "NormalizeConfig", "LoaderConfig", "NO_AUGMENT", "clahe_in_eval"]


@dataclass(frozen=True)
class AugmentConfig:
    # CLAHE (applied to the 8-bit image before any geometry)
    clahe_p: float = 1.0
    clahe_clip_limit: float = 2.0
    clahe_tile_grid: tuple[int, int] = (8, 8)
    # on GPU nodes: "exact" (hbseg's kernel, OpenCV bit for bit) or "dali" (DALI 2.4.0's
    # fn.clahe, within 2 grey levels, see hbseg.dali_pipes.clahe); CPU nodes always call OpenCV
    clahe_gpu_kernel: str = "exact"
    # shift/scale/rotate, as one affine matrix (albumentations ShiftScaleRotate ranges)
    ssr_p: float = 0.5
    shift_limit: float = 0.0625  # fraction of the side
    scale_limit: float = 0.1  # scale in [1 - limit, 1 + limit]
    rotate_limit: float = 15.0  # degrees
    # horizontal flip: off by default, flipping was found to hurt on hand data
    hflip_p: float = 0.0
    # brightness/contrast (albumentations RandomBrightnessContrast ranges)
    brightness_contrast_p: float = 0.5
    brightness_limit: float = 0.2
    contrast_limit: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


def clahe_in_eval(train_p: float) -> bool:
    """Whether eval and inference apply CLAHE for a model trained with CLAHE probability
    ``train_p``: yes when training showed it most images (p >= 0.5). Every back-end and
    hbseg-infer use this one rule, so a model is always scored on the input it learnt."""
    return train_p >= 0.5


# Eval and inference: CLAHE stays (it is part of the input's definition), nothing random.
NO_AUGMENT = AugmentConfig(ssr_p=0.0, hflip_p=0.0, brightness_contrast_p=0.0)


# ImageNet statistics: the grey defaults below are the red channel's, as before
IMAGENET_RGB_MEAN = (0.485, 0.456, 0.406)
IMAGENET_RGB_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class NormalizeConfig:
    """``(x/255 - mean)/std``; ``mean``/``std`` are one number (every channel) or one per
    channel (colour images)."""

    mean: float | tuple[float, ...] = 0.485  # ImageNet, grey
    std: float | tuple[float, ...] = 0.229
    dtype: str = "float32"  # "float32" or "float16"

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            v = getattr(self, name)
            if isinstance(v, (list, tuple)):
                object.__setattr__(self, name, tuple(float(x) for x in v))
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', got {self.dtype!r}")
        if any(s <= 0 for s in self._seq(self.std)):
            raise ValueError(f"std must be positive, got {self.std}")

    @staticmethod
    def _seq(v) -> tuple[float, ...]:
        return tuple(v) if isinstance(v, tuple) else (float(v),)

    def per_channel(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(means, stds)``, one per channel; a single number serves every channel."""
        out = []
        for name in ("mean", "std"):
            v = self._seq(getattr(self, name))
            if len(v) == 1:
                v = v * channels
            if len(v) != channels:
                raise ValueError(f"normalize {name} has {len(v)} values for {channels}-channel images")
            out.append(v)
        return out[0], out[1]

    def for_channels(self, channels: int) -> NormalizeConfig:
        """The settings for ``channels``-channel images: unchanged for grey; for colour the
        grey ImageNet defaults become ImageNet's RGB statistics."""
        if channels == 3 and (self.mean, self.std) == (0.485, 0.229):
            return NormalizeConfig(IMAGENET_RGB_MEAN, IMAGENET_RGB_STD, self.dtype)
        self.per_channel(channels)  # raises when the counts do not fit
        return self


@dataclass(frozen=True)
class LoaderConfig:
    """What a loader produces.

    size: output side in pixels (square).
    crop: if set, a random ``crop``×``crop`` window of the original image is taken
        (training), then resized to ``size``; ``None`` resizes the whole image.
    full_res_mask: eval only; masks stay at each image's original size so Dice is
        scored the way the leaderboard scores it.
    roi_margin, canonical_hand: the hand ROI crop and handedness of
        :mod:`hbseg.dali_pipes.roi` (off when None), in train and eval mode alike.
    """

    size: int = 512
    crop: int | None = None
    batch_size: int = 4
    num_threads: int = 2  # DALI CPU threads, or DataLoader workers
    prefetch: int = 2
    seed: int = 0
    shard_id: int = 0
    num_shards: int = 1
    full_res_mask: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    channels: int = 1  # image channels: 1 (grey) or 3 (RGB)
    num_classes: int = NUM_CLASSES  # mask planes unpacked from the packed masks (1-32)
    roi_margin: float | None = None  # crop to the labels' box + margin, squared (roi.py)
    canonical_hand: str | None = None  # "left"/"right": mirror the other side's images

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if not 1 <= self.num_classes <= 32:
            raise ValueError(f"num_classes must be in 1..32, got {self.num_classes}")
        if self.size < 16:
            raise ValueError(f"size must be at least 16, got {self.size}")
        if self.crop is not None and self.crop < 16:
            raise ValueError(f"crop must be at least 16, got {self.crop}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0 <= self.shard_id < self.num_shards:
            raise ValueError(f"shard_id {self.shard_id} not in [0, {self.num_shards})")
        if self.roi_margin is not None and self.crop is not None:
            raise ValueError("roi_margin (hand ROI crop) and crop (random crop) exclude each other")
        if self.roi_margin is not None and not 0 <= self.roi_margin < 10:
            raise ValueError(f"roi_margin must be in [0, 10), got {self.roi_margin}")
        if self.canonical_hand not in (None, "left", "right"):
            raise ValueError(f"canonical_hand must be 'left', 'right' or None, "
                             f"got {self.canonical_hand!r}")
