"""Reading and checking the competition's polygon JSON files."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import numpy as np

from hbseg.errors import DataError

from .classes import CLASS_TO_INDEX, CLASSES

__all__ = ["read_polygons"]


def read_polygons(path: str | Path, width: int, height: int) -> dict[int, np.ndarray]:
    """Class index → polygon ([N, 2] int32 points, x = column) for one image.

    Classes may be missing (their mask stays empty); a label may appear only once.
    Points partly outside the image are kept and clipped by the rasteriser, as
    ``cv2.fillPoly`` does; a polygon wholly outside the image is an error.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError("annotation file not found", path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read annotation file ({e})", path) from None
    if not text.strip():
        raise DataError("empty annotation file (0 bytes)", path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", path) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list):
        raise DataError('expected an object with an "annotations" list', path)

    polygons: dict[int, np.ndarray] = {}
    for k, ann in enumerate(doc["annotations"]):
        label = ann.get("label") if isinstance(ann, dict) else None
        if label not in CLASS_TO_INDEX:
            close = difflib.get_close_matches(str(label), CLASSES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(f"annotation {k}: unknown label {label!r}{hint}", path)
        c = CLASS_TO_INDEX[label]
        if c in polygons:
            raise DataError(f"label {label!r} appears more than once", path)
        try:
            pts = np.asarray(ann.get("points"), dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"label {label!r}: points are not a list of [x, y] pairs", path) from None
        if pts.ndim != 2 or pts.shape[1] != 2 or not np.isfinite(pts).all():
            raise DataError(f"label {label!r}: points are not a list of [x, y] pairs", path)
        if len(pts) < 3:
            raise DataError(f"label {label!r}: polygon has {len(pts)} points, needs at least 3", path)
        x, y = pts[:, 0], pts[:, 1]
        if x.max() < 0 or y.max() < 0 or x.min() > width - 1 or y.min() > height - 1:
            raise DataError(
                f"label {label!r}: polygon lies wholly outside the {width}x{height} image "
                f"(x {x.min():g}..{x.max():g}, y {y.min():g}..{y.max():g})",
                path,
            )
        polygons[c] = np.rint(pts).astype(np.int32)
    return polygons
