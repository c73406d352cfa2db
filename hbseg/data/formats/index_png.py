"""Index PNGs: one label PNG per image, pixel value = class (one class per pixel).

Read with Pillow, which returns a palette PNG's indices (OpenCV would return its colours).
The data set's ``values`` table maps pixel values to classes (by default value ``k`` is
class ``k - 1``); 0 and the ``ignore`` values are background; any other value is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hbseg.errors import DataError

__all__ = ["read_index_png", "index_to_masks", "read_label_png"]

_INDEX_MODES = ("P", "L", "I;16", "I;16B", "I;16L", "I", "1")


def read_label_png(path: str | Path, height: int, width: int) -> np.ndarray:
    """A one-channel label PNG (palette, grey, 16-bit or 1-bit) → [H, W] integer values."""
    from PIL import Image, UnidentifiedImageError

    from hbseg.regular_files import open_regular

    path = Path(path)
    try:
        with open_regular(path, "rb", "a label PNG") as f, Image.open(f) as im:
            mode = im.mode
            if mode not in _INDEX_MODES:
                raise DataError(f"{mode} label PNG; expected one value per pixel (a palette, "
                                "grey or 16-bit PNG), not colours", path)
            arr = np.asarray(im)
    except FileNotFoundError:
        raise DataError("label file not found", path) from None
    except UnidentifiedImageError:
        raise DataError("not an image Pillow can read (corrupt or not a PNG)", path) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode label PNG ({e})", path) from None
    if arr.shape != (height, width):
        raise DataError(f"label is {arr.shape[1]}x{arr.shape[0]} but its image is "
                        f"{width}x{height}", path)
    return arr


def index_to_masks(values: np.ndarray, table: dict[int, int], num_classes: int,
                   ignore=(), path: str | Path | None = None) -> np.ndarray:
    """[H, W] values → [C, H, W] uint8 0/1 by ``table`` (value → class index)."""
    present = np.unique(values)
    unknown = [int(v) for v in present if int(v) not in table and v != 0 and int(v) not in ignore]
    if unknown:
        n = int(np.isin(values, unknown).sum())
        raise DataError(f"pixel value(s) {unknown[:5]} ({n} pixels) are in no class; add them "
                        "to the data set's values table (or to ignore)", path)
    masks = np.zeros((num_classes, *values.shape), np.uint8)
    for v in present:
        c = table.get(int(v))
        if c is not None:
            masks[c] |= (values == v)
    return masks


def read_index_png(path: str | Path, height: int, width: int, table: dict[int, int],
                   num_classes: int, ignore=()) -> np.ndarray:
    """One index PNG → [C, H, W] uint8 0/1."""
    return index_to_masks(read_label_png(path, height, width), table, num_classes, ignore, path)
