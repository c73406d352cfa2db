"""Synthetic hand radiographs with their 29 bone polygons, in the competition's layout.

Each image is a phantom of one adult hand seen postero-anteriorly: the 19 finger bones,
the eight carpal bones and the distal radius and ulna, laid out from a table of typical
adult sizes (millimetres) with per-hand random variation (rotation, scale, finger spread,
finger and metacarpal lengths, wrist deviation). It is rendered like an X-ray: a dark
background with a gradient, a soft-tissue silhouette whose brightness follows its
thickness, bones brighter than soft tissue with a bright cortex and a darker marrow,
attenuations that add where bones overlap, a slight blur and noise.

The labels are exactly the polygons drawn. Trapezium/Trapezoid overlap in every hand and
Triquetrum/Pisiform in (almost) every one, as in the real data.

Image ``i`` of a data set depends only on ``(seed, i)``, never on the number of workers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hbseg.atomic import atomic_path, check_writable_dir
from hbseg.errors import ConfigError, DataError
from hbseg.progress import bar_disabled

from .classes import CLASSES
from .layout import IMAGE_DIR, JSON_DIR

__all__ = ["SynthConfig", "generate_hand", "generate_dataset", "image_name", "GENERATOR_VERSION"]

GENERATOR_VERSION = 1

# --------------------------------------------------------------------------------------
# Anatomy (millimetres; origin at the base of the middle metacarpal, x towards the thumb,
# y towards the fingertips). Left hand in PA view: the thumb is on the image's right.
# --------------------------------------------------------------------------------------

# (label, length, base width, shaft width, head width) from the carpus towards the tip
_RAYS: dict[str, list[tuple[str, float, float, float, float]]] = {
    "thumb": [("finger-3", 45, 15, 9.5, 14), ("finger-2", 31, 15, 9.5, 12.5),
              ("finger-1", 23, 13.5, 7.5, 9.5)],
    "index": [("finger-7", 67, 15, 8, 13), ("finger-6", 40, 15, 9, 11.5),
              ("finger-5", 23, 12.5, 8, 10), ("finger-4", 17, 11, 5.5, 7.5)],
    "middle": [("finger-11", 63, 14, 8.5, 13.5), ("finger-10", 45, 16, 9.5, 12),
               ("finger-9", 28, 13, 8.5, 10.5), ("finger-8", 19, 11.5, 6, 8)],
    "ring": [("finger-15", 57, 12, 7.5, 12.5), ("finger-14", 41, 15, 9, 11.5),
             ("finger-13", 26, 12.5, 8, 10), ("finger-12", 18, 11, 5.5, 7.5)],
    "little": [("finger-19", 52, 12, 7, 11.5), ("finger-18", 33, 13.5, 8, 10.5),
               ("finger-17", 19, 11, 7, 9), ("finger-16", 16, 10, 5, 7)],
}
# metacarpal base centre (mm) and direction (degrees from +x, 90 = towards the fingertips)
_RAY_BASE = {
    "thumb": ((31.0, -2.5), 56.0),
    "index": ((14.5, 0.0), 85.0),
    "middle": ((0.0, 0.0), 90.0),
    "ring": ((-12.5, -2.5), 96.0),
    "little": ((-22.5, -5.5), 104.0),
}
# finger spread: how far each ray's phalanges turn away from its metacarpal (degrees, at spread 1)
_SPREAD = {"thumb": 0.0, "index": -4.0, "middle": 0.0, "ring": 4.0, "little": 9.0}

_LONG_BONES = tuple(f"finger-{i}" for i in range(1, 20))


def _superellipse_cap(u: np.ndarray, cap: float, p: float) -> np.ndarray:
    """1 along the shaft, falling to 0 over ``cap`` at the end like a superellipse of power p."""
    s = np.clip((cap - u) / max(cap, 1e-6), 0.0, 1.0)
    return (1.0 - s**p) ** (1.0 / p)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _long_bone(
    p0: np.ndarray, angle: float, length: float, w_base: float, w_shaft: float, w_head: float,
    rng: np.random.Generator, n: int = 18, base_p: float = 3.0, head_p: float = 2.0,
    base_cap: float = 0.28, head_cap: float = 0.45, bow: float = 0.0,
) -> np.ndarray:
    """Outline of a tubular bone: flared base and head, a waisted shaft, rounded ends."""
    t = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, n))  # dense near the ends
    u = t * length
    fb, fh = 0.32 + 0.04 * rng.standard_normal(), 0.28 + 0.04 * rng.standard_normal()
    w = (w_shaft
         + (w_base - w_shaft) * _smoothstep(1.0 - u / (fb * length))
         + (w_head - w_shaft) * _smoothstep(1.0 - (length - u) / (fh * length)))
    half = 0.5 * w
    half = (half * _superellipse_cap(u, base_cap * w_base, base_p)
            * _superellipse_cap(length - u, head_cap * w_head, head_p))
    bend = bow * length * np.sin(math.pi * t)
    skew = 1.0 + 0.04 * rng.standard_normal()  # slight asymmetry between the two sides
    right = np.stack([u, -half * skew + bend], axis=1)
    left = np.stack([u[::-1], half[::-1] / skew + bend[::-1]], axis=1)[1:-1]
    local = np.concatenate([right, left])
    a = math.radians(angle)
    d = np.array([math.cos(a), math.sin(a)])
    nrm = np.array([-d[1], d[0]])
    return p0 + local[:, :1] * d + local[:, 1:] * nrm


def _blob(
    centre, a: float, b: float, angle: float, rng: np.random.Generator,
    harmonics: dict[int, float] | None = None, n: int = 36, jitter: float = 0.03,
) -> np.ndarray:
    """A rounded irregular blob: an ellipse (semi-axes a, b) with a few radial harmonics."""
    th = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    r = np.ones_like(th)
    for k, amp in (harmonics or {}).items():
        r += amp * np.cos(k * th + rng.uniform(-0.3, 0.3))
    for k in (2, 3):
        r += jitter * rng.standard_normal() * np.cos(k * th + rng.uniform(0, 2 * math.pi))
    x, y = a * r * np.cos(th), b * r * np.sin(th)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return np.asarray(centre, float) + np.stack([c * x - s * y, s * x + c * y], axis=1)


def _chaikin(pts: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Corner-cutting smoothing of a closed polygon."""
    for _ in range(iterations):
        nxt = np.roll(pts, -1, axis=0)
        pts = np.stack([0.75 * pts + 0.25 * nxt, 0.25 * pts + 0.75 * nxt], axis=1).reshape(-1, 2)
    return pts


def _outline(ctrl, rng: np.random.Generator, g: dict, jitter: float = 0.35,
             iterations: int = 2) -> np.ndarray:
    """Smooth closed outline from a control polygon (mm), jittered and scaled to the hand."""
    p = np.asarray(ctrl, dtype=np.float64)
    p = p + jitter * rng.standard_normal(p.shape)
    p[:, 0] *= g["width"]
    return _chaikin(p, iterations)


# control polygons (mm) of the carpal bones and the distal forearm, traced from PA radiographs
_CARPAL_CTRL = {
    "Capitate": [(-6.5, -2.5), (0.5, -1.8), (7.0, -2.5), (7.6, -8.0), (6.2, -13.5), (7.0, -19.5),
                 (5.0, -24.5), (0.5, -26.5), (-4.5, -24.8), (-6.5, -20.0), (-6.0, -13.0),
                 (-7.3, -7.5)],
    "Hamate": [(-8.6, -3.8), (-14.0, -3.9), (-20.0, -5.6), (-25.0, -8.6), (-24.5, -12.5),
               (-19.0, -18.5), (-13.5, -24.0), (-9.8, -25.6), (-8.3, -20.0), (-8.5, -11.0)],
    "Trapezoid": [(8.9, -2.4), (14.5, -1.8), (19.4, -2.6), (20.2, -7.5), (18.6, -12.2),
                  (14.0, -13.6), (9.6, -12.5), (8.7, -7.5)],
    "Trapezium": [(18.9, -6.0), (22.5, -2.2), (26.5, -1.6), (33.0, -6.5), (33.0, -11.5),
                  (29.5, -15.5), (24.5, -16.5), (20.5, -13.8), (19.2, -10.5)],
    "Scaphoid": [(9.0, -37.5), (12.5, -40.0), (17.0, -38.5), (20.5, -33.0), (23.5, -27.0),
                 (24.0, -22.0), (20.5, -18.8), (16.5, -19.8), (13.5, -22.5), (10.8, -26.0),
                 (8.3, -31.0)],
    "Lunate": [(-8.8, -29.5), (-5.5, -27.2), (-1.5, -28.6), (3.0, -27.8), (7.0, -29.5),
               (7.6, -33.5), (5.0, -38.5), (-1.5, -40.2), (-7.0, -37.5), (-9.5, -33.5)],
    "Triquetrum": [(-11.5, -28.0), (-16.0, -23.2), (-20.5, -20.0), (-26.0, -18.7),
                   (-27.5, -22.0), (-25.0, -29.5), (-19.5, -34.0), (-14.0, -34.0),
                   (-11.3, -31.5)],
}
_RADIUS_CTRL = [
    (-9.5, -44.0), (-5.5, -41.5), (-1.0, -41.8), (4.0, -41.2), (8.0, -41.0), (11.0, -41.5),
    (15.0, -40.5), (19.0, -38.4), (23.0, -35.8), (26.0, -33.8), (28.2, -36.5), (28.8, -42.0),
    (27.0, -50.0), (23.5, -60.0), (20.5, -75.0), (19.5, -105.0), (19.5, -140.0), (19.8, -240.0),
    (3.0, -240.0), (2.5, -140.0), (2.0, -105.0), (0.5, -75.0), (-3.5, -60.0), (-8.0, -51.5),
]
_ULNA_CTRL = [
    (-10.5, -51.0), (-11.5, -48.0), (-14.5, -46.3), (-18.5, -46.5), (-21.0, -44.5),
    (-21.8, -40.5), (-23.2, -41.0), (-24.8, -46.5), (-24.8, -53.0), (-23.0, -63.0),
    (-22.0, -80.0), (-21.8, -140.0), (-21.5, -240.0), (-11.5, -240.0), (-11.2, -140.0),
    (-11.2, -80.0), (-10.4, -63.0), (-9.6, -56.0),
]


def _forearm_bones(rng: np.random.Generator, g: dict) -> dict[str, np.ndarray]:
    """Distal radius and ulna: flared metaphyses on long shafts running off the image."""
    return {"Radius": _outline(_RADIUS_CTRL, rng, g, 0.4, 3),
            "Ulna": _outline(_ULNA_CTRL, rng, g, 0.4, 3)}


def _carpals(rng: np.random.Generator, g: dict) -> dict[str, np.ndarray]:
    out = {}
    for label, ctrl in _CARPAL_CTRL.items():
        p = _outline(ctrl, rng, g, 0.3, 2)
        c = p.mean(0)  # corner cutting shrinks the outline; grow it back a little
        out[label] = c + (p - c) * (1.07 + 0.03 * rng.standard_normal())
    # the pisiform lies palmar to the triquetrum and overlaps it on a PA view
    tq = out["Triquetrum"]
    centre = np.array([tq[:, 0].min() + 2.0, tq[:, 1].max() - 1.8]) + 0.4 * rng.standard_normal(2)
    out["Pisiform"] = _blob(centre, 4.6 * g["width"], 4.2, rng.uniform(0, 180), rng, n=32)
    return out


def _sample_params(rng: np.random.Generator) -> dict:
    return {
        "rotation": rng.uniform(-15.0, 15.0),
        "scale": rng.uniform(0.85, 1.1),
        "spread": rng.uniform(0.3, 1.6),
        "finger_len": rng.uniform(0.92, 1.08),
        "mc_len": rng.uniform(0.94, 1.06),
        "width": rng.uniform(0.94, 1.06),
        "wrist": rng.uniform(-8.0, 8.0),
        "shift": rng.uniform(-0.03, 0.03, size=2),
    }


def _hand_layout(rng: np.random.Generator, g: dict):
    """Bones (label → [N, 2] mm, y up) and soft-tissue primitives of one left hand."""
    bones: dict[str, np.ndarray] = {}
    fingers_soft: list[tuple[np.ndarray, float]] = []  # (centre line, width) of each digit
    heads: dict[str, np.ndarray] = {}
    mc_base: dict[str, np.ndarray] = {}
    webs: dict[str, np.ndarray] = {}  # where the skin between two fingers meets each finger
    for ray, chain in _RAYS.items():
        (bx, by), ang = _RAY_BASE[ray]
        p = np.array([bx * g["width"], by]) + 0.5 * rng.standard_normal(2)
        ang = ang + rng.normal(0.0, 1.5) - (g["spread"] - 1.0) * (5.0 if ray == "thumb" else 0.0)
        line = []
        for k, (label, length, wb, ws, wh) in enumerate(chain):
            if k == 0:
                length *= g["mc_len"] * (1 + 0.02 * rng.standard_normal())
                mc_base[ray] = p.copy()
            else:
                length *= g["finger_len"] * (1 + 0.03 * rng.standard_normal())
            if k == 1 and ray == "thumb":  # the thumb's phalanges turn towards the fingers
                ang += rng.uniform(2.0, 12.0)
            elif k == 1:  # metacarpo-phalangeal joint: the finger spreads
                ang += _SPREAD[ray] * g["spread"] + rng.normal(0.0, 2.0)
            elif k > 1:
                ang += rng.normal(0.0, 2.0) - 0.15 * _SPREAD[ray] * g["spread"]
            ww = g["width"] * (1 + 0.03 * rng.standard_normal())
            distal = k == len(chain) - 1
            pts = _long_bone(p, ang, length, wb * ww, ws * ww, wh * ww, rng,
                             n=16 if length < 30 else 20,
                             base_p=3.0, head_p=2.2 if distal else 2.5,
                             base_cap=0.22 if k else 0.2, head_cap=0.45 if distal else 0.35,
                             bow=0.015 * rng.standard_normal())
            bones[label] = pts
            a = math.radians(ang)
            d = np.array([math.cos(a), math.sin(a)])
            if k >= 1 or ray == "thumb":
                line.append(p.copy())
            p = p + length * d
            if k == 0:
                heads[ray] = p.copy()
            if k == 1:
                webs[ray] = p - (0.55 * length) * d
            gap = (2.4 if k == 0 else 2.0) * (1 + 0.1 * rng.standard_normal())
            if not distal:
                p = p + gap * d
        line.append(p + 5.0 * d)  # finger pulp beyond the distal tuft
        wid = {"thumb": 24.5, "index": 20.5, "middle": 21.5, "ring": 20.0, "little": 18.0}[ray]
        fingers_soft.append((np.array(line), wid * g["width"] * g["soft"]))

    # carpus and forearm; the hand (carpus + rays) turns about the capitate head (wrist angle)
    carp = _carpals(rng, g)
    pivot = np.array([0.0, -27.0])
    a = math.radians(g["wrist"])
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    hand = {**bones, **carp}
    hand = {k: (v - pivot) @ rot.T + pivot for k, v in hand.items()}
    fingers_soft = [((ln - pivot) @ rot.T + pivot, wd) for ln, wd in fingers_soft]
    heads = {k: (v - pivot) @ rot.T + pivot for k, v in heads.items()}
    mc_base = {k: (v - pivot) @ rot.T + pivot for k, v in mc_base.items()}
    webs = {k: (v - pivot) @ rot.T + pivot for k, v in webs.items()}
    hand.update(_forearm_bones(rng, g))

    # soft tissue: palm (convex), thenar web, forearm
    m = 7.0 * g["soft"]
    palm = cv2.convexHull(np.array([
        heads["index"] + (m + 1, 6), heads["little"] + (-m - 1, 5),
        webs["index"], webs["middle"], webs["ring"], webs["little"],
        mc_base["little"] + (-m - 3, 0),
        (-27.0 * g["width"] - m, -52.0), (29.0 * g["width"] + m * 0.8, -50.0),
        mc_base["thumb"] + (m, -4), mc_base["index"] + (m, 10),
    ], dtype=np.float32))[:, 0].astype(np.float64)
    # first web space: a concave skin fold from the thumb's MCP joint to the index finger
    mc1_dir = (heads["thumb"] - mc_base["thumb"]) / np.linalg.norm(heads["thumb"] - mc_base["thumb"])
    a_web = heads["thumb"] + rng.uniform(4.0, 10.0) * mc1_dir + (-3.0, 2.0)
    b_web = heads["index"] + (-1.0, rng.uniform(-7.0, -2.0))
    sag = np.array([-(b_web - a_web)[1], (b_web - a_web)[0]])
    sag = sag / (np.linalg.norm(sag) + 1e-9) * rng.uniform(2.0, 6.0)  # towards the wrist
    web = np.array([mc_base["thumb"] + (m, -6), heads["thumb"] + (m * 0.6, -2), a_web,
                    0.5 * (a_web + b_web) + sag, b_web, mc_base["index"]])
    # thenar eminence: the muscle bulk along the thumb's metacarpal
    mc1 = heads["thumb"] - mc_base["thumb"]
    inward = np.array([-mc1[1], mc1[0]]) / (np.linalg.norm(mc1) + 1e-9)
    thenar = np.array([mc_base["thumb"] - 0.1 * mc1 + 3.0 * inward,
                       mc_base["thumb"] + 0.6 * mc1 + 3.0 * inward])
    fingers_soft.append((thenar, rng.uniform(26.0, 32.0) * g["soft"]))
    forearm = np.array([
        (-27.0 * g["width"] - m, -36.0), (29.0 * g["width"] + m, -34.0),
        (29.0 * g["width"] + m * 1.5, -90.0), (30.0 * g["width"] + m * 2.5, -230.0),
        (-28.0 * g["width"] - m * 2.5, -230.0), (-27.0 * g["width"] - m * 1.5, -90.0),
    ])
    soft = {"polys": [palm, web, forearm], "fingers": fingers_soft}
    sesamoids = []
    if rng.random() < 0.7:  # the two sesamoids at the thumb's metacarpal head (unlabelled)
        h = heads["thumb"]
        d = (h - mc_base["thumb"]) / np.linalg.norm(h - mc_base["thumb"])
        nrm = np.array([-d[1], d[0]])
        for sgn in (-1, 1):
            sesamoids.append(_blob(h - 3.0 * d + sgn * 4.5 * nrm, 2.6, 2.3, rng.uniform(0, 180),
                                   rng, n=16))
    return hand, soft, sesamoids


# --------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------

def _clip_to_box(poly: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Sutherland–Hodgman clipping of a polygon to the square [lo, hi]²."""
    pts = [tuple(p) for p in poly]
    for axis, bound, keep_le in ((0, lo, False), (0, hi, True), (1, lo, False), (1, hi, True)):
        if not pts:
            break
        out = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            cur_in = _inside(cur, axis, bound, keep_le)
            if cur_in:
                if not _inside(prev, axis, bound, keep_le):
                    out.append(_intersect(prev, cur, axis, bound))
                out.append(cur)
            elif _inside(prev, axis, bound, keep_le):
                out.append(_intersect(prev, cur, axis, bound))
        pts = out
    return np.array(pts, dtype=np.float64).reshape(-1, 2)


def _inside(q, axis: int, bound: float, keep_le: bool) -> bool:
    return q[axis] <= bound if keep_le else q[axis] >= bound


def _intersect(p, q, axis: int, bound: float):
    t = (bound - p[axis]) / (q[axis] - p[axis])
    r = [p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])]
    r[axis] = bound
    return tuple(r)


def _dedupe(pts: np.ndarray) -> np.ndarray:
    keep = np.ones(len(pts), bool)
    keep[1:] = np.any(pts[1:] != pts[:-1], axis=1)
    pts = pts[keep]
    if len(pts) > 1 and np.array_equal(pts[0], pts[-1]):
        pts = pts[:-1]
    return pts


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


# --------------------------------------------------------------------------------------
# Data set
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SynthConfig:
    """What :func:`generate_dataset` makes: ``ids`` train patients and ``test_ids`` test
    patients, two hands each, ``size``×``size`` pixels, all from ``seed``."""

    ids: int = 20
    size: int = 2048
    seed: int = 0
    test_ids: int = 0

    def validate(self) -> None:
        if self.ids < 0 or self.test_ids < 0 or self.ids + self.test_ids == 0:
            raise ConfigError(f"need at least one ID (ids={self.ids}, test_ids={self.test_ids})")
        if self.ids + self.test_ids > 1000:
            raise ConfigError("at most 1000 IDs (ID000..ID999)")
        if self.size < 64:
            raise ConfigError(f"image size must be at least 64 px, not {self.size}")
        if self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, not {self.seed}")


def image_name(seed: int, id_index: int, side: str) -> str:
    """File name of one image, like the competition's ``image1661130828152_L.png``.

    Numbers rise with the ID, so names are unique within a data set (and L/R differ).
    """
    ss = np.random.default_rng([seed, 0x5EED]).integers(0, 10**10)
    number = 1_600_000_000_000 + int(ss) + id_index * 100_003 + (0 if side == "L" else 41)
    return f"image{number}_{side}.png"


def _annotation_json(rng: np.random.Generator, polygons: dict[str, np.ndarray], name: str,
                     parent: str, size: int) -> str:
    def uid() -> str:
        return str(uuid.UUID(bytes=rng.bytes(16), version=4))

    anns = [{"id": uid(), "type": "poly_seg", "attributes": {}, "label": label,
             "points": polygons[label].tolist()} for label in CLASSES]
    doc = {
        "annotations": anns,
        "attributes": {},
        "file_id": uid(),
        "filename": name,
        "parent_path": parent,
        "last_modifier_id": uid(),
        "metadata": {"height": size, "width": size},
        "last_workers": {},
    }
    return json.dumps(doc, separators=(",", ":"))


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _make_one(task: tuple) -> str:
    """Generate and write one image (and its JSON for train): a Pool task."""
    out, split, pid, id_index, side, seed, size = task
    g = 2 * id_index + (0 if side == "L" else 1)  # global image index
    image, polygons = generate_hand(np.random.default_rng([seed, g]), size, side)
    name = image_name(seed, id_index, side)
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise DataError("PNG encoding failed", name)
    root = Path(out) / split
    _write_bytes(root / IMAGE_DIR / pid / name, buf.tobytes())
    if split == "train":
        text = _annotation_json(np.random.default_rng([seed, g, 1]), polygons, name,
                                f"synthetic/{split}/{IMAGE_DIR}/{pid}", size)
        _write_bytes(root / JSON_DIR / pid / f"{Path(name).stem}.json", text.encode())
    return name


def _worker_init() -> None:
    # one OpenCV thread per worker process: the pool already uses every core
    cv2.setNumThreads(1)


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def generate_dataset(
    out: str | Path, cfg: SynthConfig, workers: int | None = None, progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Write a synthetic data set in the competition layout under ``out``.

    ``out/train/DCM/IDxxx/*.png`` with ``out/train/outputs_json/IDxxx/*.json`` for
    ``cfg.ids`` patients, then ``out/test/DCM/IDxxx/*.png`` for ``cfg.test_ids`` patients
    (numbered after the train IDs), two hands (L, R) per patient, and
    ``out/synth_config.json``. Every file is written atomically. ``workers`` processes
    (default: every core) share the images; the result does not depend on their number.

    Refuses to write over existing images unless ``overwrite``, which first deletes the
    old ``train/DCM``, ``train/outputs_json`` and ``test/DCM`` folders.
    Returns ``{"images", "train_images", "test_images", "seconds", "out", "workers"}``.
    """
    cfg.validate()
    out = Path(out)
    old = [out / "train" / IMAGE_DIR, out / "train" / JSON_DIR, out / "test" / IMAGE_DIR]
    existing = [p for p in old[::2] if _has_images(p)]
    if existing and not overwrite:
        raise DataError("already holds image data; choose an empty folder or pass overwrite=True "
                        "(which deletes the old images and annotations)", existing[0])
    if overwrite:
        for p in old:
            if p.is_dir():
                shutil.rmtree(p)
    check_writable_dir(out)

    tasks = []
    for i in range(cfg.ids + cfg.test_ids):
        split = "train" if i < cfg.ids else "test"
        pid = f"ID{i:03d}"
        for side in ("L", "R"):
            tasks.append((str(out), split, pid, i, side, cfg.seed, cfg.size))
    for split, pid in {(t[1], t[2]) for t in tasks}:
        (out / split / IMAGE_DIR / pid).mkdir(parents=True, exist_ok=True)
        if split == "train":
            (out / split / JSON_DIR / pid).mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    t0 = time.perf_counter()
    with tqdm(total=len(tasks), desc="synthetic hands", unit="img", disable=bar_disabled(progress)) as bar:
        if workers == 1:
            for t in tasks:
                _make_one(t)
                bar.update()
        else:
            import multiprocessing as mp

            # spawn, not fork: cv2.setNumThreads in a child forked after the parent used
            # OpenCV's thread pool can hang forever
            with mp.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
                for _ in pool.imap_unordered(_make_one, tasks, chunksize=1):
                    bar.update()
    seconds = time.perf_counter() - t0

    info = {**dataclasses.asdict(cfg), "generator": "hbseg.data.synth",
            "generator_version": GENERATOR_VERSION}
    _write_bytes(out / "synth_config.json", (json.dumps(info, indent=2) + "\n").encode())
    return {
        "images": len(tasks),
        "train_images": 2 * cfg.ids,
        "test_images": 2 * cfg.test_ids,
        "seconds": round(seconds, 3),
        "out": str(out),
        "workers": workers,
    }
