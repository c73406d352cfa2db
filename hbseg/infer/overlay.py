"""Pictures for a person: the radiograph with predicted bones outlined in class colours.

Where the ground truth is known, a second panel on the left shows it in the same style,
so the two can be compared side by side. Each panel is shrunk to at most ``max_side``
pixels; a legend names the colours.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from hbseg.atomic import atomic_path
from hbseg.data.classes import CLASSES, class_palette

__all__ = ["short_name", "draw_panel", "render_overlay", "write_overlay"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FILL_ALPHA = 0.3


def short_name(name: str) -> str:
    """``finger-12`` → ``f12``, ``Trapezium`` → ``Trapezium``: legend labels."""
    return "f" + name.split("-", 1)[1] if name.startswith("finger-") else name


def _shrink(plane: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if plane.shape == hw:
        return plane.astype(bool)
    small = cv2.resize(plane.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
    return small >= 0.5


def draw_panel(base_rgb: np.ndarray, masks: np.ndarray | None, palette: Sequence[tuple[int, int, int]],
               thickness: int = 1) -> np.ndarray:
    """Fill (translucent) and outline each class's mask on a copy of ``base_rgb``.

    ``masks`` is [C, H, W] at any resolution; it is shrunk to the panel's size.
    """
    out = base_rgb.astype(np.float32)
    hw = base_rgb.shape[:2]
    if masks is None:
        return base_rgb.copy()
    small = [_shrink(np.asarray(m), hw) for m in masks]
    for c, m in enumerate(small):
        if m.any():
            out[m] = out[m] * (1 - _FILL_ALPHA) + np.asarray(palette[c], np.float32) * _FILL_ALPHA
    out = out.clip(0, 255).astype(np.uint8)
    for c, m in enumerate(small):
        if m.any():
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, tuple(int(v) for v in palette[c]), thickness, cv2.LINE_AA)
    return out


def _header(text: str, width: int, height: int = 22) -> np.ndarray:
    band = np.full((height, width, 3), 24, np.uint8)
    # OpenCV's fonts draw ASCII only, and a file name that is not UTF-8 (surrogates in
    # Python) crashes its text conversion: anything else becomes "?"
    text = text.encode("ascii", "replace").decode("ascii")
    cv2.putText(band, text, (6, height - 7), _FONT, 0.45, (235, 235, 235), 1, cv2.LINE_AA)
    return band


def _legend(width: int, class_names: Sequence[str], palette, present: set[int]) -> np.ndarray:
    """Colour swatches with short names; classes absent from the picture are greyed out."""
    cell_w, cell_h = 86, 16
    per_row = max(1, width // cell_w)
    rows = -(-len(class_names) // per_row)
    band = np.full((rows * cell_h + 6, width, 3), 24, np.uint8)
    for i, name in enumerate(class_names):
        r, k = divmod(i, per_row)
        x, y = 6 + k * cell_w, 4 + r * cell_h
        colour = tuple(int(v) for v in palette[i]) if i in present else (90, 90, 90)
        cv2.rectangle(band, (x, y + 3), (x + 10, y + 12), colour, -1)
        cv2.putText(band, short_name(name), (x + 14, y + 12), _FONT, 0.38,
                    (220, 220, 220) if i in present else (110, 110, 110), 1, cv2.LINE_AA)
    return band


def render_overlay(
    image: np.ndarray,
    pred: np.ndarray | None,
    gt: np.ndarray | None = None,
    *,
    title: str = "",
    dice: float | None = None,
    max_side: int = 1024,
    class_names: Sequence[str] = CLASSES,
) -> np.ndarray:
    """[H, W] grey or [H, W, 3] RGB uint8 image + [C, H, W] masks → an RGB picture
    ([h, w(×2), 3] uint8), one colour per name of ``class_names``."""
    image = np.asarray(image)
    h, w = image.shape[:2]
    f = min(1.0, max_side / max(h, w))
    sh, sw = max(1, round(h * f)), max(1, round(w * f))
    base = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA) if f < 1 else image
    base = np.repeat(base[..., None], 3, axis=2) if base.ndim == 2 else base
    palette = class_palette(len(class_names))
    thickness = 2 if max(sh, sw) >= 700 else 1
    panels, present = [], set()
    if gt is not None:
        panels.append((draw_panel(base, gt, palette, thickness), "ground truth"))
        present |= {c for c in range(len(gt)) if np.asarray(gt[c]).any()}
    if pred is not None:
        label = "prediction" + (f" (mean Dice {dice:.3f})" if dice is not None else "")
        panels.append((draw_panel(base, pred, palette, thickness), label))
        present |= {c for c in range(len(pred)) if np.asarray(pred[c]).any()}
    if not panels:
        panels.append((base.copy(), "image"))
    gap = np.full((sh, 4, 3), 24, np.uint8)
    row = [panels[0][0]]
    for p, _ in panels[1:]:
        row += [gap, p]
    body = np.concatenate(row, axis=1)
    heads = [_header(f"{title}  {lbl}".strip() if i == 0 else lbl, p.shape[1])
             for i, (p, lbl) in enumerate(panels)]
    head_row = [heads[0]]
    for hd in heads[1:]:
        head_row += [np.full((hd.shape[0], 4, 3), 24, np.uint8), hd]
    width = body.shape[1]
    return np.concatenate([np.concatenate(head_row, axis=1), body,
                           _legend(width, class_names, palette, present)], axis=0)


def write_overlay(path: str | Path, image: np.ndarray, pred: np.ndarray | None,
                  gt: np.ndarray | None = None, compression: int = 3, **kw) -> Path:
    """Render and write a PNG atomically; returns the path. ``compression``: zlib level
    0-9 (9 is a few times slower than 3 for files ~10 % smaller)."""
    path = Path(path)
    rgb = render_overlay(image, pred, gt, **kw)
    ok, buf = cv2.imencode(".png", rgb[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])
    if not ok:
        raise OSError(f"could not encode the overlay PNG for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return path
