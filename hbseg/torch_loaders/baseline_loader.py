"""The hand-bone competition baseline's data loading, re-created as the benchmark's floor.

It follows the competition's baseline notebook, ``XRayDataset.__getitem__`` with
``A.Resize`` (the boostcamp AI Tech hand-bone segmentation baseline, which the public team
repositories carry verbatim), doing per sample exactly its work: ``cv2.imread`` the PNG as
3-channel BGR, scale to [0, 1] in float64, parse the JSON, draw each polygon with
``cv2.fillPoly`` into its own full-resolution uint8 canvas copied into a uint8
[H, W, 29] label (122 MB at 2048²), resize image and label with albumentations
``Resize`` (linear for the image, nearest for the label), transpose to CHW and convert
both with ``.float()``; a DataLoader with ``num_workers`` workers and no pinned memory does
the rest. That is the expensive path hbseg's mask cache and DALI graphs replace, and it
must cost here what it cost there: no more (an earlier version built the label in
float32, 486 MB per sample, and was 2.2–2.6× slower than the real baseline), no less.

Only the end is adapted, so that downstream training runs on any back-end: the first
channel of the image is normalised like the others', and the float32 label is turned
into a uint8 mask on the device, after the transfer the baseline paid for. Validation
resizes image and label alike (the baseline's eval-resize flaw is not reproduced), and
augmentation settings are ignored: the baseline only resized.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from hbseg.dali_pipes.config import LoaderConfig
from hbseg.dali_pipes.loader_base import check_index
from hbseg.data.classes import CLASS_TO_INDEX, CLASSES
from hbseg.errors import ConfigError, DataError

from .torch_loader import LoaderBase, SampleFailure, check_mode, guard

__all__ = ["BaselineLoader"]


def _baseline_label(json_path: str, height: int, width: int) -> np.ndarray:
    """[H, W, 29] uint8: one full-resolution fillPoly canvas per annotated class."""
    try:
        with open(json_path) as f:
            annotations = json.load(f)["annotations"]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"malformed annotation file ({type(e).__name__}: {e})", json_path) from None
    label = np.zeros((height, width, len(CLASSES)), dtype=np.uint8)
    for ann in annotations:
        c = CLASS_TO_INDEX.get(ann["label"])
        if c is None:
            raise DataError(f"unknown label {ann['label']!r}", json_path)
        points = np.rint(np.asarray(ann["points"], dtype=np.float64)).astype(np.int32)
        class_label = np.zeros((height, width), dtype=np.uint8)
        cv2.fillPoly(class_label, [points], 1)
        label[..., c] = class_label
    return label


def _baseline_image(path: str) -> np.ndarray:
    image = cv2.imread(path)  # 3-channel BGR, as the baseline read it
    if image is None:
        raise DataError("cv2.imread could not decode the image", path)
    return image / 255.0


class BaselineDataset(Dataset):
    """One sample: (image [1, S, S] float, label [29, S, S] float32 0/1) or a SampleFailure."""

    def __init__(self, index: pd.DataFrame, cfg: LoaderConfig):
        import albumentations as A

        self.images = [str(p) for p in index["image_path"]]
        self.jsons = [str(p) for p in index["json_path"]]
        self.full_res = cfg.full_res_mask
        (self.mean,), (self.std,) = cfg.normalize.per_channel(1)
        self.half = cfg.normalize.dtype == "float16"
        self.resize = A.Resize(*cfg.out_hw)  # (height, width)

    def __len__(self) -> int:
        return len(self.images)

    def _load(self, i: int):
        image = _baseline_image(self.images[i])
        label = guard(self.jsons[i], _baseline_label, self.jsons[i], *image.shape[:2])
        if isinstance(label, SampleFailure):
            return label
        if self.full_res:
            image = self.resize(image=image)["image"]
        else:
            out = self.resize(image=image, mask=label)
            image, label = out["image"], out["mask"]
        image = image.transpose(2, 0, 1)[:1]  # CHW, then the grey channel only
        label = label.transpose(2, 0, 1)
        x = torch.from_numpy(image).float().sub_(self.mean).div_(self.std)
        y = torch.from_numpy(np.ascontiguousarray(label)).float()
        return (x.half() if self.half else x), y

    def __getitem__(self, key: tuple[int, int]):
        i, _epoch = key
        return guard(self.images[i], self._load, i)


class BaselineLoader(LoaderBase):
    """Baseline back-end implementing the ``Loader`` protocol (same signature and output
    as ``TorchLoader``); it reads the polygons from ``index["json_path"]`` every time."""

    _unpack = False  # labels arrive as float32 planes, converted to uint8 on the device

    def __init__(self, index: pd.DataFrame, cfg: LoaderConfig, mode: str = "train",
                 device: str = "cpu"):
        check_mode(mode, cfg)
        check_index(index, ("image_path", "json_path"))
        if cfg.mask_output != "planes":
            raise ConfigError("the baseline loader yields the competition's 29 planes only "
                              "(mask_output='planes')")
        super().__init__(index, cfg, mode, device, BaselineDataset(index, cfg))

    def _pin_memory(self) -> bool:
        return False  # the baseline's DataLoader did not pin memory
