"""Pure DALI graph functions: DataNodes in, DataNodes out, no readers and no runtime settings.

Every function works on CPU and GPU nodes alike (DALI picks an operator's backend from its
input's device); random parameters and matrices are always CPU nodes.

Conventions
-----------
* Images are HWC uint8 with one channel, packed masks HWC uint8 with four channels.
* ``shape_hw`` is a CPU float node ``[H, W]`` per sample (``fn.peek_image_shape`` on the
  encoded file, or a side input when the pixels come from a cache).
* Matrices are 2x3, **forward** (source → destination) in DALI's pixel-corner coordinates:
  ``(0, 0)`` is the top-left corner of the first pixel and x is the column. They are applied
  with ``fn.warp_affine(..., inverse_map=False)``. OpenCV puts ``(0, 0)`` at the *centre*
  of the first pixel, so the same warp in OpenCV is ``T(-0.5) @ M @ T(+0.5)``
  (:func:`to_opencv_matrix`), with ``cv2.warpAffine``'s default (forward) flags.
* CLAHE: ``fn.clahe(tiles_x, tiles_y, clip_limit)`` equals
  ``cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles_x, tiles_y))`` exactly on CPU,
  for any image size (checked on real radiographs); ``AugmentConfig.clahe_tile_grid`` is
  ``(tiles_x, tiles_y)``, OpenCV's order.

Functions that draw with probability ``0 < p < 1`` use DALI conditionals, so the pipeline
that calls them must be defined with ``@pipeline_def(enable_conditionals=True)``.
"""

from __future__ import annotations

import numpy as np

from .config import AugmentConfig, NormalizeConfig

__all__ = [
    "clahe", "affine_matrix", "warp_pair", "brightness_contrast", "normalize",
    "augment_pair", "eval_pair", "to_opencv_matrix", "clahe_for_eval",
]


def _dali():
    from nvidia.dali import fn, types

    return fn, types


def _coin(p: float):
    """A per-sample float 0/1 that is 1 with probability ``p`` (a CPU node)."""
    fn, types = _dali()
    return fn.cast(fn.random.coin_flip(probability=float(p), dtype=types.UINT8), dtype=types.FLOAT)


def _uniform(lo: float, hi: float):
    fn, types = _dali()
    return fn.random.uniform(range=[float(lo), float(hi)], dtype=types.FLOAT)


def clahe_for_eval(aug: AugmentConfig) -> AugmentConfig:
    """The deterministic CLAHE that eval and inference use for a training ``aug``.

    CLAHE is part of the input's definition: eval applies it when training applied it to
    most images (``clahe_in_eval``), and never otherwise, as the torch back-end does.
    """
    from dataclasses import replace

    from .config import NO_AUGMENT, clahe_in_eval

    return replace(NO_AUGMENT, clahe_p=1.0 if clahe_in_eval(aug.clahe_p) else 0.0,
                   clahe_clip_limit=aug.clahe_clip_limit, clahe_tile_grid=aug.clahe_tile_grid)


def clahe(images, aug: AugmentConfig):
    """CLAHE on HWC uint8 grey images with probability ``aug.clahe_p``.

    ``p >= 1`` always applies it and ``p <= 0`` never does, with no random draw; in between,
    a coin per sample chooses (a DALI conditional, so only the chosen samples pay for it).
    """
    fn, types = _dali()
    if aug.clahe_p <= 0:
        return images
    tiles_x, tiles_y = aug.clahe_tile_grid
    kw = dict(tiles_x=int(tiles_x), tiles_y=int(tiles_y), clip_limit=float(aug.clahe_clip_limit))
    if aug.clahe_p >= 1:
        return fn.clahe(images, **kw)
    if fn.random.coin_flip(probability=float(aug.clahe_p), dtype=types.BOOL):
        out = fn.clahe(images, **kw)
    else:
        out = images
    return out


def affine_matrix(shape_hw, out_size: int, crop: int | None, aug: AugmentConfig, random: bool = True):
    """One 2x3 forward matrix per sample: flip → shift/scale/rotate → crop window → output.

    * flip (``hflip_p``): ``x → W - x``, folded into the matrix.
    * shift/scale/rotate (``ssr_p``), albumentations ``ShiftScaleRotate`` ranges: angle
      ∈ ±``rotate_limit`` degrees and scale ∈ 1 ± ``scale_limit``, both about the image
      centre, then a shift ∈ ±``shift_limit`` of the width/height. A sample that loses the
      coin gets the identity (parameters are blended with the coin), so the warp always
      runs exactly once: it is also the resize.
    * ``crop=None``: the whole ``W×H`` frame maps to ``out_size²``. ``crop=c``: a ``c×c``
      window of the (augmented) frame maps to ``out_size²``; its origin is uniform in
      ``[0, W-c] × [0, H-c]`` when ``random``, centred otherwise.

    ``random=False`` (eval) draws nothing: only the resize or centre crop remains.
    """
    fn, _ = _dali()
    h = shape_hw[0]
    w = shape_hw[1]
    center = fn.stack(w * 0.5, h * 0.5)
    one = w * 0.0 + 1.0  # a per-sample constant, so fn.stack gets nodes only
    mt = fn.transforms.translation(offset=[0.0, 0.0])  # identity
    if random and aug.hflip_p > 0:
        sx = 1.0 - 2.0 * _coin(aug.hflip_p)
        mt = fn.transforms.scale(mt, scale=fn.stack(sx, one), center=center)
    if random and aug.ssr_p > 0:
        coin = _coin(aug.ssr_p)
        angle = coin * _uniform(-aug.rotate_limit, aug.rotate_limit)
        scale = 1.0 + coin * _uniform(-aug.scale_limit, aug.scale_limit)
        dx = coin * _uniform(-aug.shift_limit, aug.shift_limit) * w
        dy = coin * _uniform(-aug.shift_limit, aug.shift_limit) * h
        mt = fn.transforms.rotation(mt, angle=angle, center=center)
        mt = fn.transforms.scale(mt, scale=fn.stack(scale, scale), center=center)
        mt = fn.transforms.translation(mt, offset=fn.stack(dx, dy))
    size = [float(out_size), float(out_size)]
    if crop is None:
        return fn.transforms.crop(mt, from_start=[0.0, 0.0], from_end=fn.stack(w, h),
                                  to_start=[0.0, 0.0], to_end=size)
    c = float(crop)
    if random:
        x0 = _uniform(0.0, 1.0) * (w - c)
        y0 = _uniform(0.0, 1.0) * (h - c)
    else:
        x0 = (w - c) * 0.5
        y0 = (h - c) * 0.5
    return fn.transforms.crop(mt, from_start=fn.stack(x0, y0), from_end=fn.stack(x0 + c, y0 + c),
                              to_start=[0.0, 0.0], to_end=size)


def warp_pair(image, mask, mt, out_size: int):
    """One ``fn.warp_affine`` per tensor, both driven by the same matrix node ``mt``.

    Linear interpolation for the image, nearest for the packed mask (bits are never
    mixed); outside the source both are filled with 0 (black, no bone). ``mask=None``
    warps the image alone.
    """
    fn, types = _dali()
    kw = dict(matrix=mt, size=[float(out_size), float(out_size)], inverse_map=False, fill_value=0.0)
    image = fn.warp_affine(image, interp_type=types.INTERP_LINEAR, **kw)
    if mask is not None:
        mask = fn.warp_affine(mask, interp_type=types.INTERP_NN, **kw)
    return image, mask


def _apply_brightness_contrast(images, alpha, beta):
    """``out = clip(round(in·alpha + beta·255))`` for uint8 images."""
    fn, _ = _dali()
    return fn.brightness_contrast(images, brightness=alpha, contrast=1.0, contrast_center=0.0,
                                  brightness_shift=beta)


def brightness_contrast(images, aug: AugmentConfig):
    """albumentations ``RandomBrightnessContrast`` (``brightness_by_max``) with probability p.

    ``out = in·alpha + beta·255``, alpha ∈ 1 ± ``contrast_limit``, beta ∈ ±``brightness_limit``,
    as ``fn.brightness_contrast(brightness=alpha, contrast=1, contrast_center=0,
    brightness_shift=beta)`` (its formula is ``shift·255 + brightness·(center +
    contrast·(in - center))``). DALI rounds to nearest where albumentations truncates, so
    the two differ by at most one grey level.
    """
    p = aug.brightness_contrast_p
    if p <= 0 or (aug.brightness_limit <= 0 and aug.contrast_limit <= 0):
        return images
    coin = _coin(p)
    alpha = 1.0 + coin * _uniform(-aug.contrast_limit, aug.contrast_limit)
    beta = coin * _uniform(-aug.brightness_limit, aug.brightness_limit)
    return _apply_brightness_contrast(images, alpha, beta)


def normalize(images, norm: NormalizeConfig):
    """HWC uint8 → CHW float16/float32 ``(x/255 - mean)/std``."""
    fn, types = _dali()
    dtype = types.FLOAT16 if norm.dtype == "float16" else types.FLOAT
    return fn.crop_mirror_normalize(images, dtype=dtype, output_layout="CHW",
                                    mean=[norm.mean * 255.0], std=[norm.std * 255.0])


def augment_pair(image, mask, shape_hw, *, size: int, crop: int | None, aug: AugmentConfig,
                 norm: NormalizeConfig, random: bool = True):
    """The training graph: CLAHE → one affine warp (flip, SSR, crop/resize) → brightness/
    contrast → normalise. Returns ``(image CHW float, mask HWC uint8 packed, matrix)``."""
    image = clahe(image, aug)
    mt = affine_matrix(shape_hw, size, crop, aug, random=random)
    image, mask = warp_pair(image, mask, mt, size)
    if random:
        image = brightness_contrast(image, aug)
    return normalize(image, norm), mask, mt


def eval_pair(image, mask, shape_hw, *, size: int | None, aug: AugmentConfig,
              norm: NormalizeConfig, full_res_mask: bool = False):
    """Eval/inference graph: deterministic CLAHE, the same resize for image (linear) and mask
    (nearest), normalise. ``full_res_mask`` leaves the mask untouched; ``mask=None`` for
    unlabelled images; ``size=None`` keeps every image at its own size (no warp)."""
    aug = clahe_for_eval(aug)
    image = clahe(image, aug)
    if size is None:
        return normalize(image, norm), mask
    mt = affine_matrix(shape_hw, size, None, aug, random=False)
    image, warped = warp_pair(image, None if full_res_mask else mask, mt, size)
    return normalize(image, norm), (mask if full_res_mask else warped)


def to_opencv_matrix(mt) -> np.ndarray:
    """A 2x3 forward matrix in DALI's pixel-corner coordinates → the matrix that
    ``cv2.warpAffine`` (pixel-centre coordinates, forward) needs for the same warp."""
    m = np.vstack([np.asarray(mt, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    t = lambda d: np.array([[1.0, 0.0, d], [0.0, 1.0, d], [0.0, 0.0, 1.0]])  # noqa: E731
    return (t(-0.5) @ m @ t(0.5))[:2]
