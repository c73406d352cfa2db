"""Label formats beyond the hand competition's polygon JSON, for any described data set.

Each format is read once, checked (errors name the file and the problem), and rasterised
into the mask cache's bit-packed PNGs (bit ``c`` = class ``c``), where every loader reads
it the same way: ``polygon-json`` (the competition's JSON with another class list),
``coco`` (pycocotools: polygons and RLE), ``index-png`` (pixel value = class, Pillow) and
``class-png`` (one binary PNG per class and image; classes may overlap).
"""

from .images import read_image, read_rgb_png
from .masks import read_masks
from .scan import scan_dataset, scan_images

__all__ = ["read_image", "read_rgb_png", "read_masks", "scan_dataset", "scan_images"]
