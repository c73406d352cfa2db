"""Sliding window, Gaussian blending and TTA, with models whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from hbseg.data.classes import NUM_CLASSES
from hbseg.infer.predictor import Predictor
from hbseg.infer.sliding import gaussian_weights, sliding_window, window_starts
from hbseg.models import ModelCard, create_model


class ConstantModel(torch.nn.Module):
    """Logit ``value`` for every class and pixel, whatever the input."""

    def __init__(self, value: float = 0.7):
        super().__init__()
        self.value = value
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        b, _, h, w = x.shape
        return torch.full((b, NUM_CLASSES, h, w), self.value, device=x.device) + 0 * self.dummy


class EchoModel(torch.nn.Module):
    """Logits = the input pixel (all classes), so each output pixel can be traced to its input."""

    def forward(self, x):
        return x.repeat(1, NUM_CLASSES, 1, 1)


def card(size: int, crop: int | None = None) -> ModelCard:
    return ModelCard(arch="unet", encoder="resnet18", size=size, crop=crop)


def test_gaussian_weights():
    w = gaussian_weights(64, 0.125)
    assert w.shape == (64, 64)
    assert math.isclose(float(w.max()), 1.0, rel_tol=1e-6)
    assert torch.allclose(w, w.T) and torch.allclose(w, w.flip(0))
    assert float(w.min()) > 0  # floored so corners keep some weight
    assert float(gaussian_weights(64, 1.0).min()) > float(w.min())  # larger sigma: flatter


@pytest.mark.parametrize("length,window,stride", [(100, 32, 16), (64, 64, 32), (20, 32, 8), (97, 40, 40), (130, 64, 50)])
def test_window_starts_cover_and_end_flush(length, window, stride):
    starts = window_starts(length, window, stride)
    assert starts[0] == 0
    assert starts == sorted(set(starts))
    if length > window:
        assert starts[-1] == length - window  # flush with the edge, never hanging over
        assert all(b - a <= stride for a, b in zip(starts, starts[1:], strict=False))
    covered = set()
    for s in starts:
        covered |= set(range(s, min(length, s + window)))
    assert covered == set(range(length))


@pytest.mark.parametrize("hw,window,stride", [((100, 77), 32, 16), ((64, 64), 64, 32), ((20, 45), 32, 7), ((129, 96), 48, 48)])
def test_constant_model_gives_constant(hw, window, stride):
    img = torch.randn(1, 1, *hw)
    out = sliding_window(lambda p: torch.full((p.shape[0], 3, *p.shape[-2:]), 0.3), img, window, stride,
                         sigma=0.125, batch_size=3)
    assert out.shape == (1, 3, *hw)
    torch.testing.assert_close(out, torch.full_like(out, 0.3))


@pytest.mark.parametrize("hw,window,stride", [((100, 77), 32, 16), ((20, 45), 32, 7)])
def test_blending_keeps_position(hw, window, stride):
    img = torch.randn(1, 1, *hw)
    out = sliding_window(lambda p: p * 2, img, window, stride, batch_size=2)
    torch.testing.assert_close(out, img * 2)


def test_predictor_constant_model_sliding_and_tta():
    p = Predictor([(ConstantModel(0.7), card(64))], device="cpu", window=96, stride=40,
                  tta_hflip=True, scales=(0.8, 1.0, 1.5))
    probs = p.predict_probs(torch.randn(1, 1, 150, 123))
    assert probs.shape == (NUM_CLASSES, 150, 123)
    expected = torch.sigmoid(torch.tensor(0.7))
    torch.testing.assert_close(probs, torch.full_like(probs, float(expected)))


@pytest.mark.parametrize("hw,window,stride", [((128, 128), 64, 32), ((90, 70), 48, 20), ((40, 50), 64, 32)])
def test_predictor_sliding_at_native_scale_traces_pixels(hw, window, stride):
    # size == crop: the model ran at native scale, so the echo must come back unchanged
    p = Predictor([(EchoModel(), card(64, crop=64))], device="cpu", window=window, stride=stride,
                  tta_hflip=True)
    x = torch.randn(1, 1, *hw)
    probs = p.predict_probs(x)
    torch.testing.assert_close(probs, torch.sigmoid(x[0]).expand(NUM_CLASSES, *hw))


def test_window_equal_to_image_matches_plain():
    torch.manual_seed(0)
    model = create_model("unet", "resnet18")
    x = torch.randn(1, 1, 128, 128)
    plain = Predictor([(model, card(64))], device="cpu").predict_probs(x)
    slide = Predictor([(model, card(64))], device="cpu", window=128, stride=64).predict_probs(x)
    torch.testing.assert_close(slide, plain, atol=1e-5, rtol=0)
    # a flip TTA of a random model is not symmetric: it must change the result
    flipped = Predictor([(model, card(64))], device="cpu", tta_hflip=True).predict_probs(x)
    assert (flipped - plain).abs().max() > 1e-3


def test_weighted_soft_vote():
    a, b = ConstantModel(2.0), ConstantModel(-1.0)
    p = Predictor([(a, card(64)), (b, card(32))], weights=[3, 1], device="cpu")
    probs = p.predict_probs(torch.randn(1, 1, 50, 40))
    expected = 0.75 * torch.sigmoid(torch.tensor(2.0)) + 0.25 * torch.sigmoid(torch.tensor(-1.0))
    torch.testing.assert_close(probs, torch.full_like(probs, float(expected)))


@pytest.mark.parametrize("kw,needle", [
    ({"stride": 16}, "--stride needs --window"),
    ({"window": 64, "stride": 65}, "stride"),
    ({"window": 16}, "window >= 32"),
    ({"scales": (1.0, 0.0)}, "scales"),
    ({"sigma": 0.0}, "sigma"),
    ({"weights": [1.0, 2.0]}, "2 weights for 1 checkpoints"),
    ({"thresholds": {"finger-33": 0.4}}, "unknown class 'finger-33'"),
])
def test_predictor_rejects_bad_settings(kw, needle):
    from hbseg.errors import ConfigError

    with pytest.raises(ConfigError, match=None) as e:
        Predictor([(ConstantModel(), card(64))], device="cpu", **kw)
    assert needle in str(e.value)


@pytest.mark.gpu
def test_predictor_cuda_matches_cpu():
    torch.manual_seed(0)
    model = create_model("unet", "resnet18")
    x = torch.randn(1, 1, 200, 170)
    kw = dict(window=96, stride=48, tta_hflip=True, scales=(1.0, 1.5))
    cpu = Predictor([(model, card(64))], device="cpu", **kw).predict_probs(x)
    gpu = Predictor([(model, card(64))], device="cuda", amp=False, **kw).predict_probs(x)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=0)
