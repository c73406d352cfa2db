"""Write a small synthetic data set with its description (``ROOT/hbseg-dataset.yaml``).

* ``spine``: grey images of 6 vertebra-like quadrilaterals (``L1``…``L5``, ``S1``) stacked
  top to bottom with per-image tilt, size and spacing; labels as index PNGs (value ``k`` =
  class ``k - 1``; written as a palette PNG) or as polygon JSON.
* ``blobs``: colour images of ``cell`` (a green ellipse), ``nucleus`` (a purple ellipse
  inside a cell, so the two classes overlap) and ``debris`` (small red discs); labels as
  one COCO JSON (cells as polygons, nuclei as compressed RLE, debris as uncompressed RLE)
  or as one binary PNG per class and image.

Deterministic per seed; images are grouped in sub-folders of two (``G000/…``) so the
folds keep a group together, like the hands' patients.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hbseg.errors import ConfigError

from ..spec import DatasetSpec

__all__ = ["KINDS", "ShapesConfig", "generate_shapes", "SPINE_CLASSES", "BLOB_CLASSES"]

KINDS = {"spine": ("index-png", "polygon-json"), "blobs": ("coco", "class-png")}
SPINE_CLASSES = ("L1", "L2", "L3", "L4", "L5", "S1")
BLOB_CLASSES = ("cell", "nucleus", "debris")


@dataclass(frozen=True)
class ShapesConfig:
    kind: str = "spine"
    format: str | None = None  # default: the kind's first format
    images: int = 8
    size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.format is not None and self.format not in KINDS[self.kind]:
            raise ConfigError(f"{self.kind} labels come as {' or '.join(KINDS[self.kind])}, "
                              f"not {self.format!r}")
        if self.images < 1 or self.size < 32:
            raise ConfigError("need at least 1 image of at least 32 px")

    @property
    def label_format(self) -> str:
        return self.format or KINDS[self.kind][0]


def _background(rng, size: int, channels: int) -> np.ndarray:
    ramp = np.linspace(0, 30, size, dtype=np.float32)[None, :]
    base = rng.uniform(20, 50, channels).astype(np.float32)
    img = base[None, None, :] + ramp[..., None] + rng.normal(0, 6, (size, size, channels))
    return img.astype(np.float32)


def _spine(rng, size: int):
    img = _background(rng, size, 1)[..., 0]
    tilt = rng.uniform(-12, 12)
    cx, top = size * rng.uniform(0.42, 0.58), size * rng.uniform(0.06, 0.12)
    step = size * rng.uniform(0.13, 0.145)
    polys = []
    for k in range(6):
        w, h = size * rng.uniform(0.22, 0.3), step * rng.uniform(0.62, 0.75)
        cy = top + (k + 0.5) * step
        x = cx + np.tan(np.deg2rad(tilt)) * (cy - size / 2)
        box = cv2.boxPoints(((x, cy), (w * (1.15 if k == 5 else 1.0), h), tilt))
        polys.append(np.rint(box).astype(np.int32))
    for k, p in enumerate(polys):
        cv2.fillPoly(img, [p], float(140 + 12 * k + rng.uniform(-8, 8)))
    img += rng.normal(0, 5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), polys


def _ellipse(mask_shape, centre, axes, angle) -> np.ndarray:
    m = np.zeros(mask_shape, np.uint8)
    cv2.ellipse(m, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), angle, 0, 360, 1, -1)
    return m


def _blobs(rng, size: int):
    img = _background(rng, size, 3)
    masks = np.zeros((3, size, size), np.uint8)
    polys = []
    for _ in range(int(rng.integers(2, 4))):
        c = rng.uniform(0.2, 0.8, 2) * size
        ax = rng.uniform(0.1, 0.17, 2) * size
        ang = float(rng.uniform(0, 180))
        poly = cv2.ellipse2Poly((int(c[0]), int(c[1])), (int(ax[0]), int(ax[1])), int(ang), 0, 360, 15)
        cv2.fillPoly(masks[0], [poly], 1)
        polys.append(poly)
        masks[1] |= _ellipse((size, size), c + rng.uniform(-0.2, 0.2, 2) * ax, ax * 0.4, ang)
    for _ in range(int(rng.integers(1, 4))):
        c = rng.uniform(0.05, 0.95, 2) * size
        masks[2] |= _ellipse((size, size), c, (size * 0.03, size * 0.03), 0)
    colours = np.array([[60, 170, 70], [150, 60, 170], [200, 50, 40]], np.float32)
    for k in range(3):
        img[masks[k] > 0] = colours[k] + rng.normal(0, 8, 3)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), masks, polys


def _write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), arr):
        raise OSError(f"could not write {path}")


def _rle(mask: np.ndarray, compressed: bool) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    if compressed:
        return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    flat = mask.astype(np.uint8).flatten(order="F")  # COCO runs go down the columns
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], change])).tolist()
    return {"size": list(mask.shape), "counts": [int(v) for v in counts]}


def generate_shapes(root: str | Path, cfg: ShapesConfig = ShapesConfig()) -> DatasetSpec:
    """Write ``cfg.images`` images, their labels and ``ROOT/hbseg-dataset.yaml``."""
    import yaml
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(cfg.seed)
    fmt = cfg.label_format
    spine = cfg.kind == "spine"
    spec = DatasetSpec(name=f"synthetic-{cfg.kind}", classes=SPINE_CLASSES if spine else BLOB_CLASSES,
                       format=fmt, channels=1 if spine else 3, images="images",
                       labels="labels.json" if fmt == "coco" else "labels")
    coco = {"images": [], "annotations": [],
            "categories": [{"id": k + 1, "name": c} for k, c in enumerate(spec.classes)]}
    for i in range(cfg.images):
        rel = Path(f"G{i // 2:03d}") / f"{cfg.kind}{i:03d}.png"
        if spine:
            img, polys = _spine(rng, cfg.size)
            _write_png(root / "images" / rel, img)
            if fmt == "index-png":
                values = np.zeros((cfg.size, cfg.size), np.uint8)
                for k, p in enumerate(polys):
                    cv2.fillPoly(values, [p], k + 1)
                out = Image.fromarray(values, mode="P")
                out.putpalette([v for k in range(256) for v in ((k * 40) % 256, (k * 90) % 256, (k * 150) % 256)])
                (root / "labels" / rel).parent.mkdir(parents=True, exist_ok=True)
                out.save(root / "labels" / rel)
            else:
                doc = {"annotations": [{"label": c, "points": p.tolist()}
                                       for c, p in zip(SPINE_CLASSES, polys, strict=True)]}
                path = (root / "labels" / rel).with_suffix(".json")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(doc))
            continue
        img, masks, polys = _blobs(rng, cfg.size)
        _write_png(root / "images" / rel, img[..., ::-1])  # RGB → OpenCV's BGR
        if fmt == "class-png":
            for k, c in enumerate(BLOB_CLASSES):
                if masks[k].any():
                    _write_png(root / "labels" / c / rel, masks[k] * 255)
            continue
        coco["images"].append({"id": i + 1, "file_name": rel.as_posix(),
                               "height": cfg.size, "width": cfg.size})
        for p in polys:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1,
                                        "category_id": 1, "iscrowd": 0,
                                        "segmentation": [p.reshape(-1).astype(float).tolist()]})
        for k, compressed in ((1, True), (2, False)):
            if masks[k].any():
                coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1,
                                            "category_id": k + 1, "iscrowd": 1,
                                            "segmentation": _rle(masks[k], compressed)})
    if fmt == "coco":
        (root / "labels.json").write_text(json.dumps(coco))
    (root / "hbseg-dataset.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    return spec
