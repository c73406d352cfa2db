"""Reading images with the data set's channel count: 8-bit grey, or 8-bit colour as RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hbseg.errors import DataError

from ..images import _ALPHA, check_depth, png_header, read_any_png, read_gray_png

__all__ = ["read_image", "read_rgb_png", "check_image"]


def read_rgb_png(path: str | Path) -> np.ndarray:
    """Decode an 8-bit colour PNG to [H, W, 3] uint8 in RGB order.

    A grey PNG is accepted and repeated to three channels, as DALI's RGB decoder does;
    alpha and 16-bit PNGs are rejected (no guess at a background or a window).
    """
    path = Path(path)
    info = png_header(path)
    check_depth(info, path, 3)
    img = read_any_png(path)
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        raise DataError(f"{info['colour']} PNG with an alpha channel; expected 8-bit RGB "
                        "(flatten it onto a background first)", path)
    return np.ascontiguousarray(img[..., ::-1])  # OpenCV decodes BGR


def read_image(path: str | Path, channels: int = 1) -> np.ndarray:
    """[H, W] uint8 for ``channels=1`` (see ``read_gray_png``), [H, W, 3] RGB for 3."""
    if channels == 1:
        return read_gray_png(path)
    if channels == 3:
        return read_rgb_png(path)
    raise ValueError(f"channels must be 1 or 3, got {channels}")


def check_image(path: str | Path, channels: int = 1) -> None:
    """Check ``path`` with the rule the readers (``read_gray_png``, ``read_rgb_png``)
    apply, decoding only what its header cannot decide (colour or palette for a grey
    model, a palette's transparency). For back-ends that decode by themselves (DALI):
    they must refuse what training refuses, not read it some other way."""
    path = Path(path)
    info = png_header(path)
    check_depth(info, path, channels)
    if info["colour"] in (*_ALPHA, "palette") or (channels == 1 and info["colour"] == "RGB"):
        read_image(path, channels)  # raises the reader's own error
