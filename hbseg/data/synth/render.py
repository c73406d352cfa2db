"""Rendering a phantom hand like an X-ray, and ``generate_hand``: one image and its polygons."""

from __future__ import annotations

import math

import cv2
import numpy as np

from hbseg.data.classes import CLASSES
from hbseg.errors import ConfigError

from .anatomy import _LONG_BONES, _hand_layout, _sample_params, _smoothstep
from .geometry import _clip_to_box, _dedupe

# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------

_SHIFT = 4  # fillPoly sub-pixel bits


def _fill(mask: np.ndarray, pts: np.ndarray, offset=(0.0, 0.0)) -> None:
    p = np.rint((pts - np.asarray(offset)) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [p], 1, lineType=cv2.LINE_8, shift=_SHIFT)


def _smooth_field(rng: np.random.Generator, shape, cells: int) -> np.ndarray:
    """Smooth random field in about [-1, 1] (bicubic upsampling of a coarse grid)."""
    g = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(g, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _render(
    rng: np.random.Generator, size: int, bones_px: dict[str, np.ndarray], soft_px: dict,
    sesamoids_px: list[np.ndarray], ppm: float,
) -> np.ndarray:
    r = size // 2 if size >= 1024 else size  # render resolution
    f = r / size
    ppr = ppm * f  # pixels per mm at render resolution
    A = np.zeros((r, r), np.float32)  # attenuation

    # soft tissue: thickness grows from the outline inwards like a cylinder
    tissue = np.zeros((r, r), np.uint8)
    for poly in soft_px["polys"]:
        _fill(tissue, poly * f)
    for line, width_mm in soft_px["fingers"]:
        pts = np.rint(line * f * (1 << _SHIFT)).astype(np.int32)
        th = max(1, int(round(width_mm * ppr)))
        cv2.polylines(tissue, [pts], False, 1, thickness=th, lineType=cv2.LINE_AA, shift=_SHIFT)
        cv2.circle(tissue, tuple(int(v) for v in pts[-1]), int(round(0.5 * th * (1 << _SHIFT))),
                   1, -1, lineType=cv2.LINE_AA, shift=_SHIFT)
    # round off the corners of the drawn shapes (the web of the thumb above all)
    tissue = cv2.GaussianBlur((tissue > 0).astype(np.float32), (0, 0), 2.5 * ppr)
    tissue = (tissue > 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(tissue, cv2.DIST_L2, 3) / ppr
    rad = rng.uniform(6.0, 9.0)
    dn = np.minimum(dist / rad, 1.0)
    thick = np.sqrt(np.maximum(0.0, 1.0 - (1.0 - dn) ** 2)).astype(np.float32)
    thick = cv2.GaussianBlur(thick, (0, 0), max(0.7, 0.3 * ppr))  # no staircase at the skin
    soft_amp = rng.uniform(0.28, 0.42)
    A += soft_amp * thick * (1.0 + 0.08 * _smooth_field(rng, (r, r), 6))

    # bones: marrow (rising towards the middle) + a bright cortical band along the outline
    texture = cv2.GaussianBlur(rng.standard_normal((r, r)).astype(np.float32), (0, 0),
                               max(0.6, 0.5 * ppr))
    texture /= max(float(texture.std()), 1e-6)
    marrow_amp = rng.uniform(0.22, 0.32)
    cortex_amp = rng.uniform(0.30, 0.45)
    items = list(bones_px.items()) + [("sesamoid", s) for s in sesamoids_px]
    for label, poly in items:
        p = poly * f
        x0, y0 = np.floor(p.min(0)).astype(int) - 2
        x1, y1 = np.ceil(p.max(0)).astype(int) + 3
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, r), min(y1, r)
        if x1 <= x0 or y1 <= y0:
            continue
        m = np.zeros((y1 - y0, x1 - x0), np.uint8)
        _fill(m, p, (x0, y0))
        # bones leaving the image (radius, ulna) must not get a cortex along the image edge
        pad = cv2.copyMakeBorder(m, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
        d = cv2.distanceTransform(pad, cv2.DIST_L2, 3)[1:-1, 1:-1] / ppr
        shaft = _shaftness(label, p, x0, y0, m.shape, ppr)
        long_bone = shaft is not None
        if shaft is None:
            shaft = np.float32(0.0)
        # tubular bones: thick cortex and a darker medullary cavity mid-shaft, thin cortex and
        # denser trabecular bone at the ends; carpal bones: a thin cortex all round
        band = (0.55 + 0.9 * shaft if long_bone else 0.55) * rng.uniform(0.85, 1.15)
        core = np.sqrt(np.minimum(d / 4.0, 1.0)) * (1.0 - 0.55 * shaft)
        ca = cortex_amp * (0.75 + 0.35 * shaft if long_bone else 0.7)
        ma = marrow_amp * (1.15 if label in ("Radius", "Ulna") else 1.0)
        att = (ma * core * (1.0 + 0.12 * texture[y0:y1, x0:x1])
               + ca * np.exp(-((d - 0.3) / band) ** 2))
        A[y0:y1, x0:x1] += m * att.astype(np.float32)

    # X-ray response, background gradient, blur, upsampling, noise
    yy, xx = np.mgrid[0:r, 0:r].astype(np.float32) / r
    ang = rng.uniform(0, 2 * math.pi)
    grad = (math.cos(ang) * (xx - 0.5) + math.sin(ang) * (yy - 0.5))
    bg = rng.uniform(0.06, 0.22) + rng.uniform(0.0, 0.12) * grad
    bg = bg - rng.uniform(0.0, 0.06) * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 4  # vignetting
    gain = rng.uniform(1.2, 1.7)
    img = bg + (rng.uniform(0.8, 0.95) - bg) * (1.0 - np.exp(-gain * A))
    img += 0.025 * _smooth_field(rng, (r, r), 5)
    img = cv2.GaussianBlur(img, (0, 0), max(0.5, 0.25 * ppr))
    if r != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    gamma = rng.uniform(0.85, 1.15)
    img = np.clip(img, 0.0, 1.0) ** gamma
    out = img * 255.0 + rng.standard_normal((size, size), dtype=np.float32) * rng.uniform(2.0, 4.5)
    return np.clip(out, 0, 255).astype(np.uint8)


def _shaftness(label: str, p: np.ndarray, x0: int, y0: int, shape, ppr: float):
    """0 at the ends of a tubular bone rising to 1 mid-shaft ([h, w] float32), else None."""
    if label not in _LONG_BONES and label not in ("Radius", "Ulna"):
        return None
    c = p.mean(0)
    q = p - c
    _, vecs = np.linalg.eigh(q.T @ q)
    axis = vecs[:, -1]  # the long axis
    t = q @ axis
    yy, xx = np.mgrid[y0:y0 + shape[0], x0:x0 + shape[1]].astype(np.float32)
    u = (xx - c[0]) * axis[0] + (yy - c[1]) * axis[1]
    if label in ("Radius", "Ulna"):  # only the distal end is in view
        dist = (u - t.min()) if axis[1] > 0 else (t.max() - u)  # from the top (distal) end
        return (_smoothstep(dist / (30.0 * ppr))).astype(np.float32)
    s = np.clip((u - t.min()) / max(t.max() - t.min(), 1e-6), 0.0, 1.0)
    return (np.sin(math.pi * s) ** 1.5).astype(np.float32)


def _as_rng(rng_or_seed) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def generate_hand(rng_or_seed, size: int = 2048, side: str = "L") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One synthetic hand radiograph and its polygons.

    ``side`` is ``"L"`` (left hand, PA view: thumb on the image's right) or ``"R"`` (a
    mirrored layout). Returns ``(image [size, size] uint8, {label: [N, 2] int32 points})``
    with all 29 labels of :data:`hbseg.data.classes.CLASSES`; points are ``[x, y]`` pixel
    coordinates inside the image.
    """
    side = str(side).upper()[:1]
    if side not in ("L", "R"):
        raise ConfigError(f"side must be 'L' or 'R', not {side!r}")
    if size < 64:
        raise ConfigError(f"image size must be at least 64 px, not {size}")
    rng = _as_rng(rng_or_seed)
    g = _sample_params(rng)
    g["soft"] = rng.uniform(0.95, 1.1)
    hand, soft, sesamoids = _hand_layout(rng, g)

    # mm (y up) → pixels: rotate, scale, place the hand's centre near the image centre
    ppm = size / 265.0 * g["scale"]
    a = math.radians(g["rotation"])
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    pivot_mm = np.array([16.0, 42.0])
    centre = size * (np.array([0.5, 0.47]) + g["shift"])

    def to_px(p: np.ndarray) -> np.ndarray:
        q = (p - pivot_mm) @ rot.T
        q = np.stack([q[:, 0], -q[:, 1]], axis=1) * ppm + centre
        if side == "R":
            q[:, 0] = (size - 1) - q[:, 0]
        return q

    bones_px = {k: to_px(v) for k, v in hand.items()}
    # keep the hand (all but the forearm, which runs off the image) inside with a margin
    pts = np.concatenate([v for k, v in bones_px.items() if k not in ("Radius", "Ulna")])
    margin = 0.01 * size + 7.0 * ppm  # room for the fingertips' soft tissue
    lo, hi = pts.min(0), pts.max(0)
    shift = np.zeros(2)
    for ax in (0, 1):
        if lo[ax] < margin:
            shift[ax] = margin - lo[ax]
        elif hi[ax] > size - 1 - margin:
            shift[ax] = (size - 1 - margin) - hi[ax]
    bones_px = {k: v + shift for k, v in bones_px.items()}
    soft_px = {
        "polys": [to_px(p) + shift for p in soft["polys"]],
        "fingers": [(to_px(ln) + shift, w) for ln, w in soft["fingers"]],
    }
    sesamoids_px = [to_px(s) + shift for s in sesamoids]

    polygons: dict[str, np.ndarray] = {}
    for label in CLASSES:
        p = _clip_to_box(bones_px[label], 0.0, size - 1.0)
        p = _dedupe(np.rint(p).astype(np.int32))
        if len(p) < 3:  # cannot happen with the margins above; keep the contract anyway
            raise RuntimeError(f"synthetic bone {label} fell outside the image")
        polygons[label] = p
    # render from the integer polygons so that image and labels agree to the pixel
    image = _render(rng, size, {k: v.astype(np.float64) for k, v in polygons.items()},
                    soft_px, sesamoids_px, ppm)
    return image, polygons


