"""Multi-label segmentation losses: every class is its own sigmoid, never a softmax.

Bones overlap at their joints in the annotations, so a pixel may belong to two classes.
All losses take raw logits [B, C, H, W] and 0/1 targets of the same shape, and compute
in float32 whatever the autocast dtype.

The single terms the competition write-ups compared come from
``segmentation_models_pytorch.losses`` in multilabel mode (generalised Dice, which smp
lacks, is written here). ``bce_dice`` (the default) and ``focal_dice`` are hbseg's own
formulations, kept exactly as they were so that earlier runs stay comparable. A spec such
as ``dice:0.6,bce:0.4`` is the weighted sum of its terms.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from hbseg.errors import ConfigError

__all__ = ["LOSSES", "list_losses", "get_loss", "parse_loss_spec", "WeightedLoss",
           "bce_loss", "dice_loss", "focal_loss", "generalized_dice_loss"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 − soft Dice per class (summed over batch and pixels), averaged over classes."""
    prob = torch.sigmoid(logits.float())
    target = target.float()
    dims = (0, 2, 3)
    inter = (prob * target).sum(dims)
    denom = prob.sum(dims) + target.sum(dims)
    return 1.0 - ((2.0 * inter + smooth) / (denom + smooth)).mean()


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float | None = None
) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al.), mean over elements."""
    logits, target = logits.float(), target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)  # probability given to the true label
    loss = (1.0 - p_t) ** gamma * bce
    if alpha is not None:
        loss = loss * (alpha * target + (1.0 - alpha) * (1.0 - target))
    return loss.mean()


def generalized_dice_loss(logits: torch.Tensor, target: torch.Tensor,
                          smooth: float = 1e-5) -> torch.Tensor:
    """Generalised Dice (Sudre et al. 2017): classes weighted by 1 / (true pixels)², so a
    small carpal bone counts as much as the radius. Sums run over batch and pixels. A
    class absent from the batch takes the largest weight of the present ones (MONAI's
    rule), instead of an infinite one."""
    prob = torch.sigmoid(logits.float())
    target = target.float()
    dims = (0, 2, 3)
    w = 1.0 / target.sum(dims) ** 2
    absent = torch.isinf(w)
    w = torch.where(absent, torch.zeros_like(w), w)
    w = torch.where(absent, w.max(), w)
    inter = (w * (prob * target).sum(dims)).sum()
    denom = (w * (prob.sum(dims) + target.sum(dims))).sum()
    return 1.0 - (2.0 * inter + smooth) / (denom + smooth)


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return bce_loss(logits, target) + dice_loss(logits, target)


def focal_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # focal terms are ~10x smaller than BCE's; the weight keeps both halves comparable
    return 10.0 * focal_loss(logits, target) + dice_loss(logits, target)


def _smp(name: str, **kwargs) -> LossFn:
    """A loss of ``segmentation_models_pytorch.losses``, built on first use (importing smp
    takes a second, and ``TrainConfig`` checks loss names without needing one)."""

    @functools.cache
    def build() -> torch.nn.Module:
        import segmentation_models_pytorch.losses as smp_losses

        cls = getattr(smp_losses, name)
        return cls(**kwargs) if name == "SoftBCEWithLogitsLoss" else cls(mode="multilabel", **kwargs)

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return build()(logits.float(), target.float())

    loss.__name__ = loss.__qualname__ = f"smp.losses.{name}"
    return loss


LOSSES: dict[str, LossFn] = {
    "bce": _smp("SoftBCEWithLogitsLoss"),
    "dice": _smp("DiceLoss"),
    "focal": _smp("FocalLoss"),
    "lovasz": _smp("LovaszLoss"),
    # alpha weighs false positives, beta misses: 0.3/0.7 (Salehi et al.); 0.5/0.5 is Dice
    "tversky": _smp("TverskyLoss", alpha=0.3, beta=0.7),
    "jaccard": _smp("JaccardLoss"),
    "gdice": generalized_dice_loss,
    "bce_dice": bce_dice_loss,
    "focal_dice": focal_dice_loss,
}


class WeightedLoss:
    """``Σ weight · term(logits, target)`` over ``(name, weight)`` terms."""

    def __init__(self, terms: list[tuple[str, float]]):
        self.terms = list(terms)
        self._fns = [LOSSES[name] for name, _ in self.terms]

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = None
        for (_, w), fn in zip(self.terms, self._fns, strict=True):
            part = w * fn(logits, target)
            total = part if total is None else total + part
        return total

    def __repr__(self) -> str:
        return "WeightedLoss(" + ",".join(f"{n}:{w:g}" for n, w in self.terms) + ")"


def list_losses() -> list[str]:
    return list(LOSSES)


def _name(raw: str, spec: str) -> str:
    key = raw.strip().lower().replace("-", "_").replace("+", "_")
    if key in LOSSES:
        return key
    close = difflib.get_close_matches(key, list(LOSSES), n=1)
    where = "" if raw.strip() == spec.strip() else f" in {spec!r}"
    hint = f"; did you mean {close[0]!r}?" if close else "."
    raise ConfigError(f"unknown loss {raw.strip()!r}{where}{hint} Valid: {', '.join(LOSSES)}")


def parse_loss_spec(spec: str) -> list[tuple[str, float]]:
    """``"dice:0.6,bce:0.4"`` → ``[("dice", 0.6), ("bce", 0.4)]``; a bare name weighs 1."""
    terms: list[tuple[str, float]] = []
    for part in str(spec).split(","):
        if not part.strip():
            raise ConfigError(f"empty term in loss {spec!r}; write e.g. 'dice:0.6,bce:0.4'")
        name, sep, weight = part.partition(":")
        key = _name(name, spec)
        w = 1.0
        if sep:
            try:
                w = float(weight)
            except ValueError:
                raise ConfigError(f"loss weight {weight.strip()!r} of {key!r} is not a number "
                                  f"(in {spec!r})") from None
            if not math.isfinite(w) or w <= 0:
                raise ConfigError(f"loss weight of {key!r} must be positive, got {weight.strip()}")
        if key in (n for n, _ in terms):
            raise ConfigError(f"loss {key!r} appears twice in {spec!r}")
        terms.append((key, w))
    return terms


def get_loss(spec: str) -> LossFn:
    """A loss by name (``bce_dice``) or a weighted combination (``dice:0.6,bce:0.4``)."""
    terms = parse_loss_spec(spec)
    if len(terms) == 1 and terms[0][1] == 1.0:
        return LOSSES[terms[0][0]]
    return WeightedLoss(terms)
