"""Sliding-window prediction with Gaussian blending.

Windows tile the image with a given stride; the last window in each direction sits flush
with the image's edge, so every pixel is covered and no window hangs over. An image
smaller than the window is padded (bottom and right) and the padding cropped off again.
Each window's output is weighted by a Gaussian centred on the window (sigma a fraction
of the window side), and the sum is divided by the sum of weights: where windows do not
overlap the output is the window's own, and a constant model gives back its constant.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["gaussian_weights", "window_starts", "sliding_window"]

# The Gaussian is floored here (relative to its peak) so that corners covered by a single
# window still get a usable, non-zero weight.
MIN_WEIGHT = 1e-3


def gaussian_weights(
    window: int, sigma: float = 0.125, device: str | torch.device = "cpu", dtype=torch.float32
) -> torch.Tensor:
    """[window, window] weights, 1 at the centre; ``sigma`` is a fraction of ``window``."""
    if window < 1 or sigma <= 0:
        raise ValueError(f"need window >= 1 and sigma > 0, got {window}, {sigma}")
    x = torch.arange(window, dtype=torch.float64, device=device) - (window - 1) / 2
    g = torch.exp(-0.5 * (x / (sigma * window)) ** 2)
    w = torch.outer(g, g)
    return (w / w.max()).clamp_(min=MIN_WEIGHT).to(dtype)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows covering ``[0, length)``; the last is flush with the end."""
    if stride < 1 or window < 1:
        raise ValueError(f"need window >= 1 and stride >= 1, got {window}, {stride}")
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return starts


def pad_image(image: torch.Tensor, pads: tuple[int, ...], value) -> torch.Tensor:
    """``F.pad`` with a constant that is one number, or one per channel (dim 1) for colour
    images, whose black differs per channel once normalised."""
    if isinstance(value, (int, float)):
        return F.pad(image, pads, value=float(value))
    v = torch.as_tensor(value, dtype=image.dtype, device=image.device).view(1, -1, 1, 1)
    return F.pad(image - v, pads) + v


def sliding_window(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    window: int,
    stride: int,
    sigma: float = 0.125,
    batch_size: int = 4,
    pad_value: float | tuple[float, ...] = 0.0,
) -> torch.Tensor:
    """Blend ``predict`` over windows of ``image`` [1, C, H, W] → [1, K, H, W].

    ``predict`` maps a batch [B, C, window, window] to [B, K, window, window] (probabilities,
    usually); the blend is computed in float32 on ``image``'s device.
    """
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image [1, C, H, W], got {tuple(image.shape)}")
    _, _, h, w = image.shape
    ph, pw = max(h, window), max(w, window)
    if (ph, pw) != (h, w):
        image = pad_image(image, (0, pw - w, 0, ph - h), pad_value)
    weight = gaussian_weights(window, sigma, image.device)
    boxes = [(y, x) for y in window_starts(ph, window, stride) for x in window_starts(pw, window, stride)]
    acc = None
    wsum = torch.zeros((ph, pw), dtype=torch.float32, device=image.device)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i:i + batch_size]
        patches = torch.cat([image[..., y:y + window, x:x + window] for y, x in chunk])
        out = predict(patches).float()
        if acc is None:
            acc = torch.zeros((out.shape[1], ph, pw), dtype=torch.float32, device=image.device)
        for (y, x), o in zip(chunk, out, strict=True):
            acc[:, y:y + window, x:x + window].addcmul_(o, weight)
            wsum[y:y + window, x:x + window] += weight
    acc /= wsum
    return acc[None, :, :h, :w]
