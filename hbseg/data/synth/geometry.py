"""Polygon helpers for the phantom: clipping to the image and tidying points."""

from __future__ import annotations

import numpy as np

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


