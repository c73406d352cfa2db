"""Bit-packed multi-label masks: bit ``c`` of a 32-bit pixel is class ``c``.

Stored as 4 uint8 channels (little-endian byte order: channel ``k`` holds classes
``8k … 8k+7``), which survive nearest-neighbour warps and lossless PNG round trips.
"""

from __future__ import annotations

import numpy as np

from .classes import NUM_CLASSES

__all__ = [
    "PACKED_CHANNELS", "pack_masks", "unpack_masks", "unpack_masks_torch",
    "encode_packed_png", "write_packed_png", "read_packed_png",
]

PACKED_CHANNELS = 4


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """[C, H, W] bool/0-1 array (C ≤ 32) → [H, W, 4] uint8."""
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[0] > 8 * PACKED_CHANNELS:
        raise ValueError(f"expected [C<=32, H, W] masks, got shape {masks.shape}")
    c, h, w = masks.shape
    bits = np.zeros((h, w), dtype=np.uint32)
    for i in range(c):
        bits |= (masks[i] != 0).astype(np.uint32) << np.uint32(i)
    return bits.astype("<u4").view(np.uint8).reshape(h, w, PACKED_CHANNELS)


def unpack_masks(packed: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """[..., H, W, 4] uint8 → [..., C, H, W] uint8 of 0/1."""
    packed = np.asarray(packed)
    if packed.shape[-1] != PACKED_CHANNELS or packed.dtype != np.uint8:
        raise ValueError(f"expected [..., H, W, 4] uint8, got {packed.shape} {packed.dtype}")
    byte = np.arange(num_classes) // 8
    shift = (np.arange(num_classes) % 8).astype(np.uint8)
    planes = np.moveaxis(packed[..., byte], -1, -3)  # [..., C, H, W]
    return (planes >> shift[:, None, None]) & np.uint8(1)


def unpack_masks_torch(packed, num_classes: int = NUM_CLASSES, dtype=None):
    """[..., H, W, 4] uint8 torch tensor → [..., C, H, W] on the same device.

    Uses only bitwise ops, so on a GPU the unpacking never leaves the device.
    """
    import torch

    if packed.shape[-1] != PACKED_CHANNELS or packed.dtype != torch.uint8:
        raise ValueError(
            f"expected [..., H, W, 4] uint8, got {tuple(packed.shape)} {packed.dtype}"
        )
    idx = torch.arange(num_classes, device=packed.device)
    planes = packed.index_select(-1, idx // 8).movedim(-1, -3)
    shift = (idx % 8).to(torch.uint8).view(-1, 1, 1)
    out = torch.bitwise_and(torch.bitwise_right_shift(planes, shift), 1)
    return out if dtype is None else out.to(dtype)


def encode_packed_png(packed: np.ndarray, compression: int = 3) -> bytes:
    """[H, W, 4] packed bits → the bytes of an RGBA PNG, channel k in file channel k.

    OpenCV writes 4-channel arrays as BGRA, so channels 0 and 2 are swapped on the way
    out; DALI, Pillow, browsers and ``read_packed_png`` then all see the bytes in the same
    order. ``compression`` 6 makes files about 2.5x smaller than 3 for 30 % more time.
    """
    import cv2

    ok, buf = cv2.imencode(".png", packed[..., [2, 1, 0, 3]], [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise OSError("could not encode packed mask")
    return buf.tobytes()


def write_packed_png(path, packed: np.ndarray) -> None:
    """Write [H, W, 4] packed bits as an RGBA PNG (see ``encode_packed_png``)."""
    try:
        data = encode_packed_png(packed)
    except OSError:
        raise OSError(f"could not encode packed mask for {path}") from None
    with open(path, "wb") as f:
        f.write(data)


def read_packed_png(path) -> np.ndarray:
    """Read a packed-mask PNG written by ``write_packed_png`` → [H, W, 4] uint8."""
    from .images import read_any_png

    img = read_any_png(path)
    if img.ndim != 3 or img.shape[2] != PACKED_CHANNELS or img.dtype != np.uint8:
        from hbseg.errors import DataError

        raise DataError(f"not a packed mask (shape {img.shape}, {img.dtype})", path)
    return np.ascontiguousarray(img[..., [2, 1, 0, 3]])
