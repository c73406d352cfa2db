"""The documentation picture: a synthetic hand with its 29-class labels beside a real radiograph.

Regenerate with::

    python -m hbseg.data.synth.figure docs/synthetic-vs-real.png REAL.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from .classes import CLASSES, class_palette
from .images import read_gray_png
from .render import generate_hand

__all__ = ["render_comparison", "overlay_polygons"]


def overlay_polygons(gray: np.ndarray, polygons: dict[str, np.ndarray], alpha: float = 0.35,
                     thickness: int = 1) -> np.ndarray:
    """RGB picture of ``gray`` with each class filled semi-transparently and outlined."""
    rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB).astype(np.float32)
    palette = class_palette()
    for i, label in enumerate(CLASSES):
        if label not in polygons:
            continue
        mask = np.zeros(gray.shape, np.uint8)
        cv2.fillPoly(mask, [polygons[label]], 1)
        sel = mask.astype(bool)
        rgb[sel] = (1 - alpha) * rgb[sel] + alpha * np.array(palette[i], np.float32)
    out = rgb.astype(np.uint8)
    for i, label in enumerate(CLASSES):
        if label in polygons:
            cv2.polylines(out, [polygons[label]], True, palette[i], thickness, cv2.LINE_AA)
    return out


def _title(img: np.ndarray, text: str) -> None:
    cv2.putText(img, text, (14, 34), cv2.FONT_HERSHEY_SIMPLEX, 0.85, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(img, text, (14, 34), cv2.FONT_HERSHEY_SIMPLEX, 0.85, (255, 255, 255), 2,
                cv2.LINE_AA)


def _palette_image(rgb: np.ndarray):
    """Palette PNG: 128 exact-ish greys for the radiographs, 128 colours for the labels."""
    from PIL import Image

    grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
    idx = (rgb[..., 0] // 2).astype(np.uint8)  # grey ramp: entries 0..127
    colour_px = rgb[~grey]
    palette = [v for i in range(128) for v in (2 * i + 1,) * 3]
    if len(colour_px):
        strip = Image.fromarray(colour_px.reshape(1, -1, 3))
        q = strip.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        idx[~grey] = 128 + np.asarray(q)[0]
        cpal = q.getpalette()[: 3 * 128]
        palette += cpal + [0] * (3 * 128 - len(cpal))
    img = Image.fromarray(idx, mode="P")
    img.putpalette(palette)
    return img


def render_comparison(out_png: str | Path, real_png: str | Path, seed: int = 0,
                      width: int = 1200, size: int = 2048) -> Path:
    """Write ``out_png``: synthetic hand (``seed``, left) with labels, plain synthetic hand
    (middle) and the real radiograph ``real_png`` (right), ``width`` pixels wide, as a
    palette PNG (well under 300 KB)."""
    image, polygons = generate_hand(seed, size, "L")
    real = read_gray_png(real_png)

    # three panels of one height: labelled synthetic, plain synthetic, real
    rh, rw = real.shape
    h = 800
    syn_w = h
    real_w = int(round(rw * h / rh))
    syn = cv2.resize(image, (syn_w, h), interpolation=cv2.INTER_AREA)
    scale = h / size
    polys = {k: np.rint(v * scale).astype(np.int32) for k, v in polygons.items()}
    labelled = overlay_polygons(syn, polys)
    plain = cv2.cvtColor(syn, cv2.COLOR_GRAY2RGB)
    real_rgb = cv2.cvtColor(cv2.resize(real, (real_w, h), interpolation=cv2.INTER_AREA),
                            cv2.COLOR_GRAY2RGB)
    _title(labelled, f"synthetic (seed {seed}) + 29 labels")
    _title(plain, "synthetic")
    _title(real_rgb, f"real: {Path(real_png).name}")
    gap = np.full((h, 8, 3), 255, np.uint8)
    canvas = np.hstack([labelled, gap, plain, gap, real_rgb])
    new_h = int(round(canvas.shape[0] * width / canvas.shape[1]))
    canvas = cv2.resize(canvas, (width, new_h), interpolation=cv2.INTER_AREA)

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp")
    _palette_image(canvas).save(tmp, format="PNG", optimize=True)
    tmp.replace(out_png)
    return out_png


if __name__ == "__main__":  # pragma: no cover
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit("usage: python -m hbseg.data.synth.figure OUT.png REAL.png [SEED]")
    render_comparison(args[0], args[1], int(args[2]) if len(args) > 2 else 0)
