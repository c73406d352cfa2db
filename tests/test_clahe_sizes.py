"""CLAHE equal to OpenCV at every image size: the in-graph reflect-101 pad, CLAHE, crop back.

OpenCV pads an image whose sides are not both multiples of the grid; DALI's GPU kernel does
not, so ``clahe_like_opencv`` pads in the graph. On CPU (where ``fn.clahe`` calls OpenCV)
the result must stay exact; the ``gpu`` tests check the GPU within one grey level.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("nvidia.dali")

from nvidia.dali import fn, pipeline_def, types  # noqa: E402

from hbseg.dali_pipes.clahe import clahe_like_opencv, pad_reflect101_to_grid  # noqa: E402
from hbseg.data import read_gray_png  # noqa: E402

GRIDS = [(8, 8), (3, 5), (7, 2)]  # (tiles_x, tiles_y), OpenCV's order


def synth(h: int, w: int, seed: int) -> np.ndarray:
    """A synthetic hand resized to ``h x w`` (aspect changed on purpose)."""
    from hbseg.data.synth import generate_hand

    image, _ = generate_hand(seed, size=256)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)


def run(build, images: list[np.ndarray], device: str = "cpu", with_shape: bool = False,
        conditional: bool = False) -> list[np.ndarray]:
    """``build(node[, shape_hw])`` on one batch of HW uint8 images; HW numpy out."""
    batch = [np.ascontiguousarray(im[..., None]) for im in images]
    shapes = [np.float32(im.shape[:2]) for im in images]

    @pipeline_def(enable_conditionals=conditional)
    def pipe():
        x = fn.external_source(source=lambda: batch, batch=True, layout="HWC")
        x = x.gpu() if device == "gpu" else x
        args = (fn.external_source(source=lambda: shapes, batch=True),) if with_shape else ()
        if conditional:  # every sample takes the branch; the graph is built inside it
            if fn.random.coin_flip(probability=1.0, dtype=types.BOOL):
                out = build(x, *args)
            else:
                out = x
            return out
        return build(x, *args)

    p = pipe(batch_size=len(batch), num_threads=1, device_id=0 if device == "gpu" else None,
             seed=0)
    p.build()
    (out,) = p.run()
    out = out.as_cpu() if device == "gpu" else out
    return [np.array(out[i])[..., 0] for i in range(len(batch))]


def cv_clahe(image: np.ndarray, grid, clip: float = 2.0) -> np.ndarray:
    return cv2.createCLAHE(clipLimit=clip, tileGridSize=grid).apply(image)


def cv_pad(image: np.ndarray, grid) -> np.ndarray:
    """OpenCV CLAHE's own padding (clahe.cpp): both sides, only when either is ragged."""
    tx, ty = grid
    h, w = image.shape
    if h % ty == 0 and w % tx == 0:
        return image
    return cv2.copyMakeBorder(image, 0, ty - h % ty, 0, tx - w % tx, cv2.BORDER_REFLECT_101)


def clahe_graph(grid, clip: float = 2.0, always_pad: bool = True):
    """The padded path by default, also on CPU (where plain ``fn.clahe`` is OpenCV already)."""
    return lambda x, *s: clahe_like_opencv(x, tiles_x=grid[0], tiles_y=grid[1], clip_limit=clip,
                                           shape_hw=s[0] if s else None, always_pad=always_pad)


# ----------------------------------------------------------------------------- CPU


def test_opencv_pads_both_sides_when_either_is_ragged():
    """The rule the graph copies: with 97 % 8 != 0 and 200 % 8 == 0 OpenCV still adds a
    whole tile of columns; padding to the next multiple only would differ."""
    image = synth(97, 200, seed=1)
    h, w = image.shape
    ref = cv_clahe(image, (8, 8))
    ours = cv_clahe(cv_pad(image, (8, 8)), (8, 8))[:h, :w]
    next_multiple = cv2.copyMakeBorder(image, 0, 7, 0, 0, cv2.BORDER_REFLECT_101)
    assert np.array_equal(ours, ref)
    assert not np.array_equal(cv_clahe(next_multiple, (8, 8))[:h, :w], ref)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("with_shape", [False, True])
def test_pad_equals_copy_make_border(grid, with_shape):
    rng = np.random.default_rng(0)
    sizes = [(97, 203), (96, 200), (64, 63), (16, 9), (5, 3), (40, 40)]  # incl. pad > side
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in sizes]
    out = run(lambda x, *s: pad_reflect101_to_grid(x, *s, tiles_x=grid[0], tiles_y=grid[1]),
              images, with_shape=with_shape)
    for image, o in zip(images, out, strict=True):
        ref = cv_pad(image, grid)
        assert o.shape == ref.shape and np.array_equal(o, ref)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("always_pad", [True, False])
def test_clahe_equals_opencv_on_odd_sizes(grid, always_pad):
    sizes = [(1001, 777), (97, 203), (768, 1024), (512, 512)]  # ragged and divisible mixed
    images = [synth(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    for image, o in zip(images, run(clahe_graph(grid, 3.0, always_pad), images), strict=True):
        assert o.shape == image.shape
        assert np.array_equal(o, cv_clahe(image, grid, 3.0))


def test_clahe_with_shape_input_and_inside_a_conditional():
    images = [synth(301, 257, seed=5), synth(256, 256, seed=6)]
    grid = (8, 8)
    refs = [cv_clahe(im, grid) for im in images]
    for out in (run(clahe_graph(grid), images, with_shape=True),
                run(clahe_graph(grid), images, conditional=True)):
        assert all(np.array_equal(o, r) for o, r in zip(out, refs, strict=True))


def test_clahe_equals_opencv_on_real_radiographs(real_hands):
    images = [read_gray_png(p) for p in real_hands[:4]]  # 592x910 … 1099x1430
    for grid in [(8, 8), (3, 5)]:
        out = run(clahe_graph(grid), images)
        assert all(np.array_equal(o, cv_clahe(im, grid)) for o, im in zip(out, images, strict=True))


def test_bad_grid_is_a_clear_error():
    with pytest.raises(ValueError, match="tiles_y must be a positive int"):
        run(lambda x: clahe_like_opencv(x, tiles_x=8, tiles_y=0, clip_limit=2.0), [synth(64, 64, 0)])


# ----------------------------------------------------------------------------- GPU


GPU_SIZES = [(1001, 777), (2048, 1500), (2048, 2048), (97, 203)]


@pytest.mark.gpu
@pytest.mark.parametrize("grid", [(8, 8), (3, 5)])
@pytest.mark.parametrize("with_shape, conditional", [(False, False), (True, False), (False, True)])
def test_gpu_clahe_equals_opencv_at_any_size(grid, with_shape, conditional):
    # hbseg's kernel on grey GPU nodes: its source equals cv2 bit for bit (test_clahe_exact.py)
    images = [synth(h, w, seed=i) for i, (h, w) in enumerate(GPU_SIZES)]
    out = run(clahe_graph(grid, always_pad=False), images, device="gpu", with_shape=with_shape,
              conditional=conditional)
    for image, o in zip(images, out, strict=True):
        diff = np.abs(o.astype(np.int16) - cv_clahe(image, grid))
        assert o.shape == image.shape and diff.max() == 0, \
            f"{image.shape}: max |GPU - cv2| {int(diff.max())} on {int((diff > 0).sum())} pixels"


@pytest.mark.gpu
def test_gpu_dali_clahe_kernel_stays_within_two_levels():
    # DALI 2.4.0's own kernel, still selectable (gpu_kernel="dali"): its tables round down
    # (-1 on about half the pixels) and its interpolation fuses multiply-adds (+-1 more on a
    # few): at most 2 levels, a mean near -0.5
    images = [synth(h, w, seed=i) for i, (h, w) in enumerate(GPU_SIZES)]
    graph = lambda x: clahe_like_opencv(x, tiles_x=8, tiles_y=8, clip_limit=2.0, gpu_kernel="dali")  # noqa: E731
    for image, o in zip(images, run(graph, images, device="gpu"), strict=True):
        diff = o.astype(np.int16) - cv_clahe(image, (8, 8))
        assert np.abs(diff).max() <= 2, \
            f"{image.shape}: max |DALI - cv2| {int(np.abs(diff).max())}, mean {diff.mean():.3f}"


@pytest.mark.gpu
def test_gpu_pad_equals_copy_make_border():
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(1001, 777), (16, 9), (64, 64)]]
    out = run(lambda x: pad_reflect101_to_grid(x, tiles_x=8, tiles_y=8), images, device="gpu")
    assert all(np.array_equal(o, cv_pad(im, (8, 8))) for o, im in zip(out, images, strict=True))
