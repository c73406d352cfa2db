"""CLAHE that equals OpenCV's at every image size, on DALI's CPU and GPU back-ends alike.

``cv2.createCLAHE(...).apply`` tiles an image whose sides are not both multiples of the grid
by first padding it at the bottom and right with ``BORDER_REFLECT_101``; the tile size is
the padded size over the grid, the LUTs come from the padded image, and the original pixels
are interpolated between them. DALI's CPU ``fn.clahe`` calls OpenCV and so does the same,
but the GPU kernel tiles the unpadded image with ``ceil(W / tiles_x)``-wide tiles and a
truncated last tile, which differs by up to ~10 grey levels on odd sizes.

Padding the same way in the graph, running ``fn.clahe`` on an image whose sides are
multiples of the grid (where both back-ends agree with OpenCV) and cropping back gives
OpenCV's result on grey images with DALI 2.4.0's CPU ``fn.clahe``, but not with its GPU
one, which also rounds every tile's look-up table down: within 2 levels of OpenCV, about half
the pixels one level darker. Grey GPU nodes therefore run hbseg's own kernel
(:mod:`hbseg.dali_pipes.clahe_gpu`, bit for bit OpenCV's); :func:`clahe_like_opencv` chooses.

OpenCV's padding rule, which differs from "pad to the next multiple"::

    if H % tiles_y or W % tiles_x:          # either side not a multiple of the grid
        pad_bottom = tiles_y - H % tiles_y  # a whole extra tile row when H already is one
        pad_right = tiles_x - W % tiles_x
    else:
        no padding

The pad is ``fn.slice(..., out_of_bounds_policy="reflect_101")``, which equals
``cv2.copyMakeBorder(..., cv2.BORDER_REFLECT_101)`` also when the pad exceeds the side.
"""

from __future__ import annotations

__all__ = ["clahe_like_opencv", "pad_reflect101_to_grid", "grid_pad_hw"]


def _check_grid(tiles_x: int, tiles_y: int) -> tuple[int, int]:
    for name, v in (("tiles_x", tiles_x), ("tiles_y", tiles_y)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"CLAHE {name} must be a positive int, got {v!r}")
    return tiles_x, tiles_y


def _int_hw(images, shape_hw):
    """Per-sample ``[H, W]`` as a CPU int32 node, from ``shape_hw`` (float or int) or the images.

    Reading the shape of a GPU node on the CPU needs DALI's dynamic executor (the default
    in DALI 2.x); passing ``shape_hw`` avoids the question.
    """
    from nvidia.dali import fn, types

    if shape_hw is None:
        return images.shape(dtype=types.INT32)[0:2]
    return fn.cast(shape_hw, dtype=types.INT32)[0:2]  # also takes peek_image_shape's [H, W, C]


def grid_pad_hw(hw, *, tiles_x: int, tiles_y: int):
    """OpenCV CLAHE's bottom/right padding ``[pad_h, pad_w]`` (CPU int32) for int32 ``hw``."""
    import numpy as np
    from nvidia.dali import fn, types

    tiles_x, tiles_y = _check_grid(tiles_x, tiles_y)
    grid = types.Constant(np.array([tiles_y, tiles_x], np.int32))
    rem = hw - (hw // grid) * grid
    ragged = fn.reductions.max(rem) > 0  # OpenCV pads both sides, or neither
    return ragged * (grid - rem)


def pad_reflect101_to_grid(images, shape_hw=None, *, tiles_x: int, tiles_y: int):
    """HWC images padded at the bottom and right exactly as OpenCV's CLAHE pads them.

    ``shape_hw``: optional CPU node ``[H, W]`` (float or int) per sample; by default it is
    read from ``images``. Returns the padded images (same device as ``images``).
    """
    return _pad(images, _int_hw(images, shape_hw), tiles_x, tiles_y)


def _pad(images, hw, tiles_x: int, tiles_y: int):
    from nvidia.dali import fn

    pad = grid_pad_hw(hw, tiles_x=tiles_x, tiles_y=tiles_y)
    return fn.slice(images, start=[0, 0], shape=hw + pad, axis_names="HW",
                    out_of_bounds_policy="reflect_101")


def clahe_like_opencv(images, *, tiles_x: int, tiles_y: int, clip_limit: float, shape_hw=None,
                      always_pad: bool = False, gpu_kernel: str = "exact"):
    """``cv2.createCLAHE(clip_limit, (tiles_x, tiles_y)).apply`` on HWC uint8 images.

    ``images``: a CPU or GPU DataNode, HWC uint8, grey (1 channel) or RGB (3: the luminance
    is equalised, OpenCV's recipe through 8-bit Lab, as ``fn.clahe``'s ``luma_only`` does on
    CPU); DALI picks the back-end from it. A CPU node goes straight to ``fn.clahe``, which
    calls OpenCV, unless ``always_pad`` (for tests).

    A GPU node runs hbseg's own kernel (:mod:`hbseg.dali_pipes.clahe_gpu`), equal to OpenCV
    bit for bit, because DALI 2.4.0's GPU ``fn.clahe`` rounds its look-up tables down (about
    half the pixels one level darker, a few two), tiles the unpadded image, and equalises
    colour in 101 levels of L* where OpenCV's 8-bit Lab has 256. ``gpu_kernel="dali"`` keeps
    ``fn.clahe`` there instead, padded reflect-101 to OpenCV's tiles and cropped back:
    within 2 levels of OpenCV on grey images, up to ~20 on colour ones.

    ``shape_hw``: optional CPU node ``[H, W]`` per sample (``fn.peek_image_shape``) for the
    padded path; without it the shape is read from ``images`` (for a GPU node that needs
    DALI's dynamic executor, the default). No conditionals inside: works in any pipeline,
    also inside a DALI ``if`` branch.
    """
    from nvidia.dali import fn

    tiles_x, tiles_y = _check_grid(tiles_x, tiles_y)
    if gpu_kernel not in ("exact", "dali"):
        raise ValueError(f"gpu_kernel must be 'exact' or 'dali', got {gpu_kernel!r}")
    clip = float(clip_limit)
    if images.device != "gpu" and not always_pad:
        return fn.clahe(images, tiles_x=tiles_x, tiles_y=tiles_y, clip_limit=clip)
    if images.device == "gpu" and gpu_kernel == "exact":
        from .clahe_gpu import clahe_exact_gpu

        return clahe_exact_gpu(images, tiles_x=tiles_x, tiles_y=tiles_y, clip_limit=clip)
    hw = _int_hw(images, shape_hw)
    out = fn.clahe(_pad(images, hw, tiles_x, tiles_y), tiles_x=tiles_x, tiles_y=tiles_y,
                   clip_limit=clip)
    return fn.slice(out, start=[0, 0], shape=hw, axis_names="HW")
