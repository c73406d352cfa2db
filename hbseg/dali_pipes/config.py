"""Typed, frozen settings for the data pipelines, shared by every loader back-end.

``AugmentConfig`` uses albumentations-style ranges so the DALI graph and the plain
DataLoader baseline are driven by the same numbers.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from hbseg.data.classes import NUM_CLASSES

__all__ = ["AugmentConfig", "NormalizeConfig", "LoaderConfig", "NO_AUGMENT", "HAND_XRAY",
           "clahe_in_eval", "as_hw"]


# field → (lowest, highest, what the number means): the ranges ``AugmentConfig`` accepts
_AUGMENT_RANGES: dict[str, tuple[float, float, str]] = {
    "clahe_p": (0.0, 1.0, "a probability"),
    "clahe_clip_limit": (0.0, 1000.0, "OpenCV's clipLimit, > 0"),
    "ssr_p": (0.0, 1.0, "a probability"),
    "shift_limit": (0.0, 1.0, "a fraction of the image side"),
    "scale_limit": (0.0, 0.99, "scale drawn in [1 - limit, 1 + limit]"),
    "rotate_limit": (0.0, 180.0, "degrees"),
    "hflip_p": (0.0, 1.0, "a probability"),
    "vflip_p": (0.0, 1.0, "a probability"),
    "brightness_contrast_p": (0.0, 1.0, "a probability"),
    "brightness_limit": (0.0, 1.0, "a fraction of 255"),
    "contrast_limit": (0.0, 1.0, "contrast factor drawn in [1 - limit, 1 + limit]"),
}
CLAHE_GPU_KERNELS = ("exact", "dali")
MAX_CLAHE_TILES = 64  # per side; OpenCV accepts more, but tiles of a few pixels equalise noise


@dataclass(frozen=True)
class AugmentConfig:
    """The training augmentation, drawn per sample (``hbseg.dali_pipes.draw``) and applied
    alike by the DALI graph and the torch back-end. The default changes nothing: every
    probability is 0. ``AugmentConfig.hand_xray()`` (``HAND_XRAY``) is the hand-radiograph
    recipe ``hbseg-train`` uses. The limits use albumentations' ranges and units:

    * ``clahe_p``: probability of CLAHE (OpenCV's, on the 8-bit image before any geometry;
      luminance only for colour). ``clahe_clip_limit``: OpenCV's ``clipLimit`` (> 0);
      ``clahe_tile_grid``: ``(tiles_x, tiles_y)``, OpenCV's ``tileGridSize``, 1–64 each.
      ``clahe_gpu_kernel``: on GPU nodes ``"exact"`` (hbseg's kernel, OpenCV bit for bit)
      or ``"dali"`` (DALI's ``fn.clahe``, within 2 grey levels); CPU nodes call OpenCV.
      Eval and inference apply CLAHE when ``clahe_p >= 0.5`` (``clahe_in_eval``).
    * ``ssr_p``: probability of shift/scale/rotate (one affine matrix, albumentations
      ``ShiftScaleRotate``): shift up to ``shift_limit`` of each side (0–1), scale in
      ``[1 - scale_limit, 1 + scale_limit]`` (0–0.99), rotation up to ``rotate_limit``
      degrees either way (0–180).
    * ``hflip_p``, ``vflip_p``: probabilities of a horizontal and a vertical flip.
    * ``brightness_contrast_p``: probability of albumentations' ``RandomBrightnessContrast``
      (``brightness_by_max``): brightness shift up to ``brightness_limit`` of 255 (0–1),
      contrast factor in ``[1 - contrast_limit, 1 + contrast_limit]`` (0–1).

    A value out of its range raises ``ValueError`` naming the field, the value and the range.
    """

    clahe_p: float = 0.0
    clahe_clip_limit: float = 2.0
    clahe_tile_grid: tuple[int, int] = (8, 8)
    clahe_gpu_kernel: str = "exact"
    ssr_p: float = 0.0
    shift_limit: float = 0.0625  # fraction of the side
    scale_limit: float = 0.1  # scale in [1 - limit, 1 + limit]
    rotate_limit: float = 15.0  # degrees
    hflip_p: float = 0.0
    vflip_p: float = 0.0
    brightness_contrast_p: float = 0.0
    brightness_limit: float = 0.2  # fraction of 255
    contrast_limit: float = 0.2  # contrast factor in [1 - limit, 1 + limit]

    def __post_init__(self) -> None:
        for name, (lo, hi, what) in _AUGMENT_RANGES.items():
            v = getattr(self, name)
            ok = isinstance(v, numbers.Real) and not isinstance(v, bool)
            if not ok or not lo <= v <= hi or (name == "clahe_clip_limit" and v <= 0):
                raise ValueError(f"{name} must be in [{lo:g}, {hi:g}] ({what}), got {v!r}")
        grid = self.clahe_tile_grid
        if isinstance(grid, list):  # from YAML/JSON
            grid = tuple(grid)
            object.__setattr__(self, "clahe_tile_grid", grid)
        if (not isinstance(grid, tuple) or len(grid) != 2
                or not all(isinstance(t, numbers.Integral) and not isinstance(t, bool)
                           and 1 <= t <= MAX_CLAHE_TILES for t in grid)):
            raise ValueError(f"clahe_tile_grid must be (tiles_x, tiles_y), two integers in "
                             f"[1, {MAX_CLAHE_TILES}], got {self.clahe_tile_grid!r}")
        if self.clahe_gpu_kernel not in CLAHE_GPU_KERNELS:
            raise ValueError(f"clahe_gpu_kernel must be one of {CLAHE_GPU_KERNELS}, "
                             f"got {self.clahe_gpu_kernel!r}")

    @classmethod
    def hand_xray(cls, **changes: Any) -> AugmentConfig:
        """The hand-radiograph recipe ``hbseg-train`` trains with (``HAND_XRAY``): CLAHE on
        every image, shift/scale/rotate and brightness/contrast on half, no flip (flipping
        was found to hurt on hand data). ``changes`` override single fields."""
        return replace(cls(clahe_p=1.0, ssr_p=0.5, brightness_contrast_p=0.5), **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def clahe_in_eval(train_p: float) -> bool:
    """Whether eval and inference apply CLAHE for a model trained with CLAHE probability
    ``train_p``: yes when training showed it most images (p >= 0.5). Every back-end and
    hbseg-infer use this one rule, so a model is always scored on the input it learnt."""
    return train_p >= 0.5


# No augmentation at all, CLAHE included (AugmentConfig()'s defaults).
NO_AUGMENT = AugmentConfig()
# The hand-radiograph recipe hbseg-train uses by default.
HAND_XRAY = AugmentConfig.hand_xray()


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


MIN_SIDE = 16  # pixels; smaller outputs leave an encoder nothing to downsample
MASK_OUTPUTS = ("planes", "index")


def as_hw(size: int | tuple[int, int] | list[int], name: str = "size") -> tuple[int, int]:
    """A side (square) or ``(H, W)`` → ``(H, W)``, each an integer of at least 16."""
    hw = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    if len(hw) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                               and v >= MIN_SIDE for v in hw):
        raise ValueError(f"{name} must be an integer of at least {MIN_SIDE} or (H, W) of two, "
                         f"got {size!r}")
    return int(hw[0]), int(hw[1])


@dataclass(frozen=True)
class LoaderConfig:
    """What a loader produces. ``None`` means "take it from the data" (or the default).

    size: the output in pixels, a side (square) or ``(H, W)``.
    crop: if set, a random ``crop`` window (a side or ``(H, W)``) of the original image is
        taken (training), then resized to ``size``; ``None`` resizes the whole image.
    shuffle: reshuffle every epoch; ``None`` shuffles in train mode only.
    drop_last: leave out the last batch of a shard when it is partial.
    full_res_mask: eval only; masks stay at each image's original size so Dice is
        scored the way the leaderboard scores it.
    channels, num_classes: image channels (1 grey, 3 RGB) and mask planes (1-32); ``None``
        takes them from the mask cache's description (1 and 29 for the hands). A value the
        data contradict is refused when the loader is built. ``channels=3`` turns the
        default grey normalisation into ImageNet's RGB mean and std.
    mask_output: ``"planes"``, uint8 ``[B, K, H, W]`` 0/1, one plane per class and no
        background plane; ``"index"``, int64 ``[B, H, W]``, 0 background and ``k`` for
        class ``k`` (for cross-entropy; classes must not overlap).
    roi_margin, canonical_hand: the hand ROI crop and handedness of
        :mod:`hbseg.dali_pipes.roi` (off when None), in train and eval mode alike.
    """

    size: int | tuple[int, int] = 512
    crop: int | tuple[int, int] | None = None
    batch_size: int = 4
    num_threads: int = 2  # DALI CPU threads, or DataLoader workers
    prefetch: int = 2
    seed: int = 0
    shard_id: int = 0
    num_shards: int = 1
    shuffle: bool | None = None
    drop_last: bool = False
    full_res_mask: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    channels: int | None = None  # image channels: 1 (grey) or 3 (RGB); None: the data's
    num_classes: int | None = None  # mask planes unpacked (1-32); None: the data's
    mask_output: str = "planes"
    roi_margin: float | None = None  # crop to the labels' box + margin, squared (roi.py)
    canonical_hand: str | None = None  # "left"/"right": mirror the other side's images

    def __post_init__(self) -> None:
        if isinstance(self.size, list):  # from YAML/JSON
            object.__setattr__(self, "size", tuple(self.size))
        if isinstance(self.crop, list):
            object.__setattr__(self, "crop", tuple(self.crop))
        as_hw(self.size)
        if self.crop is not None:
            as_hw(self.crop, "crop")
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1 or 3 (or None: the data's), got {self.channels}")
        if self.num_classes is not None and not 1 <= self.num_classes <= 32:
            raise ValueError(f"num_classes must be in 1..32, got {self.num_classes}")
        if self.channels == 3:  # ImageNet's RGB statistics replace the grey default
            object.__setattr__(self, "normalize", self.normalize.for_channels(3))
        if self.mask_output not in MASK_OUTPUTS:
            raise ValueError(f"mask_output must be one of {MASK_OUTPUTS}, got {self.mask_output!r}")
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

    @property
    def out_hw(self) -> tuple[int, int]:
        """The output ``(H, W)``."""
        return as_hw(self.size)

    @property
    def crop_hw(self) -> tuple[int, int] | None:
        return None if self.crop is None else as_hw(self.crop, "crop")

    @property
    def image_channels(self) -> int:
        """``channels``, 1 where neither the config nor the data said."""
        return 1 if self.channels is None else self.channels

    @property
    def mask_planes(self) -> int:
        """``num_classes``, the hands' 29 where neither the config nor the data said."""
        return NUM_CLASSES if self.num_classes is None else self.num_classes

    def shuffles(self, mode: str) -> bool:
        """Whether epochs are reshuffled in ``mode`` ("train" or "eval")."""
        return mode == "train" if self.shuffle is None else bool(self.shuffle)
