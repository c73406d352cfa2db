"""Test-time augmentation: horizontal flip and several scales, averaged in probability space.

For every scale (and its flipped twin, with ``hflip``) the input is predicted at that
scale, the probabilities are resized to the output size, un-flipped and averaged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["parse_scales", "resize", "tta_predict"]


def parse_scales(text: str | Sequence[float]) -> tuple[float, ...]:
    """``"0.8,1.0,1.5"`` → ``(0.8, 1.0, 1.5)``; every scale must be positive."""
    if isinstance(text, str):
        try:
            scales = tuple(float(s) for s in text.split(",") if s.strip())
        except ValueError:
            raise ValueError(f"scales must be comma-separated numbers, got {text!r}") from None
    else:
        scales = tuple(float(s) for s in text)
    if not scales or any(not s > 0 for s in scales):
        raise ValueError(f"scales must be positive numbers, got {text!r}")
    return scales


def resize(x: torch.Tensor, hw: tuple[int, int], antialias: bool = False) -> torch.Tensor:
    """Bilinear resize of [N, C, H, W], pixel centres aligned; a no-op at the same size.

    No antialiasing by default: the training pipelines (DALI warp_affine, cv2 INTER_LINEAR)
    shrink without it, and inference must see inputs the way training did.
    """
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=tuple(hw), mode="bilinear", align_corners=False, antialias=antialias)


def tta_predict(
    predict_at_scale: Callable[[torch.Tensor, float], torch.Tensor],
    image: torch.Tensor,
    out_hw: tuple[int, int],
    scales: Sequence[float] = (1.0,),
    hflip: bool = False,
) -> torch.Tensor:
    """Average of ``predict_at_scale(view, scale)`` over scales × flips → [1, K, *out_hw].

    ``predict_at_scale`` takes [1, C, H, W] and a scale factor and returns probabilities
    [1, K, h, w] at any resolution of its choosing (they are resized to ``out_hw``), in a
    new tensor each time: the first view's tensor becomes the accumulator.
    """
    acc = None
    views = 0
    for s in scales:
        for flip in (False, True) if hflip else (False,):
            x = image.flip(-1) if flip else image
            p = resize(predict_at_scale(x, s).float(), out_hw)
            if flip:
                p = p.flip(-1)
            acc = p if acc is None else acc.add_(p)
            views += 1
    return acc / views if views > 1 else acc
