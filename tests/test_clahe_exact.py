"""hbseg's CLAHE kernel source equals ``cv2.createCLAHE(...).apply`` bit for bit.

On CPU, ``clahe_exact.cu`` is compiled with the C++ compiler (``-ffp-contract=off``, as the
source's separately rounded float operations require) and its reference entry point runs the
same per-bin and per-pixel functions as the CUDA kernels, with the geometry from
``clahe_gpu.tile_geometry``. The ``gpu`` tests run the kernels themselves, alone and inside a
DALI pipeline.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from hbseg.dali_pipes.clahe_gpu import KERNEL_SOURCE, equalise_luminance, lab_tables, tile_geometry

CLIPS = (0.0, 0.5, 1.0, 2.0, 3.0, 4.5, 40.0)


@pytest.fixture(scope="module")
def kernel_lib(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler: the kernel source cannot be built on this CPU")
    lib = tmp_path_factory.mktemp("clahe") / "libclahe_exact.so"
    subprocess.run([cxx, "-O2", "-shared", "-fPIC", "-ffp-contract=off", "-x", "c++",
                    str(KERNEL_SOURCE), "-o", str(lib)], check=True, capture_output=True)
    so = ctypes.CDLL(str(lib))
    i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    so.clahe_reference.argtypes = [p, p, i, i, i, i, i, i, i, f, f, f, p]
    so.clahe_reference.restype = None
    return so


def kernel_clahe(lib, image: np.ndarray, tiles_x: int, tiles_y: int, clip: float) -> np.ndarray:
    image = np.ascontiguousarray(image)
    h, w = image.shape
    g = tile_geometry(h, w, tiles_x, tiles_y, clip)
    out = np.empty_like(image)
    luts = np.empty(tiles_x * tiles_y * 256, np.uint8)
    lib.clahe_reference(image.ctypes.data, out.ctypes.data, h, w, g.tile_w, g.tile_h, tiles_x,
                        tiles_y, g.limit, float(g.lut_scale), float(g.inv_tile_w),
                        float(g.inv_tile_h), luts.ctypes.data)
    return out


def cv_clahe(image: np.ndarray, tiles_x: int, tiles_y: int, clip: float) -> np.ndarray:
    return cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles_x, tiles_y)).apply(image)


def random_case(rng, k: int, hand: np.ndarray):
    h, w = int(rng.integers(1, 301)), int(rng.integers(1, 301))
    tiles_x, tiles_y = int(rng.integers(1, 17)), int(rng.integers(1, 17))
    clip = float(rng.choice(CLIPS))
    kind = k % 3  # noise, smooth noise (narrow histograms: clipping), a resized hand
    if kind == 0:
        image = rng.integers(0, 256, (h, w), dtype=np.uint8)
    elif kind == 1:
        image = cv2.GaussianBlur(rng.integers(0, 256, (h, w), dtype=np.uint8), (0, 0), 3)
    else:
        image = cv2.resize(hand, (w, h), interpolation=cv2.INTER_LINEAR)
    return image, tiles_x, tiles_y, clip


def test_kernel_source_equals_opencv_on_400_random_cases(kernel_lib):
    from hbseg.data.synth import generate_hand

    hand, _ = generate_hand(3, size=256)
    rng = np.random.default_rng(0)
    bad = []
    for k in range(400):
        image, tx, ty, clip = random_case(rng, k, hand)
        diff = np.abs(kernel_clahe(kernel_lib, image, tx, ty, clip).astype(np.int16)
                      - cv_clahe(image, tx, ty, clip))
        if diff.max():
            bad.append((image.shape, (tx, ty), clip, int(diff.max()), int((diff > 0).sum())))
    assert not bad, f"{len(bad)} of 400 cases differ from cv2 (shape, grid, clip, max, pixels): {bad[:5]}"


@pytest.mark.parametrize("grid", [(8, 8), (3, 5), (7, 2), (16, 1)])
def test_kernel_source_equals_opencv_on_large_and_real_images(kernel_lib, real_hands, grid):
    from hbseg.data import read_gray_png
    from hbseg.data.synth import generate_hand

    hand, _ = generate_hand(0, size=256)
    images = [cv2.resize(hand, (w, h), interpolation=cv2.INTER_LINEAR)
              for h, w in [(1001, 777), (2048, 1500), (97, 203)]]
    images += [read_gray_png(p) for p in real_hands]
    for image in images:
        for clip in (2.0, 3.0):
            diff = np.abs(kernel_clahe(kernel_lib, image, *grid, clip).astype(np.int16)
                          - cv_clahe(image, *grid, clip))
            assert diff.max() == 0, (image.shape, grid, clip, int(diff.max()), int((diff > 0).sum()))


def cv_clahe_rgb(image: np.ndarray, tiles_x: int, tiles_y: int, clip: float) -> np.ndarray:
    from hbseg.torch_loaders.torch_loader import clahe_rgb

    return clahe_rgb(image, cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles_x, tiles_y)))


def colour_cases():
    from hbseg.data.synth import generate_hand

    rng = np.random.default_rng(2)
    hand, _ = generate_hand(1, size=256)
    tint = np.stack([hand, cv2.GaussianBlur(hand, (0, 0), 5), 255 - hand], -1)
    for k in range(24):
        h, w = int(rng.integers(1, 200)), int(rng.integers(1, 200))
        image = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if k % 2
                 else cv2.resize(tint, (w, h), interpolation=cv2.INTER_LINEAR))
        yield image, int(rng.integers(1, 17)), int(rng.integers(1, 17)), float(rng.choice(CLIPS))


def test_colour_recipe_equals_opencv(kernel_lib):
    rgb2lab, lab2rgb = lab_tables()
    bad = []
    for image, tx, ty, clip in colour_cases():
        def grey(plane, tx=tx, ty=ty, clip=clip):
            return kernel_clahe(kernel_lib, plane, tx, ty, clip)

        out = equalise_luminance(image, grey, rgb2lab, lab2rgb)
        diff = np.abs(out.astype(np.int16) - cv_clahe_rgb(image, tx, ty, clip))
        if diff.max():
            bad.append((image.shape, (tx, ty), clip, int(diff.max()), int((diff > 0).sum())))
    assert not bad, f"{len(bad)} of 24 colour cases differ from cv2 (shape, grid, clip, max, pixels): {bad[:5]}"


NVRTC_CHECK = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
src = open(sys.argv[2], "rb").read()
prog = ctypes.c_void_p()
assert lib.nvrtcCreateProgram(ctypes.byref(prog), src, b"clahe_exact.cu", 0, None, None) == 0
opts = (ctypes.c_char_p * 2)(b"--gpu-architecture=compute_90", b"--fmad=false")
rc = lib.nvrtcCompileProgram(prog, 2, opts)
n = ctypes.c_size_t()
lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
log = ctypes.create_string_buffer(n.value)
lib.nvrtcGetProgramLog(prog, log)
assert rc == 0, log.value.decode()
lib.nvrtcGetPTXSize(prog, ctypes.byref(n))
ptx = ctypes.create_string_buffer(n.value)
lib.nvrtcGetPTX(prog, ptx)
print(ptx.value.decode())
"""


def _nvrtc():
    import glob
    import sysconfig

    found = sorted(glob.glob(f"{sysconfig.get_paths()['purelib']}/nvidia/*/lib/libnvrtc.so.*"))
    found = [p for p in found if "builtins" not in p and ".alt." not in p]
    return found[0] if found else None


def test_kernel_compiles_with_nvrtc_without_fused_multiply_adds():
    import os
    import sys

    lib = _nvrtc()
    if lib is None:
        pytest.skip("no NVRTC library here (it comes with torch's CUDA packages)")
    env = {**os.environ, "LD_LIBRARY_PATH": os.path.dirname(lib)}
    r = subprocess.run([sys.executable, "-c", NVRTC_CHECK, lib, str(KERNEL_SOURCE)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    ptx = r.stdout
    assert ".entry clahe_tile_luts" in ptx and ".entry clahe_apply" in ptx
    # one fused multiply-add changes a grey level on some pixels (OpenCV rounds each step)
    assert "fma." not in ptx and "mad.f32" not in ptx, "the PTX fuses a float multiply-add"


def test_tile_geometry_follows_opencv_padding():
    g = tile_geometry(100, 64, 8, 8, 2.0)  # H ragged: both sides padded, W by a whole tile
    assert (g.tile_w, g.tile_h) == (9, 13)
    assert g.limit == int(2.0 * 9 * 13 / 256) or g.limit == 1
    assert tile_geometry(64, 64, 8, 8, 0.0).limit == 0
    assert tile_geometry(64, 64, 8, 8, 0.01).limit == 1  # OpenCV never clips below 1
    assert g.lut_scale.dtype == np.float32 and g.lut_scale == np.float32(255) / np.float32(117)


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_kernel_equals_opencv_on_random_cases_and_real_images(real_hands):
    import cupy as cp

    from hbseg.dali_pipes.clahe_gpu import clahe_cupy
    from hbseg.data import read_gray_png
    from hbseg.data.synth import generate_hand

    hand, _ = generate_hand(3, size=256)
    rng = np.random.default_rng(1)
    cases = [random_case(rng, k, hand) for k in range(200)]
    cases += [(read_gray_png(p), 8, 8, 2.0) for p in real_hands]
    cases += [(cv2.resize(hand, (2048, 2048)), 8, 8, 2.0), (cv2.resize(hand, (1500, 2048)), 3, 5, 3.0)]
    bad = []
    for image, tx, ty, clip in cases:
        out = cp.asnumpy(clahe_cupy(cp.asarray(image), tiles_x=tx, tiles_y=ty, clip_limit=clip))
        diff = np.abs(out.astype(np.int16) - cv_clahe(image, tx, ty, clip))
        if diff.max():
            bad.append((image.shape, (tx, ty), clip, int(diff.max()), int((diff > 0).sum())))
    assert not bad, f"{len(bad)} of {len(cases)} differ from cv2 (shape, grid, clip, max, pixels): {bad[:5]}"


@pytest.mark.gpu
def test_gpu_colour_equals_opencv():
    import cupy as cp

    from hbseg.dali_pipes.clahe_gpu import clahe_cupy

    bad = []
    cases = list(colour_cases())
    for image, tx, ty, clip in cases:
        out = cp.asnumpy(clahe_cupy(cp.asarray(image), tiles_x=tx, tiles_y=ty, clip_limit=clip))
        diff = np.abs(out.astype(np.int16) - cv_clahe_rgb(image, tx, ty, clip))
        if diff.max():
            bad.append((image.shape, (tx, ty), clip, int(diff.max()), int((diff > 0).sum())))
    assert not bad, f"{len(bad)} of {len(cases)} colour cases differ from cv2: {bad[:5]}"
