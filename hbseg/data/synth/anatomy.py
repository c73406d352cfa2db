"""Hand anatomy for the phantom: bone outlines laid out from a table of adult sizes, with
per-hand variation (rotation, scale, finger spread, lengths, wrist angle)."""

from __future__ import annotations

import math

import cv2
import numpy as np

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


