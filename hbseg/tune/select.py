"""Choosing a setting per class from summed per-image Dice, in sample and cross-validated.

Every table here is ``[F, C, S]``: the sum over fold ``f``'s images of class ``c``'s Dice
under setting ``s``. Dividing a sum by the number of images gives hbseg-eval's score
(the mean over images of per-image Dice), so sums add across folds.
"""

from __future__ import annotations

import numpy as np

__all__ = ["choose", "cross_validate"]


def choose(sums: np.ndarray, baseline: int) -> np.ndarray:
    """``sums``: [C, S] → [C] best setting per class; ties keep ``baseline``, so a choice
    never scores below it on the data it was chosen on."""
    best = sums.argmax(-1)
    top = np.take_along_axis(sums, best[:, None], -1)[:, 0]
    # a gain of a rounding error is no reason to move off the default
    keep = top <= sums[:, baseline] + 1e-9 * max(1.0, float(np.abs(sums).max(initial=0.0)))
    return np.where(keep, baseline, best)


def cross_validate(per_fold: np.ndarray, baseline: int) -> tuple[np.ndarray, np.ndarray]:
    """Choose on every fold but one, score the one left out.

    Returns (choices [F, C], held-out Dice sums [C] pooled over folds); divided by the
    number of images, the latter is the cross-validated score of the tuning procedure.
    """
    total = per_fold.sum(0)
    choices = np.stack([choose(total - per_fold[f], baseline) for f in range(len(per_fold))])
    held = np.stack([np.take_along_axis(per_fold[f], choices[f][:, None], -1)[:, 0]
                     for f in range(len(per_fold))])
    return choices, held.sum(0)
