"""One image of a report: its radiograph files, its masks as a script, its Dice per model.

Runs in worker processes, so everything it needs travels in one picklable ``ImageJob``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hbseg.infer.csv_io import Submission

__all__ = ["ImageJob", "render_image", "MASK_CALLBACK"]

# The mask scripts call this global; viewer.js defines it. Scripts, not JSON files, because
# browsers refuse fetch() on file:// pages but run <script src> from the same folder.
MASK_CALLBACK = "hbsegMasks"

# A higher level than the mask cache's 3: the report is written once and read many times,
# and a 2048² mask shrinks from ~105 KB to ~41 KB.
_MASK_COMPRESSION = 6


@dataclass(frozen=True)
class ImageJob:
    key: str  # file stem inside the report: a counter, so odd image names need no escaping
    image_name: str
    image_path: str
    json_path: str
    height: int
    width: int
    subs: tuple[Submission, ...]  # one per model, each holding only this image's rows
    out: str  # the report folder being built
    display_size: int
    quality: int | None
    mask_path: str = ""  # a described data set's ground truth (its mask cache); else the JSON
    channels: int = 1  # 3: a colour image, shown as decoded


def _encode(img: np.ndarray, quality: int | None) -> tuple[str, bytes]:
    if quality is None:
        ext, params = ".png", [cv2.IMWRITE_PNG_COMPRESSION, 6]
    else:
        ext, params = ".webp", [cv2.IMWRITE_WEBP_QUALITY, quality]
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise OSError(f"could not encode {ext} image")
    return ext, buf.tobytes()


def _write(root: Path, rel: str, data: bytes | str) -> str:
    path = root / rel
    if isinstance(data, str):
        path.write_text(data, encoding="ascii")
    else:
        path.write_bytes(data)
    return rel


def _mask_b64(masks: np.ndarray) -> str:
    from hbseg.data.masks import encode_packed_png, pack_masks

    return base64.b64encode(encode_packed_png(pack_masks(masks), _MASK_COMPRESSION)).decode("ascii")


def render_image(job: ImageJob) -> dict:
    """Write ``img/``, ``full/`` and ``masks/`` files of one image; return its table row."""
    from hbseg.data import rasterize, read_polygons
    from hbseg.data.formats.images import read_image
    from hbseg.data.masks import read_packed_png, unpack_masks
    from hbseg.infer.evaluate import dice_scores

    root = Path(job.out)
    h, w = job.height, job.width
    if job.mask_path:
        gt = unpack_masks(read_packed_png(job.mask_path), len(job.subs[0].class_names))
    else:
        gt = rasterize(read_polygons(job.json_path, w, h), h, w)
    preds = [sub.masks(job.image_name, h, w) for sub in job.subs]
    dice = [dice_scores(p, gt) for p in preds]

    # masks are embedded as base64 text, not linked PNGs: a canvas that drew a file:// image
    # is "tainted" in Chromium and its pixels cannot be read back
    b64 = [_mask_b64(gt)] + [_mask_b64(p) for p in preds]
    args = ", ".join(json.dumps(a) for a in (job.key, b64[0], b64[1:]))
    _write(root, f"masks/{job.key}.js", f"{MASK_CALLBACK}({args});\n")

    img = read_image(job.image_path, job.channels)
    if img.ndim == 3:
        img = np.ascontiguousarray(img[..., ::-1])  # RGB as decoded; OpenCV encodes BGR
    scale = min(1.0, job.display_size / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        ext, data = _encode(small, job.quality)
        shown = _write(root, f"img/{job.key}{ext}", data)
        ext, data = _encode(img, job.quality)
        full = _write(root, f"full/{job.key}{ext}", data)
    else:
        ext, data = _encode(img, job.quality)
        shown = full = _write(root, f"img/{job.key}{ext}", data)
    return {
        "key": job.key,
        "img": shown,
        "full": full,
        "dice": np.stack(dice),  # [models, classes]
    }
