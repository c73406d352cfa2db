"""Pure DALI graph functions: DataNodes in, DataNodes out, no readers and no runtime settings.

Every function works on CPU and GPU nodes alike (DALI picks an operator's backend from its
input's device); matrices and per-sample parameters are always CPU nodes.

Conventions
-----------
* Images are HWC uint8 with one channel (grey) or three (RGB), packed masks HWC uint8 with
  four channels. CLAHE on RGB equalises the luminance only (``fn.clahe``'s ``luma_only``,
  equal to OpenCV's CLAHE on the L channel of LAB); the warps and brightness/contrast treat
  every channel alike.
* Nothing here draws a random number. The augmentation of each sample is drawn in numpy
  (:mod:`hbseg.dali_pipes.draw`, shared with the torch back-end) and arrives as per-sample
  argument inputs: ``matrix`` (2x3 float), ``alpha``/``beta`` (float scalars) and
  ``clahe`` (bool scalar), from an ``external_source`` (:mod:`hbseg.dali_pipes.sources`).
* Matrices are 2x3, **forward** (source → destination) in DALI's pixel-corner coordinates:
  ``(0, 0)`` is the top-left corner of the first pixel and x is the column. They are applied
  with ``fn.warp_affine(..., inverse_map=False)``. OpenCV puts ``(0, 0)`` at the *centre*
  of the first pixel, so the same warp in OpenCV is ``T(-0.5) @ M @ T(+0.5)``
  (:func:`to_opencv_matrix`), with ``cv2.warpAffine``'s default (forward) flags.
* CLAHE equals ``cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles_x, tiles_y))``
  on both back-ends (:mod:`hbseg.dali_pipes.clahe`); ``AugmentConfig.clahe_tile_grid`` is
  ``(tiles_x, tiles_y)``, OpenCV's order.

A CLAHE probability ``0 < p < 1`` uses a DALI conditional on the ``clahe`` input, so the
pipeline that calls :func:`clahe` with a predicate must be defined with
``@pipeline_def(enable_conditionals=True)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .config import AugmentConfig, NormalizeConfig, as_hw, clahe_in_eval
from .draw import Size, to_opencv_matrix

# Your own DALI operations (see ``augment_pair``): (image, packed mask) → (image, packed mask)
GraphOps = Callable[[Any, Any], tuple[Any, Any]]

__all__ = [
    "clahe", "resize_matrix", "warp_pair", "brightness_contrast", "normalize",
    "augment_pair", "eval_pair", "to_opencv_matrix", "clahe_for_eval", "GraphOps",
]


def _dali():
    from nvidia.dali import fn, types

    return fn, types


def clahe_for_eval(aug: AugmentConfig) -> AugmentConfig:
    """The deterministic CLAHE that eval and inference use for a training ``aug``.

    CLAHE is part of the input's definition: eval applies it when training applied it to
    most images (``clahe_in_eval``), and never otherwise, as the torch back-end does.
    """
    from dataclasses import replace

    from .config import NO_AUGMENT

    return replace(NO_AUGMENT, clahe_p=1.0 if clahe_in_eval(aug.clahe_p) else 0.0,
                   clahe_clip_limit=aug.clahe_clip_limit, clahe_tile_grid=aug.clahe_tile_grid,
                   clahe_gpu_kernel=aug.clahe_gpu_kernel)


def _clahe_always(images, aug: AugmentConfig):
    from .clahe import clahe_like_opencv

    tiles_x, tiles_y = aug.clahe_tile_grid
    return clahe_like_opencv(images, tiles_x=int(tiles_x), tiles_y=int(tiles_y),
                             clip_limit=float(aug.clahe_clip_limit),
                             gpu_kernel=aug.clahe_gpu_kernel)


def clahe(images, aug: AugmentConfig, predicate=None):
    """CLAHE on HWC uint8 grey images, as ``aug.clahe_p`` says.

    ``p >= 1`` always applies it and ``p <= 0`` never does; in between, the per-sample
    bool node ``predicate`` chooses (a DALI conditional, so only the chosen samples pay).
    """
    if aug.clahe_p <= 0:
        return images
    if aug.clahe_p >= 1 or predicate is None:
        return _clahe_always(images, aug)
    if predicate:
        out = _clahe_always(images, aug)
    else:
        out = images
    return out


def resize_matrix(shape_hw, out_size: Size):
    """The forward matrix that maps each sample's whole ``W×H`` frame onto ``out_size`` (a
    side or ``(H, W)``), from a CPU float node ``[H, W]`` (inference, where sizes are known
    only in-graph)."""
    fn, _ = _dali()
    out_h, out_w = as_hw(out_size)
    return fn.transforms.crop(from_start=[0.0, 0.0], from_end=fn.stack(shape_hw[1], shape_hw[0]),
                              to_start=[0.0, 0.0], to_end=[float(out_w), float(out_h)])


def warp_pair(image, mask, mt, out_size: Size):
    """One ``fn.warp_affine`` per tensor, both driven by the same matrix node ``mt``, onto
    ``out_size`` (a side or ``(H, W)``).

    Linear interpolation for the image, nearest for the packed mask (bits are never
    mixed); outside the source both are filled with 0 (black, no bone). ``mask=None``
    warps the image alone.
    """
    fn, types = _dali()
    out_h, out_w = as_hw(out_size)
    kw = dict(matrix=mt, size=[float(out_h), float(out_w)], inverse_map=False, fill_value=0.0)
    image = fn.warp_affine(image, interp_type=types.INTERP_LINEAR, **kw)
    if mask is not None:
        mask = fn.warp_affine(mask, interp_type=types.INTERP_NN, **kw)
    return image, mask


def brightness_contrast(images, alpha, beta):
    """``out = clip(round(in·alpha + beta·255))`` for uint8 images, per-sample ``alpha``
    (contrast) and ``beta`` (brightness, a fraction of 255): albumentations'
    ``RandomBrightnessContrast`` with ``brightness_by_max``, as
    ``fn.brightness_contrast(brightness=alpha, contrast=1, contrast_center=0,
    brightness_shift=beta)``."""
    fn, _ = _dali()
    return fn.brightness_contrast(images, brightness=alpha, contrast=1.0, contrast_center=0.0,
                                  brightness_shift=beta)


def normalize(images, norm: NormalizeConfig):
    """HWC uint8 → CHW float16/float32 ``(x/255 - mean)/std``; one mean/std value serves
    every channel, or one per channel."""
    fn, types = _dali()
    dtype = types.FLOAT16 if norm.dtype == "float16" else types.FLOAT
    seq = NormalizeConfig._seq
    return fn.crop_mirror_normalize(images, dtype=dtype, output_layout="CHW",
                                    mean=[m * 255.0 for m in seq(norm.mean)],
                                    std=[s * 255.0 for s in seq(norm.std)])


def _brightness_contrast_used(aug: AugmentConfig) -> bool:
    return aug.brightness_contrast_p > 0 and (aug.brightness_limit > 0 or aug.contrast_limit > 0)


def augment_pair(image, mask, params, *, size: Size, aug: AugmentConfig, norm: NormalizeConfig,
                 ops: GraphOps | None = None):
    """The training graph: CLAHE → one affine warp (flips, SSR, crop/resize) → brightness/
    contrast → your ``ops`` → normalise. ``params``: the nodes ``(matrix, alpha, beta,
    clahe)``. Returns ``(image CHW float, mask HWC uint8 packed)``.

    ``ops(image, mask) -> (image, mask)`` adds your own DALI operations. It receives the
    image as HWC uint8 (1 or 3 channels) and the mask as the cache stores it, HWC uint8
    (:mod:`hbseg.dali_pipes.outputs`: class bits in 4 channels or 1, or class indices),
    both at ``size``. A geometric operation must get the same random argument node for
    both (draw it once, pass it to both calls) and nearest-neighbour interpolation for the
    mask (``interp_type=types.INTERP_NN``), so that labels are moved, never blended. It
    must return both at ``size``, the mask with its dtype and channels.
    """
    matrix, alpha, beta, flag = params
    image = clahe(image, aug, predicate=flag)
    image, mask = warp_pair(image, mask, matrix, size)
    if _brightness_contrast_used(aug):
        image = brightness_contrast(image, alpha, beta)
    if ops is not None:
        image, mask = ops(image, mask)
    return normalize(image, norm), mask


def eval_pair(image, mask, matrix, *, size: Size | None, aug: AugmentConfig,
              norm: NormalizeConfig, full_res_mask: bool = False):
    """Eval/inference graph: deterministic CLAHE, the same resize ``matrix`` for image
    (linear) and mask (nearest), normalise. ``full_res_mask`` leaves the mask untouched;
    ``mask=None`` for unlabelled images; ``size=None`` keeps every image at its own size."""
    image = clahe(image, clahe_for_eval(aug))
    if size is None:
        return normalize(image, norm), mask
    image, warped = warp_pair(image, None if full_res_mask else mask, matrix, size)
    return normalize(image, norm), (mask if full_res_mask else warped)
