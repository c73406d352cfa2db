"""OpenCV-exact CLAHE on GPU nodes of a DALI graph: hbseg's own kernel (``clahe_exact.cu``).

DALI 2.4.0's GPU ``fn.clahe`` rounds every tile's look-up table down where OpenCV rounds to
nearest, so about half the pixels come out one grey level darker (a few two) even on padded
images, and no argument changes that. GPU nodes run ``clahe_exact.cu`` instead, the source
that the CPU tests compile with a C++ compiler and compare with ``cv2`` bit for bit.

How it sits in the graph: ``fn.python_function(device="gpu", batch_processing=True)``. DALI
hands the callback the batch as CuPy arrays and makes its own CUDA stream CuPy's current
stream for the call, without synchronising (``synchronize_stream=False`` for
``python_function``): the two kernel launches per image join DALI's stream like any GPU
operator, so the pipeline stays asynchronous and keeps prefetching. The callback holds the
GIL only for the launches (microseconds). A C++ plugin would need a CUDA toolchain where hbseg
is installed; ``dl_tensor_python_function`` would need the stream handled by hand; numba would
need numba-cuda and control over its FMA contraction. The kernels are compiled once per
process by NVRTC (through CuPy) for the GPU that runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

__all__ = ["KERNEL_SOURCE", "TileGeometry", "tile_geometry", "clahe_exact_gpu", "clahe_cupy",
           "lab_tables", "equalise_luminance"]

KERNEL_SOURCE = Path(__file__).with_name("clahe_exact.cu")
_THREADS = 256  # one thread per histogram bin in the LUT kernel (CLAHE_BINS)


@dataclass(frozen=True)
class TileGeometry:
    """OpenCV's CLAHE numbers for one image size (``CLAHE_Impl::apply``)."""

    tile_w: int
    tile_h: int
    limit: int  # integer clip limit per bin; 0: no clipping
    lut_scale: np.float32
    inv_tile_w: np.float32
    inv_tile_h: np.float32


def tile_geometry(height: int, width: int, tiles_x: int, tiles_y: int, clip_limit: float) -> TileGeometry:
    """Tiles of the reflect-101 padded image (both sides padded when either is ragged, by a
    whole tile where a side already is a multiple), in OpenCV's own number types."""
    ragged = height % tiles_y or width % tiles_x
    padded_h = height + tiles_y - height % tiles_y if ragged else height
    padded_w = width + tiles_x - width % tiles_x if ragged else width
    tile_w, tile_h = padded_w // tiles_x, padded_h // tiles_y
    area = tile_w * tile_h
    # OpenCV computes the limit in double and the scales in float
    limit = max(int(clip_limit * area / 256), 1) if clip_limit > 0 else 0
    one = np.float32(1.0)
    return TileGeometry(tile_w, tile_h, limit, np.float32(255.0) / np.float32(area),
                        one / np.float32(tile_w), one / np.float32(tile_h))


@cache
def _kernels(device_id: int):
    import cupy as cp

    # The source spells every rounding out (__fmul_rn, __fadd_rn); --fmad=false keeps any
    # other float expression from being fused as well.
    module = cp.RawModule(code=KERNEL_SOURCE.read_text(), options=("--fmad=false",))
    return module.get_function("clahe_tile_luts"), module.get_function("clahe_apply")


@cache
def lab_tables() -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's 8-bit colour conversions as look-up tables over all 2²⁴ codes:
    ``RGB2LAB[(r << 16) | (g << 8) | b]`` and ``LAB2RGB[(L << 16) | (a << 8) | b]``, each
    ``[2**24, 3]`` uint8 (48 MiB), made once by ``cv2.cvtColor`` itself. OpenCV converts 8-bit
    pixels one by one in integer arithmetic, so the tables are its conversions exactly."""
    import cv2

    codes = np.arange(1 << 24, dtype=np.uint32)
    every = np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], -1).astype(np.uint8)
    every = every.reshape(4096, 4096, 3)
    return (cv2.cvtColor(every, cv2.COLOR_RGB2LAB).reshape(-1, 3),
            cv2.cvtColor(every, cv2.COLOR_LAB2RGB).reshape(-1, 3))


@cache
def _lab_tables_on(device_id: int):
    import cupy as cp

    return tuple(cp.asarray(t) for t in lab_tables())


def _code(a, b, c):
    return (a.astype("uint32") << 16) | (b.astype("uint32") << 8) | c


def equalise_luminance(image, clahe_grey, rgb2lab, lab2rgb):
    """OpenCV's colour CLAHE recipe (RGB → 8-bit Lab, CLAHE on L, back) on an ``[H, W, 3]``
    uint8 array, numpy or CuPy alike: ``clahe_grey`` equalises a contiguous ``[H, W]`` plane,
    the tables are :func:`lab_tables` on the array's side."""
    lab = rgb2lab[_code(image[..., 0], image[..., 1], image[..., 2])]
    lightness = clahe_grey(lab[..., 0].copy())
    return lab2rgb[_code(lightness, lab[..., 1], lab[..., 2])]


def clahe_cupy(image, *, tiles_x: int, tiles_y: int, clip_limit: float):
    """``cv2.createCLAHE(clip_limit, (tiles_x, tiles_y)).apply`` on a CuPy uint8 ``[H, W]``,
    ``[H, W, 1]`` or (luminance, as OpenCV's Lab recipe) ``[H, W, 3]`` image, on CuPy's
    current stream. Returns a new array of the same shape."""
    import cupy as cp

    if image.dtype != cp.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ValueError(f"exact GPU CLAHE takes uint8 HW, HW1 or HW3 images, got {image.dtype} {image.shape}")
    if image.ndim == 3 and image.shape[2] == 3:
        rgb2lab, lab2rgb = _lab_tables_on(cp.cuda.Device().id)

        def grey(plane):
            return clahe_cupy(plane, tiles_x=tiles_x, tiles_y=tiles_y, clip_limit=clip_limit)

        return equalise_luminance(image, grey, rgb2lab, lab2rgb)
    height, width = int(image.shape[0]), int(image.shape[1])
    src = cp.ascontiguousarray(image)
    dst = cp.empty_like(src)
    if height * width == 0:
        return dst
    g = tile_geometry(height, width, tiles_x, tiles_y, clip_limit)
    luts = cp.empty(tiles_x * tiles_y * 256, cp.uint8)
    tile_luts, apply = _kernels(cp.cuda.Device().id)
    i32 = np.int32
    tile_luts((tiles_x, tiles_y), (_THREADS,),
              (src, i32(height), i32(width), i32(g.tile_w), i32(g.tile_h), i32(tiles_x),
               i32(g.limit), g.lut_scale, luts))
    pixels = height * width
    apply(((pixels + _THREADS - 1) // _THREADS,), (_THREADS,),
          (src, dst, i32(height), i32(width), g.inv_tile_w, g.inv_tile_h, i32(tiles_x),
           i32(tiles_y), luts))
    return dst


def _batch_function(tiles_x: int, tiles_y: int, clip_limit: float):
    def run(images):
        return [clahe_cupy(im, tiles_x=tiles_x, tiles_y=tiles_y, clip_limit=clip_limit) for im in images]

    return run


def clahe_exact_gpu(images, *, tiles_x: int, tiles_y: int, clip_limit: float):
    """A GPU DataNode of HWC uint8 grey or RGB images → the same, equalised as OpenCV does."""
    from nvidia.dali import fn
    from nvidia.dali.pipeline import do_not_convert

    # Built outside AutoGraph: pipelines with conditionals (clahe_p < 1) must not rewrite it.
    function = do_not_convert(_batch_function)(int(tiles_x), int(tiles_y), float(clip_limit))
    return fn.python_function(images, function=function, device="gpu", batch_processing=True,
                              num_outputs=1, output_layouts="HWC")
