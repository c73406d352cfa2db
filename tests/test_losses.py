"""Loss names and combinations: smp's multilabel losses, generalised Dice, weighted sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hbseg.errors import ConfigError
from hbseg.train.losses import (
    LOSSES,
    WeightedLoss,
    bce_loss,
    dice_loss,
    generalized_dice_loss,
    get_loss,
    parse_loss_spec,
)


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(2, 4, 16, 16, generator=g) > 0.6).to(torch.uint8)
    target[:, 3] = 0  # a class absent from the whole batch
    logits = torch.randn(2, 4, 16, 16, generator=g)
    return logits, target


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_is_a_finite_scalar_with_a_gradient(name):
    logits, target = _batch()
    logits.requires_grad_(True)
    loss = get_loss(name)(logits, target)
    assert loss.ndim == 0 and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_default_loss_is_unchanged():
    logits, target = _batch(1)
    assert get_loss("bce_dice") is LOSSES["bce_dice"]
    want = bce_loss(logits, target) + dice_loss(logits, target)
    assert torch.equal(get_loss("bce_dice")(logits, target), want)
    # smp's BCE is the same function as hbseg's
    assert torch.allclose(get_loss("bce")(logits, target), bce_loss(logits, target))


def test_combination_is_the_weighted_sum():
    logits, target = _batch(2)
    combo = get_loss("dice:0.6, bce:0.4,lovasz:2")
    assert isinstance(combo, WeightedLoss)
    want = (0.6 * LOSSES["dice"](logits, target) + 0.4 * LOSSES["bce"](logits, target)
            + 2 * LOSSES["lovasz"](logits, target))
    assert torch.allclose(combo(logits, target), want)
    assert parse_loss_spec("Tversky,gdice:0.5") == [("tversky", 1.0), ("gdice", 0.5)]
    assert get_loss("dice:1") is LOSSES["dice"]


@pytest.mark.parametrize("spec, match", [
    ("dise", "did you mean 'dice'"),
    ("dice:0.6,lovaz:0.4", "did you mean 'lovasz'"),
    ("dice:x", "not a number"),
    ("dice:-1", "must be positive"),
    ("dice,dice:2", "appears twice"),
    ("dice,", "empty term"),
])
def test_bad_specs_say_what_is_wrong(spec, match):
    with pytest.raises(ConfigError, match=match) as e:
        get_loss(spec)
    if "did you mean" in match:
        assert all(n in str(e.value) for n in LOSSES)


def test_generalized_dice_matches_its_formula():
    logits, target = _batch(3)
    p = torch.sigmoid(logits).double().numpy()
    t = target.double().numpy()
    tsum = t.sum(axis=(0, 2, 3))
    with np.errstate(divide="ignore"):
        w = 1.0 / tsum**2
    w[np.isinf(w)] = w[np.isfinite(w)].max()  # the absent class takes the largest weight
    num = (w * (p * t).sum(axis=(0, 2, 3))).sum()
    den = (w * (p.sum(axis=(0, 2, 3)) + tsum)).sum()
    want = 1 - (2 * num + 1e-5) / (den + 1e-5)
    assert float(generalized_dice_loss(logits, target)) == pytest.approx(want, rel=1e-5)
    # confident and right is near 0; every class counts, so it is not plain Dice
    good = (target.float() * 2 - 1) * 12
    assert float(generalized_dice_loss(good, target)) < 1e-3
    assert float(generalized_dice_loss(logits, target)) != pytest.approx(float(dice_loss(logits, target)))


def test_train_config_checks_the_spec():
    from hbseg.train.config import TrainConfig

    assert TrainConfig(out="r", data="d", loss="dice:0.6,bce:0.4").loss == "dice:0.6,bce:0.4"
    with pytest.raises(ConfigError, match="did you mean 'focal'"):
        TrainConfig(out="r", data="d", loss="focall")
