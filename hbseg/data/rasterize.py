"""Polygons → per-class masks, exactly as ``cv2.fillPoly`` draws them."""

from __future__ import annotations

import cv2
import numpy as np

from .classes import NUM_CLASSES

__all__ = ["rasterize"]


def rasterize(polygons: dict[int, np.ndarray], height: int, width: int,
              num_classes: int = NUM_CLASSES) -> np.ndarray:
    """[C, H, W] uint8 of 0/1, one channel per class (bones overlap, so never an index map);
    C is the hands' 29 unless ``num_classes`` says otherwise."""
    masks = np.zeros((num_classes, height, width), dtype=np.uint8)
    for c, pts in polygons.items():
        cv2.fillPoly(masks[c], [pts], 1)
    return masks
