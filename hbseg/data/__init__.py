"""The hand-bone data set (classes, the competition layout, validation, mask cache, synthetic
hands) and any other described data set (``DatasetSpec``, ``hbseg.data.formats``)."""

from .annotations import read_polygons
from .cache import build_cache, default_cache_dir, load_cache_index
from .classes import CLASS_TO_INDEX, CLASSES, NUM_CLASSES, class_palette
from .images import read_gray_png
from .layout import DEFAULT_EXCLUDE, NUM_FOLDS, assign_folds, resolve_split, scan_split
from .masks import pack_masks, read_packed_png, unpack_masks, unpack_masks_torch, write_packed_png
from .rasterize import rasterize
from .spec import DatasetSpec, find_spec, load_spec

__all__ = [
    "CLASSES", "CLASS_TO_INDEX", "NUM_CLASSES", "NUM_FOLDS", "DEFAULT_EXCLUDE",
    "class_palette", "read_gray_png", "read_polygons", "rasterize",
    "pack_masks", "unpack_masks", "unpack_masks_torch", "read_packed_png", "write_packed_png",
    "resolve_split", "scan_split", "assign_folds",
    "build_cache", "default_cache_dir", "load_cache_index",
    "DatasetSpec", "load_spec", "find_spec",
]
