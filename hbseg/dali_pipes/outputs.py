"""Masks as a cache stores them, and as a batch holds them.

A cache stores each mask in one of two encodings (its ``meta.json`` says which, as
``mask_encoding``; :mod:`hbseg.dali_pipes.layout`):

* ``"bits"`` (every ``hbseg-data cache``): bit ``c`` of the pixel is class ``c``, in 4
  bytes (``[H, W, 4]``, classes 0-31), or in 1 byte (``[H, W]``, classes 0-7) where the
  classes fit, which a decoder inflates four times faster;
* ``"index"`` (``from_files`` with index masks): one byte, 0 background, ``k`` class ``k``.

Both survive nearest-neighbour warps unchanged. A batch holds one 0/1 plane per class
(``"planes"``) or the class index (``"index"``); the stored masks travel as they are to the
device and are turned into that there, by every back-end, with :func:`masks_from_packed`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["ENCODINGS", "masks_from_packed", "planes_to_index", "read_mask_file"]

ENCODINGS = ("bits", "index")


def read_mask_file(path: str | Path) -> np.ndarray:
    """A stored mask → ``[H, W, C]`` uint8, C = 1 or 4 (a one-byte mask gets its axis)."""
    from hbseg.data.images import read_any_png
    from hbseg.data.masks import PACKED_CHANNELS
    from hbseg.errors import DataError

    img = read_any_png(path)
    if img.dtype == np.uint8 and img.ndim == 2:
        return img[..., None]
    if img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == PACKED_CHANNELS:
        return np.ascontiguousarray(img[..., [2, 1, 0, 3]])  # OpenCV decodes RGBA as BGRA
    raise DataError(f"not a stored mask (shape {img.shape}, {img.dtype})", path)


def planes_to_index(planes: torch.Tensor) -> torch.Tensor:
    """``[..., K, H, W]`` 0/1 → ``[..., H, W]`` int64: 0 background, ``k`` for class ``k``
    (1-based, the plane ``k - 1``). Where classes overlap the highest class wins."""
    import torch

    k = planes.shape[-3]
    value = torch.arange(1, k + 1, dtype=torch.uint8, device=planes.device).view(-1, 1, 1)
    return (planes * value).amax(-3).to(torch.int64)


def _unpack_on_host(packed: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The bits of ``[..., H, W, C]`` CPU masks → ``[..., K, H, W]`` planes, in numpy: only
    the bytes that hold classes are read (bytes past ``C`` are 0), one shift per plane into
    a preallocated array (three times faster than torch's uint8 shifts, which dominated a
    small batch's hand-off)."""
    import torch

    v = packed.numpy()
    planes = np.zeros((*v.shape[:-3], num_classes, *v.shape[-3:-1]), np.uint8)
    for b in range(min(-(-num_classes // 8), v.shape[-1])):
        k = min(8, num_classes - 8 * b)
        shifts = np.arange(k, dtype=np.uint8).reshape(k, 1, 1)
        np.right_shift(v[..., None, :, :, b], shifts, out=planes[..., 8 * b:8 * b + k, :, :])
    np.bitwise_and(planes, 1, out=planes)
    return torch.from_numpy(planes)


def _unpack_bits(packed: torch.Tensor, num_classes: int) -> torch.Tensor:
    from hbseg.data.masks import PACKED_CHANNELS, unpack_masks_torch

    if packed.device.type == "cpu":
        return _unpack_on_host(packed, num_classes)
    if packed.shape[-1] < PACKED_CHANNELS:  # one-byte masks: the other bytes are 0
        import torch

        packed = torch.nn.functional.pad(packed, (0, PACKED_CHANNELS - packed.shape[-1]))
    return unpack_masks_torch(packed, num_classes)


def masks_from_packed(packed: torch.Tensor, num_classes: int, mask_output: str = "planes",
                      encoding: str = "bits") -> torch.Tensor:
    """Stored masks ``[..., H, W, C]`` (``encoding``, see the module's docstring) →
    ``[..., K, H, W]`` uint8 planes (``"planes"``) or the ``[..., H, W]`` int64 index
    (``"index"``), on the tensor's device."""
    import torch

    if encoding == "index":
        values = packed[..., 0]
        if mask_output == "index":
            return values.to(torch.int64)
        classes = torch.arange(1, num_classes + 1, dtype=torch.uint8, device=packed.device)
        return (values.unsqueeze(-3) == classes.view(-1, 1, 1)).to(torch.uint8)
    planes = _unpack_bits(packed, num_classes)
    return planes_to_index(planes) if mask_output == "index" else planes
