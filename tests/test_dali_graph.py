"""The DALI graph against OpenCV/albumentations: CLAHE, the affine warp, mask geometry, bits.

Everything runs DALI on CPU (``device_id=None``); the ``gpu``-marked tests repeat the parity
checks with ``device="gpu"``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("nvidia.dali")

from nvidia.dali import fn, pipeline_def  # noqa: E402

from hbseg.dali_pipes import graph  # noqa: E402
from hbseg.dali_pipes.config import AugmentConfig, NormalizeConfig  # noqa: E402
from hbseg.dali_pipes.draw import SampleDraw, sample_matrix  # noqa: E402
from hbseg.dali_pipes.pipelines import eval_pipeline, train_pipeline  # noqa: E402
from hbseg.dali_pipes.sources import AugmentParams, FileSource  # noqa: E402
from hbseg.data import NUM_CLASSES, pack_masks, read_gray_png, read_packed_png, write_packed_png  # noqa: E402

NORM = NormalizeConfig()
GEOMETRY_ONLY = AugmentConfig(clahe_p=0.0, ssr_p=1.0, shift_limit=0.1, scale_limit=0.15,
                              rotate_limit=30.0, hflip_p=0.5, brightness_contrast_p=0.0)


# ----------------------------------------------------------------------------- helpers


def numpy_samples(tl) -> list[np.ndarray]:
    from nvidia.dali.backend import TensorListGPU

    tl = tl.as_cpu() if isinstance(tl, TensorListGPU) else tl
    return [np.array(tl[i]) for i in range(len(tl))]


def _const(batch):
    return lambda: batch  # DALI passes an iteration number to a callable that takes one


def run_graph(build, *inputs: list[np.ndarray], device: str = "cpu", seed: int = 0):
    """Feed per-sample HWC arrays to ``build(*nodes)`` in a one-batch pipeline; numpy out."""

    @pipeline_def(enable_conditionals=True)
    def pipe():
        nodes = []
        for batch in inputs:
            layout = "HWC" if batch[0].ndim == 3 else None
            node = fn.external_source(source=_const(batch), batch=True, layout=layout)
            nodes.append(node.gpu() if device == "gpu" and layout else node)
        return build(*nodes)

    p = pipe(batch_size=len(inputs[0]), num_threads=1, device_id=0 if device == "gpu" else None,
             seed=seed)
    p.build()
    outs = p.run()
    outs = outs if isinstance(outs, tuple) else (outs,)
    return [numpy_samples(o) for o in outs]


def run_files(pipeline, files: list[tuple[str, str]], device: str = "cpu", seed: int = 0,
              size: int = 128, crop: int | None = None, aug: AugmentConfig = AugmentConfig(),
              train: bool = True, **graph_kw):
    """One batch of ``pipeline`` over (image, mask) files, epoch 0 of ``seed``'s draws:
    numpy outputs, then the 2x3 matrix each sample was warped with."""
    shapes = [read_gray_png(f[0]).shape for f in files]
    params = AugmentParams(aug, shapes, size, crop, train=train, seed=seed)
    src = FileSource([[f[0] for f in files], [f[1] for f in files]], len(files), params=params,
                     shuffle=False)
    p = pipeline(src, device=device, size=size, aug=aug, batch_size=len(files), num_threads=1,
                 device_id=0 if device == "gpu" else None, seed=0, **graph_kw)
    p.build()
    outs = p.run()
    return [numpy_samples(o) for o in outs], params(0, np.arange(len(files)))[0]


def denorm(x: np.ndarray, norm: NormalizeConfig = NORM) -> np.ndarray:
    """CHW normalised float → HW grey levels (float)."""
    return (x.astype(np.float64)[0] * norm.std + norm.mean) * 255.0


def as_u32(packed: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(packed).view("<u4")[..., 0]


def cv_warp(src: np.ndarray, mt: np.ndarray, size: int, interp) -> np.ndarray:
    return cv2.warpAffine(src, graph.to_opencv_matrix(mt), (size, size), flags=interp,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def nearest_warp(src: np.ndarray, mt: np.ndarray, size: int, eps=(0.0, 0.0)) -> np.ndarray:
    """Exact nearest-neighbour reference in DALI's convention: the source pixel that contains
    ``inverse(mt)`` applied to each destination pixel's centre; 0 outside the source."""
    inv = np.linalg.inv(np.vstack([np.asarray(mt, np.float64), [0, 0, 1]]))
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    sx = np.floor(inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2] + eps[0]).astype(int)
    sy = np.floor(inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2] + eps[1]).astype(int)
    inside = (sx >= 0) & (sx < src.shape[1]) & (sy >= 0) & (sy < src.shape[0])
    out = np.zeros((size, size) + src.shape[2:], src.dtype)
    out[inside] = src[sy[inside], sx[inside]]
    return out


def nearest_agreement(out: np.ndarray, src: np.ndarray, mt: np.ndarray) -> float:
    """Share of pixels equal to the nearest reference; a source point within 1e-3 px of a
    pixel edge (a tie: DALI inverts the float32 matrix in float32, which moves points by a
    few 1e-4 px at these coordinates) counts with either neighbour."""
    size = out.shape[0]
    ok = np.zeros((size, size), bool)
    for ex in (-1e-3, 0.0, 1e-3):
        for ey in (-1e-3, 0.0, 1e-3):
            ok |= as_u32(out) == as_u32(nearest_warp(src, mt, size, (ex, ey)))
    return float(ok.mean())


def synth_images(tiny_root: Path) -> list[np.ndarray]:
    return [read_gray_png(p) for p in sorted((tiny_root / "train" / "DCM").glob("*/*.png"))[:4]]


def synth_pairs(tiny_cache: Path) -> list[tuple[str, str]]:
    from hbseg.data import load_cache_index

    idx = load_cache_index(tiny_cache)
    return list(zip(idx["image_path"][:4], idx["mask_path"][:4], strict=True))


def label_coded(tmp: Path, size: int = 256, cell: int = 32) -> tuple[str, str]:
    """An image whose grey level encodes the label of each pixel (class c → 8·(c+1),
    background 0), with the matching packed mask: any image/mask misalignment shows."""
    yy, xx = np.mgrid[0:size, 0:size]
    cell_id = (yy // cell) * (size // cell) + (xx // cell)
    label = cell_id % (NUM_CLASSES + 1) - 1  # -1 = background
    image = np.where(label >= 0, 8 * (label + 1), 0).astype(np.uint8)
    masks = np.stack([(label == c) for c in range(NUM_CLASSES)])
    img_path, mask_path = tmp / "coded.png", tmp / "coded_mask.png"
    cv2.imwrite(str(img_path), image)
    write_packed_png(mask_path, pack_masks(masks))
    return str(img_path), str(mask_path)


# ----------------------------------------------------------------------------- CLAHE


def _clahe_parity(images: list[np.ndarray], device: str, clip: float, grid: tuple[int, int]):
    aug = AugmentConfig(clahe_p=1.0, clahe_clip_limit=clip, clahe_tile_grid=grid)
    (out,) = run_graph(lambda x: graph.clahe(x, aug), [im[..., None] for im in images], device=device)
    ref = cv2.createCLAHE(clipLimit=clip, tileGridSize=grid)
    return [np.abs(o[..., 0].astype(int) - ref.apply(im)).max() for o, im in zip(out, images, strict=True)]


@pytest.mark.parametrize("clip,grid", [(2.0, (8, 8)), (4.0, (4, 6))])
def test_clahe_equals_opencv_on_synthetic_hands(tiny_root, clip, grid):
    rng = np.random.default_rng(0)
    odd = rng.integers(0, 256, (250, 333), dtype=np.uint8)  # sizes not divisible by the grid
    assert _clahe_parity(synth_images(tiny_root) + [odd], "cpu", clip, grid) == [0] * 5


def test_clahe_equals_opencv_on_real_radiographs(real_hands):
    images = [read_gray_png(p) for p in real_hands[:4]]
    assert _clahe_parity(images, "cpu", 2.0, (8, 8)) == [0] * len(images)


def test_clahe_predicate_chooses_per_sample(tiny_root):
    image = synth_images(tiny_root)[0]
    aug = AugmentConfig(clahe_p=0.5)
    flags = [np.bool_(f) for f in (True, False, False, True, True, False)]
    (out,) = run_graph(lambda x, f: graph.clahe(x, aug, predicate=f),
                       [image[..., None]] * len(flags), flags)
    ref = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(image)
    for o, f in zip(out, flags, strict=True):
        assert np.array_equal(o[..., 0], ref if f else image)


# ----------------------------------------------------------------------------- warp


@pytest.mark.parametrize("crop", [None, 160])
def test_train_warp_equals_opencv_with_the_same_matrix(tiny_cache, crop):
    files = synth_pairs(tiny_cache)
    aug = replace(GEOMETRY_ONLY, clahe_p=1.0)  # CLAHE on: the reference applies it too
    (images, masks), mts = run_files(train_pipeline, files, size=128, crop=crop, aug=aug,
                                     norm=NORM, seed=7)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    flips = 0
    for (img_path, mask_path), x, m, mt in zip(files, images, masks, mts, strict=True):
        ref = cv_warp(clahe.apply(read_gray_png(img_path)), mt, 128, cv2.INTER_LINEAR)
        assert x.shape == (1, 128, 128) and x.dtype == np.float32
        assert np.abs(denorm(x) - ref).mean() < 0.5
        assert nearest_agreement(m, read_packed_png(mask_path), mt) == 1.0
        flips += np.linalg.det(mt[:, :2]) < 0
    assert 0 < flips < len(files)  # this seed flips some samples and not others


def test_warp_pair_equals_opencv_on_real_radiograph(real_hands):
    image = read_gray_png(real_hands[0])
    h, w = image.shape
    mt = sample_matrix(SampleDraw(flip=True, angle=12.0, scale=0.9, shift_x=0.05), (h, w), 192, None)
    (out,) = run_graph(lambda x, m: graph.warp_pair(x, None, m, 192)[0], [image[..., None]], [mt])
    ref = cv_warp(image, mt, 192, cv2.INTER_LINEAR)
    assert np.abs(out[0][..., 0].astype(int) - ref).mean() < 0.5


def test_eval_resize_is_the_same_for_image_and_mask_and_deterministic(tiny_cache):
    files = synth_pairs(tiny_cache)
    kw = dict(size=96, aug=AugmentConfig(clahe_p=1.0), norm=NORM, train=False)
    (a_img, a_mask), _ = run_files(eval_pipeline, files, seed=1, **kw)
    (b_img, b_mask), _ = run_files(eval_pipeline, files, seed=2, **kw)
    assert all(np.array_equal(x, y) for x, y in zip(a_img + a_mask, b_img + b_mask, strict=True))
    scale = np.float32([[96 / 256, 0, 0], [0, 96 / 256, 0]])
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    for (img_path, mask_path), x, m in zip(files, a_img, a_mask, strict=True):
        ref = cv_warp(clahe.apply(read_gray_png(img_path)), scale, 96, cv2.INTER_LINEAR)
        assert np.abs(denorm(x) - ref).mean() < 0.5
        assert nearest_agreement(m, read_packed_png(mask_path), scale) == 1.0


def test_eval_full_res_mask_is_the_original(tiny_cache):
    files = synth_pairs(tiny_cache)
    (_, masks), _ = run_files(eval_pipeline, files, size=64, aug=AugmentConfig(), norm=NORM,
                              full_res_mask=True, train=False)
    for (_, mask_path), m in zip(files, masks, strict=True):
        assert np.array_equal(m, read_packed_png(mask_path))


# ----------------------------------------------------------------------------- mask geometry


def _interior_agreement(x: np.ndarray, m: np.ndarray, shift: int = 0) -> float:
    """Where the mask label is constant over a 3x3 neighbourhood, does the image hold its code?"""
    bits = np.roll(as_u32(m), shift, axis=1)
    label = np.where(bits == 0, -1, np.log2(np.maximum(bits, 1)).astype(int))
    code = np.where(label >= 0, 8 * (label + 1), 0)
    pad = np.pad(label, 1, mode="edge")
    same = np.ones_like(label, dtype=bool)
    for dy in range(3):
        for dx in range(3):
            same &= pad[dy:dy + label.shape[0], dx:dx + label.shape[1]] == label
    return float((np.abs(denorm(x) - code)[same] <= 1.0).mean())


@pytest.mark.parametrize("crop", [None, 160])
def test_mask_geometry_equals_image_geometry(tmp_path, crop):
    files = [label_coded(tmp_path)] * 6
    (images, masks), mts = run_files(train_pipeline, files, size=128, crop=crop,
                                     aug=GEOMETRY_ONLY, norm=NORM, seed=11)
    assert len({m.tobytes() for m in mts}) == len(files)  # six different geometries
    for x, m in zip(images, masks, strict=True):
        assert _interior_agreement(x, m) > 0.998
        # the check does see a 2-px slip or a flip of the mask alone
        assert _interior_agreement(x, m, shift=2) < 0.98
        assert _interior_agreement(x, m[:, ::-1]) < 0.5


def test_packed_bits_survive_augmentation(tiny_cache):
    files = synth_pairs(tiny_cache)
    aug = AugmentConfig(clahe_p=0.5, ssr_p=1.0, rotate_limit=45, scale_limit=0.3, hflip_p=0.5,
                        brightness_contrast_p=1.0)
    for crop, seed in [(None, 0), (200, 1)]:
        (_, masks), _ = run_files(train_pipeline, files, size=160, crop=crop, aug=aug, norm=NORM,
                                  seed=seed)
        for (_, mask_path), m in zip(files, masks, strict=True):
            allowed = set(np.unique(as_u32(read_packed_png(mask_path)))) | {0}
            assert set(np.unique(as_u32(m))) <= allowed
            assert m.shape == (160, 160, 4) and m.dtype == np.uint8


# ----------------------------------------------------------------------------- intensity


def test_brightness_contrast_matches_albumentations(tiny_root):
    import albucore

    image = synth_images(tiny_root)[0]
    for alpha, beta in [(1.15, 0.1), (0.8, -0.2), (1.0, 0.0)]:
        (out,) = run_graph(lambda x, a=alpha, b=beta: graph.brightness_contrast(x, a, b),
                           [image[..., None]])
        ref = albucore.multiply_add(image, alpha, beta * 255.0, inplace=False)
        assert np.abs(out[0][..., 0].astype(int) - ref).max() <= 1  # DALI rounds, albucore truncates


def test_brightness_contrast_per_sample_values(tiny_root):
    image = synth_images(tiny_root)[0]
    alphas = [np.float32(a) for a in (1.0, 1.2, 0.85)]
    betas = [np.float32(b) for b in (0.0, -0.1, 0.15)]
    (out,) = run_graph(graph.brightness_contrast, [image[..., None]] * 3, alphas, betas)
    assert np.array_equal(out[0][..., 0], image)  # alpha 1, beta 0 is the identity
    for o, a, b in zip(out[1:], alphas[1:], betas[1:], strict=True):
        ref = np.clip(np.rint(image * a + b * 255.0), 0, 255)
        assert np.abs(o[..., 0].astype(int) - ref).max() <= 1


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_normalize(dtype):
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    norm = NormalizeConfig(mean=0.4, std=0.3, dtype=dtype)
    (out,) = run_graph(lambda x: graph.normalize(x, norm), [image[..., None]])
    ref = (image / 255.0 - 0.4) / 0.3
    assert out[0].shape == (1, 16, 16) and out[0].dtype == np.dtype(dtype)
    assert np.abs(out[0][0].astype(np.float64) - ref).max() < (1e-2 if dtype == "float16" else 1e-5)


def test_to_opencv_matrix_maps_pixel_corners_to_centres():
    mt = np.float32([[2, 0, 0], [0, 2, 0]])  # 2x upscale in corner coordinates
    cv = graph.to_opencv_matrix(mt)
    assert np.allclose(cv @ [0, 0, 1], [0.5, 0.5])  # pixel 0's centre lands between 0 and 1


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_clahe_equals_opencv(tiny_root, real_hands):
    # grey GPU nodes run hbseg's kernel, whose source equals cv2 bit for bit on CPU
    # (test_clahe_exact.py): nothing is left to tolerate
    images = synth_images(tiny_root) + [read_gray_png(p) for p in real_hands[:2]]
    diffs = _clahe_parity(images, "gpu", 2.0, (8, 8))
    assert max(diffs) == 0, f"max |GPU - cv2| per image: {diffs}"


@pytest.mark.gpu
def test_gpu_mixed_decode_is_lossless(tiny_cache):
    from hbseg.dali_pipes.pipelines import decode_pipeline

    files = synth_pairs(tiny_cache)
    src = FileSource([[f[0] for f in files], [f[1] for f in files]], len(files), shuffle=False)
    p = decode_pipeline(src, device="gpu", batch_size=len(files), num_threads=1, device_id=0)
    images, masks = [numpy_samples(o) for o in p.run()]
    for (img_path, mask_path), x, m in zip(files, images, masks, strict=True):
        assert np.array_equal(x[..., 0], read_gray_png(img_path))
        assert np.array_equal(m, read_packed_png(mask_path))


@pytest.mark.gpu
@pytest.mark.parametrize("crop", [None, 160])
def test_gpu_train_warp_and_bits(tiny_cache, crop):
    files = synth_pairs(tiny_cache)
    (images, masks), mts = run_files(train_pipeline, files, device="gpu", size=128, crop=crop,
                                     aug=GEOMETRY_ONLY, norm=NORM, seed=7)
    for (img_path, mask_path), x, m, mt in zip(files, images, masks, mts, strict=True):
        ref = cv_warp(read_gray_png(img_path), mt, 128, cv2.INTER_LINEAR)
        assert np.abs(denorm(x) - ref).mean() < 0.5
        packed = read_packed_png(mask_path)
        assert nearest_agreement(m, packed, mt) > 0.999
        assert set(np.unique(as_u32(m))) <= set(np.unique(as_u32(packed))) | {0}


@pytest.mark.gpu
def test_gpu_mask_geometry_equals_image_geometry(tmp_path):
    files = [label_coded(tmp_path)] * 4
    (images, masks), _ = run_files(train_pipeline, files, device="gpu", size=128, crop=None,
                                   aug=GEOMETRY_ONLY, norm=NORM, seed=11)
    for x, m in zip(images, masks, strict=True):
        assert _interior_agreement(x, m) > 0.998
