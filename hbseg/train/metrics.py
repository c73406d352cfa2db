"""Per-class Dice at threshold 0.5, accumulated over an epoch and reducible across ranks.

Dice is computed over the whole validation set per class (intersections and sums are
added up batch by batch, then divided once), so it does not depend on batch size or on
how images are split over ranks. A class absent from both prediction and truth scores 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["DiceMeter"]


class DiceMeter:
    def __init__(self, num_classes: int, device: str | torch.device = "cpu"):
        self.num_classes = num_classes
        self.device = torch.device(device)
        # float64 keeps pixel counts exact far beyond what float32 could (2^24)
        self.stats = torch.zeros(3, num_classes, dtype=torch.float64, device=self.device)

    def reset(self) -> None:
        self.stats.zero_()

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor | Sequence[torch.Tensor]) -> None:
        """``logits`` [B, C, h, w]; ``target`` [B, C, h, w] 0/1, or a list of [C, H_i, W_i]
        masks at each image's own size: then each image's logits are upsampled (bilinear,
        on their device) to its size before thresholding."""
        if isinstance(target, torch.Tensor):
            self._add(logits > 0, target.to(logits.device) != 0)  # sigmoid(x) > 0.5 ⇔ x > 0
            return
        if len(target) != logits.shape[0]:
            raise ValueError(f"{len(target)} masks for a batch of {logits.shape[0]} logits")
        for i, mask in enumerate(target):
            mask = mask.to(logits.device)
            h, w = mask.shape[-2:]
            up = logits[i : i + 1]
            if up.shape[-2:] != (h, w):
                up = F.interpolate(up.float(), size=(h, w), mode="bilinear", align_corners=False)
            self._add(up > 0, mask.unsqueeze(0) != 0)

    def _add(self, pred: torch.Tensor, true: torch.Tensor) -> None:
        if pred.shape != true.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and mask {tuple(true.shape)} differ")
        dims = (0, 2, 3)
        inter = (pred & true).sum(dims)
        self.stats[0] += inter.to(torch.float64)
        self.stats[1] += pred.sum(dims).to(torch.float64)
        self.stats[2] += true.sum(dims).to(torch.float64)

    def all_reduce(self) -> None:
        """Sum the statistics over every rank (a no-op without torch.distributed)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.stats)

    def per_class(self) -> list[float]:
        inter, sp, st = self.stats.cpu()
        denom = sp + st
        dice = torch.where(denom > 0, 2 * inter / denom.clamp(min=1), torch.ones_like(denom))
        return [float(x) for x in dice]

    def mean(self) -> float:
        per = self.per_class()
        return sum(per) / len(per)
