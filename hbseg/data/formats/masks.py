"""One image's label source → [C, H, W] masks, whatever the format."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hbseg.errors import DataError

from ..spec import DatasetSpec

__all__ = ["read_masks"]


def read_masks(spec: DatasetSpec, source, height: int, width: int, image: str = "",
               label_path: str | Path | None = None) -> np.ndarray:
    """[C, H, W] uint8 0/1 for one image; ``source`` comes from ``scan_dataset``,
    ``label_path`` (the COCO file) names the file in errors."""
    c = spec.num_classes
    if spec.format == "polygon-json":
        from ..annotations import read_polygons
        from ..rasterize import rasterize

        return rasterize(read_polygons(source, width, height, spec.classes), height, width, c)
    if spec.format == "index-png":
        from .index_png import read_index_png

        return read_index_png(source, height, width, spec.value_table(), c, spec.ignore)
    if spec.format == "class-png":
        from .class_png import read_class_pngs

        return read_class_pngs(source, height, width, c)
    from .coco import coco_masks

    try:
        return coco_masks(source, height, width, c, label_path, image)
    except DataError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError) as e:  # pycocotools on bad RLE
        raise DataError(f"image {image!r}: cannot decode its COCO segmentation ({e})",
                        label_path) from None
