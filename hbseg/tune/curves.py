"""Dice of one image for many settings at once: every threshold from one histogram, every
minimum object size from one labelling.

Thresholds: with probabilities quantised to q = 0…255, a class's prediction at cut ``j``
is ``q >= j``. Two 256-bin histograms per class (all pixels, ground-truth pixels) give,
by reverse cumulative sums, the predicted area and the intersection at every cut, so
Dice at every threshold costs one ``bincount`` instead of one thresholding each.

Minimum sizes: label the 8-connected components of the thresholded mask once, count
each component's pixels and its overlap with the ground truth; dropping components
below ``m`` removes exactly those sums, so Dice at every ``m`` follows without relabelling.

Dice is hbseg-eval's: 2|A∩B| / (|A| + |B|), 1.0 when both are empty.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .oof import LEVELS

__all__ = ["threshold_cuts", "cut_of", "dice_at_cuts", "blend", "component_stats",
           "dice_at_min_sizes"]

_EIGHT = np.ones((3, 3), dtype=bool)


def cut_of(threshold: float) -> int:
    """The quantised cut equal to hbseg-infer's ``p > threshold``: ``q >= floor(255 t) + 1``."""
    return int(np.floor(threshold * LEVELS + 1e-9)) + 1


def threshold_cuts(thresholds: Sequence[float]) -> torch.Tensor:
    return torch.tensor([cut_of(t) for t in thresholds], dtype=torch.long)


def _dice(inter: torch.Tensor, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    total = pred + gt
    return torch.where(total == 0, torch.ones_like(total), 2 * inter / total.clamp(min=1))


def dice_at_cuts(q: torch.Tensor, gt: torch.Tensor, cuts: torch.Tensor) -> torch.Tensor:
    """``q``: [C, H, W] quantised probabilities (any integer or float type holding 0…255),
    ``gt``: [C, H, W] 0/1, ``cuts``: [T] cut levels → [C, T] float64 Dice."""
    n = LEVELS + 1
    c = q.shape[0]
    rows = []
    for k in range(c):  # a class at a time: a [C, H, W] int64 key would be 8 bytes a pixel
        key = q[k].reshape(-1).long() + n * gt[k].reshape(-1).long()
        rows.append(torch.bincount(key, minlength=2 * n))
    h = torch.stack(rows).view(c, 2, n).double()
    everything, positive = h.sum(1), h[:, 1]
    zero = torch.zeros(c, 1, dtype=h.dtype, device=h.device)
    # at_or_above[:, j] = pixels with q >= j, j = 0…256
    pred = torch.cat([everything.flip(-1).cumsum(-1).flip(-1), zero], -1)
    inter = torch.cat([positive.flip(-1).cumsum(-1).flip(-1), zero], -1)
    idx = cuts.to(h.device).clamp(0, n)
    return _dice(inter[:, idx], pred[:, idx], positive.sum(-1, keepdim=True)).cpu()


def blend(qs: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Soft vote of quantised maps ([H, W] or [C, H, W]): ``round(sum w_i q_i / sum w)``."""
    total = float(sum(weights))
    acc = None
    for q, w in zip(qs, weights, strict=True):
        if w == 0:
            continue
        term = q.float() * (w / total)
        acc = term if acc is None else acc.add_(term)
    return acc.round_()


def component_stats(mask: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor):
    """8-connected components of a [H, W] mask → (sizes, overlaps with ``gt``), int64 numpy.

    CUDA tensors are labelled by cupy where it is installed; everything else by scipy.
    """
    if isinstance(mask, torch.Tensor) and mask.is_cuda:
        try:
            import cupy as cp
            from cupyx.scipy import ndimage as cndi
        except ImportError:
            mask, gt = mask.cpu(), gt.cpu()
        else:
            labels, count = cndi.label(cp.asarray(mask), structure=_EIGHT)
            if not count:
                return np.zeros(0, np.int64), np.zeros(0, np.int64)
            flat = labels.ravel()
            sizes = cp.bincount(flat, minlength=int(count) + 1)[1:]
            inter = cp.bincount(flat, weights=cp.asarray(gt).ravel().astype(cp.float32),
                                minlength=int(count) + 1)[1:]
            return cp.asnumpy(sizes).astype(np.int64), cp.asnumpy(inter).round().astype(np.int64)
    from scipy import ndimage

    mask = np.asarray(mask.numpy() if isinstance(mask, torch.Tensor) else mask, dtype=bool)
    gt = np.asarray(gt.numpy() if isinstance(gt, torch.Tensor) else gt)
    labels, count = ndimage.label(mask, structure=_EIGHT)
    if not count:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=count + 1)[1:]
    inter = np.bincount(flat, weights=(gt.ravel() != 0), minlength=count + 1)[1:]
    return sizes.astype(np.int64), inter.round().astype(np.int64)


def dice_at_min_sizes(sizes: np.ndarray, inter: np.ndarray, gt_count: int,
                      min_sizes: Sequence[int]) -> np.ndarray:
    """Dice after dropping components of fewer than each ``min_sizes`` pixels → [G]."""
    m = np.asarray(min_sizes, dtype=np.int64)[:, None]
    keep = sizes[None, :] >= m  # [G, n]; min size 0 or 1 keeps everything
    pred = (keep * sizes[None, :]).sum(1)
    both = (keep * inter[None, :]).sum(1)
    total = pred + gt_count
    return np.where(total == 0, 1.0, 2.0 * both / np.maximum(total, 1))
