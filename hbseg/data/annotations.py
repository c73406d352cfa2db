"""Reading and checking the competition's polygon JSON files."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import numpy as np

from hbseg.errors import DataError
from hbseg.settings_file import parse_json, read_text

from .classes import CLASS_TO_INDEX, CLASSES

__all__ = ["read_polygons"]


def read_polygons(path: str | Path, width: int, height: int,
                  classes: tuple[str, ...] = CLASSES) -> dict[int, np.ndarray]:
    """Class index → polygon ([N, 2] int32 points, x = column) for one image.

    Classes may be missing (their mask stays empty); a label may appear only once.
    Points partly outside the image are kept and clipped by the rasteriser, as
    ``cv2.fillPoly`` does; a polygon wholly outside the image is an error. ``classes``: the
    data set's class list (the hands' 29 by default).
    """
    class_to_index = CLASS_TO_INDEX if classes is CLASSES else {c: i for i, c in enumerate(classes)}
    path = Path(path)
    text = read_text(path, "annotation file", DataError)  # a BOM (Windows editors) is skipped
    if not text.strip():
        raise DataError("empty annotation file (0 bytes)", path)
    doc = parse_json(text, path, DataError)  # also: nested too deeply, an integer too long
    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list):
        raise DataError('expected an object with an "annotations" list', path)

    polygons: dict[int, np.ndarray] = {}
    for k, ann in enumerate(doc["annotations"]):
        label = ann.get("label") if isinstance(ann, dict) else None
        if not isinstance(ann, dict) or "label" not in ann:
            raise DataError(f"annotation {k} has no \"label\"", path)
        if label not in class_to_index and isinstance(label, str):
            # no two classes differ only in case or spaces, so "Finger-1 " can mean one thing
            folded = {name.casefold(): i for name, i in class_to_index.items()}
            if label.strip().casefold() in folded:
                label = classes[folded[label.strip().casefold()]]
        if label not in class_to_index:
            close = difflib.get_close_matches(str(label), classes, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(f"annotation {k}: unknown label {label!r}{hint}", path)
        c = class_to_index[label]
        if c in polygons:
            raise DataError(f"label {label!r} appears more than once", path)
        pts = _points(ann.get("points"), label, path)
        if len(pts) < 3:
            raise DataError(f"label {label!r}: polygon has {len(pts)} points, needs at least 3", path)
        x, y = pts[:, 0], pts[:, 1]
        if x.max() < 0 or y.max() < 0 or x.min() > width - 1 or y.min() > height - 1:
            raise DataError(
                f"label {label!r}: polygon lies wholly outside the {width}x{height} image "
                f"(x {x.min():g}..{x.max():g}, y {y.min():g}..{y.max():g})",
                path,
            )
        far = (x < -width) | (x > 2 * width) | (y < -height) | (y > 2 * height)
        if far.any():
            i = int(np.argmax(far))
            raise DataError(
                f"label {label!r}: point {i} ({x[i]:g}, {y[i]:g}) lies more than one image size "
                f"outside the {width}x{height} image", path)
        polygons[c] = np.rint(pts).astype(np.int32)
    return polygons


_JSON_TYPES = {bool: "boolean", str: "string", type(None): "null", list: "list", dict: "object"}


def _points(raw, label: str, path: Path) -> np.ndarray:
    """[N, 2] float64 from a JSON list of [x, y] numbers; booleans, strings, null, nan and
    infinity are errors rather than silently becoming 0/1 or a parsed number."""
    bad = f"label {label!r}: points are not a list of [x, y] pairs"
    if not isinstance(raw, list):
        raise DataError(f"{bad} (got {_JSON_TYPES.get(type(raw), type(raw).__name__)})", path)
    for i, pt in enumerate(raw):
        if not isinstance(pt, list) or len(pt) != 2:
            raise DataError(f"{bad} (point {i} is {pt!r:.40})", path)
        for v in pt:
            if type(v) not in (int, float):  # bool is an int subclass: excluded on purpose
                kind = _JSON_TYPES.get(type(v), type(v).__name__)
                raise DataError(f"label {label!r}: point {i} has a {kind} coordinate "
                                f"({json.dumps(v)[:20]}); expected numbers", path)
    pts = np.asarray(raw, dtype=np.float64).reshape(-1, 2)
    finite = np.isfinite(pts).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise DataError(f"label {label!r}: point {i} has a non-finite coordinate "
                        f"({pts[i, 0]:g}, {pts[i, 1]:g})", path)
    return pts
