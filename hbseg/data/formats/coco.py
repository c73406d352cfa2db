"""COCO instance/segmentation JSON: one file for the whole data set, read with pycocotools.

Polygons, uncompressed RLE (``counts`` a list) and compressed RLE (``counts`` a string)
are all turned into masks by ``pycocotools.mask``. Every instance of a category is OR-ed
into its class plane; categories are matched to the data set's classes by name.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np

from hbseg.errors import DataError
from hbseg.settings_file import parse_json, read_text

__all__ = ["read_coco", "coco_masks"]


def read_coco(path: str | Path, classes: tuple[str, ...]) -> dict[str, list[tuple[int, object]]]:
    """``file_name`` → ``[(class index, segmentation), …]`` for every image the file lists,
    after checking the file's structure, its categories and its references."""
    path = Path(path)
    doc = parse_json(read_text(path, "COCO label file", DataError), path, DataError)
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list)
                                            for k in ("images", "annotations", "categories")):
        raise DataError('expected a COCO object with "images", "annotations" and '
                        '"categories" lists', path)
    index = {c: i for i, c in enumerate(classes)}
    cats: dict[int, int] = {}
    for cat in doc["categories"]:
        name = cat.get("name") if isinstance(cat, dict) else None
        if name not in index:
            close = difflib.get_close_matches(str(name), classes, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(f"category {name!r} is not a class of the data set{hint}", path)
        cats[cat.get("id")] = index[name]
    images: dict[object, str] = {}
    out: dict[str, list] = {}
    for im in doc["images"]:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise DataError('an entry of "images" lacks "id" or "file_name"', path)
        name = str(im["file_name"])
        if name in out:
            raise DataError(f"image {name!r} is listed twice", path)
        images[im["id"]] = name
        out[name] = []
    for k, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict):
            raise DataError(f"annotation {k} is not an object", path)
        if ann.get("image_id") not in images:
            raise DataError(f"annotation {k}: image_id {ann.get('image_id')!r} is not in "
                            '"images"', path)
        if ann.get("category_id") not in cats:
            raise DataError(f"annotation {k}: category_id {ann.get('category_id')!r} is not "
                            'in "categories"', path)
        seg = ann.get("segmentation")
        if isinstance(seg, list):
            if not seg or any(not isinstance(p, list) or len(p) < 6 or len(p) % 2 for p in seg):
                raise DataError(f"annotation {k}: a polygon needs at least 3 [x, y] points "
                                "(6 numbers, an even count)", path)
        elif not (isinstance(seg, dict) and "counts" in seg and "size" in seg):
            raise DataError(f"annotation {k}: segmentation is neither polygons nor RLE "
                            '(an object with "counts" and "size")', path)
        out[images[ann["image_id"]]].append((cats[ann["category_id"]], seg))
    return out


def coco_masks(anns: list[tuple[int, object]], height: int, width: int, num_classes: int,
               path: str | Path | None = None, image: str = "") -> np.ndarray:
    """One image's ``[(class, segmentation), …]`` → [C, H, W] uint8 0/1."""
    import warnings

    from pycocotools import mask as mask_utils

    masks = np.zeros((num_classes, height, width), np.uint8)
    with warnings.catch_warnings():
        # pycocotools 2.0.x calls np.array(copy=False) on its RLE objects: a numpy 2
        # DeprecationWarning per decode, about pycocotools itself
        warnings.simplefilter("ignore", DeprecationWarning)
        for c, seg in anns:
            masks[c] |= _decode(mask_utils, seg, height, width, path, image)
    return masks


def _decode(mask_utils, seg, height: int, width: int, path, image: str) -> np.ndarray:
    """One segmentation (polygons, or RLE with ``counts`` a list or a string) → [H, W] 0/1."""
    if not isinstance(seg, dict):
        m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, height, width)))
        return m.astype(np.uint8).reshape(height, width)
    h, w = (int(v) for v in seg["size"])
    if (h, w) != (height, width):
        raise DataError(f"image {image!r}: RLE size {h}x{w} (h x w) but the image is "
                        f"{height}x{width}", path)
    rle = seg
    if isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, h, w)
    elif isinstance(seg["counts"], str):
        rle = {"size": [h, w], "counts": seg["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(np.uint8).reshape(height, width)
