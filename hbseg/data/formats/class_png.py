"""Binary PNGs, one per class and image: ``LABELS/<class>/<image stem>.png``, non-zero =
the class. Classes may overlap; a missing file is an empty mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .index_png import read_label_png

__all__ = ["read_class_pngs"]


def read_class_pngs(files: list[tuple[int, str]], height: int, width: int,
                    num_classes: int) -> np.ndarray:
    """``[(class index, path), …]`` → [C, H, W] uint8 0/1."""
    masks = np.zeros((num_classes, height, width), np.uint8)
    for c, path in files:
        masks[c] = read_label_png(Path(path), height, width) != 0
    return masks
