"""The inference API: checkpoints in, per-class probabilities at original resolution out.

``Predictor`` soft-votes one or more models (weighted mean of probabilities). Each model
uses its own card: input size, training crop, normalisation and CLAHE. Prediction is
either *plain* (the whole image resized to the card's ``size``, as in training without a
crop) or a *sliding window*: the image is brought to the model's training scale
(``size / crop`` for models trained on crops, ``size / long side`` otherwise), and windows
of ``window`` original pixels, ``stride`` apart, are blended with Gaussian weights.
TTA (horizontal flip, extra scales) is averaged per model, in probability space.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from hbseg.errors import ConfigError

from .postprocess import postprocess, resolve_min_sizes, resolve_thresholds
from .preprocess import PreprocessSpec, renormalize
from .sliding import pad_image, sliding_window
from .tta import resize, tta_predict
from .unwarp import unwarp

__all__ = ["Predictor", "resolve_device", "Member"]

# smp encoders downsample by 32; inputs are padded up to a multiple of this.
_MULTIPLE = 32


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; asking for CUDA without it is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
    return dev


@dataclass
class Member:
    """One model of the ensemble."""

    model: torch.nn.Module
    card: object  # ModelCard
    spec: PreprocessSpec
    weight: float
    name: str


def _load_members(checkpoints, weights, device) -> list[Member]:
    from hbseg.models import load_model

    if not checkpoints:
        raise ConfigError("no checkpoint given")
    if weights is None:
        weights = [1.0] * len(checkpoints)
    weights = [float(w) for w in weights]
    if len(weights) != len(checkpoints):
        raise ConfigError(f"{len(weights)} weights for {len(checkpoints)} checkpoints")
    if any(not w > 0 for w in weights):
        raise ConfigError(f"ensemble weights must be positive, got {weights}")
    total = sum(weights)
    members = []
    for i, (ck, w) in enumerate(zip(checkpoints, weights, strict=True)):
        if isinstance(ck, (str, Path)):
            model, card = load_model(ck, device)
            name = str(ck)
        else:  # an already built (model, card) pair
            model, card = ck
            model = model.to(device).eval()
            name = f"model{i}"
        members.append(Member(model, card, PreprocessSpec.from_card(card), w / total, name))
    names = tuple(members[0].card.class_names)
    for m in members[1:]:
        if tuple(m.card.class_names) != names:
            raise ConfigError(f"{m.name} predicts other classes than {members[0].name}; "
                              "an ensemble needs the same class_names in the same order")
    return members


class Predictor:
    """Soft-voting ensemble with optional sliding window and TTA.

    ``checkpoints``: paths, or ``(model, card)`` pairs. ``weights``: one positive number per
    checkpoint (normalised to sum to 1). ``window``/``stride``: in original-image pixels;
    ``stride`` defaults to half the window. ``sigma``: Gaussian sigma as a fraction of the
    window. ``scales``: TTA scale factors. ``thresholds``: a number, ``{class: thr}`` or a
    sequence. ``min_size``: components of fewer pixels are dropped (int, per-class mapping
    or sequence). ``amp``: mixed precision (default: on for CUDA). ``class_weights``:
    ``{class: [weight per checkpoint]}`` (hbseg-tune's weights.json) replaces ``weights``
    for the classes it names; each class's blend is normalised on its own.
    """

    def __init__(
        self,
        checkpoints: Sequence,
        weights: Sequence[float] | None = None,
        device: str | torch.device = "auto",
        window: int | None = None,
        stride: int | None = None,
        sigma: float = 0.125,
        tta_hflip: bool = False,
        scales: Sequence[float] = (1.0,),
        thresholds: float | Mapping[str, float] | Sequence[float] = 0.5,
        min_size: int | Mapping[str, int] | Sequence[int] = 0,
        batch_size: int = 4,
        amp: bool | None = None,
        class_weights: Mapping[str, Sequence[float]] | None = None,
    ):
        self.device = resolve_device(device)
        if window is None and stride is not None:
            raise ConfigError("--stride needs --window")
        if window is not None:
            stride = window // 2 if stride is None else stride
            if window < _MULTIPLE or not 1 <= stride <= window:
                raise ConfigError(f"need window >= {_MULTIPLE} and 1 <= stride <= window, "
                                  f"got window {window}, stride {stride}")
        if not sigma > 0:
            raise ConfigError(f"sigma must be positive, got {sigma}")
        scales = tuple(float(s) for s in scales)
        if not scales or any(not s > 0 for s in scales):
            raise ConfigError(f"scales must be positive, got {scales}")
        self.window, self.stride, self.sigma = window, stride, float(sigma)
        self.tta_hflip, self.scales = bool(tta_hflip), scales
        self.batch_size = max(1, int(batch_size))
        self.amp = self.device.type == "cuda" if amp is None else bool(amp)
        self.members = _load_members(checkpoints, weights, self.device)
        if window is not None and any(m.spec.geometric for m in self.members):
            raise ConfigError("--window: a model trained with --roi-crop or --canonical-hand "
                              "predicts its whole hand window at its size; leave out --window")
        self.class_names = tuple(self.members[0].card.class_names)
        self._class_blend = None  # [members, K, 1, 1] on the device, only when per class
        if class_weights:
            self.set_class_weights(class_weights)
        self.thresholds = resolve_thresholds(thresholds, self.class_names)
        self.min_sizes = resolve_min_sizes(min_size, self.class_names)
        self.specs: list[PreprocessSpec] = []  # one per decoding pass, in member order
        for m in self.members:
            if m.spec.decode_key not in {s.decode_key for s in self.specs}:
                self.specs.append(m.spec)

    def set_class_weights(self, class_weights: Mapping[str, Sequence[float]],
                          path: str | Path | None = None) -> None:
        """Blend the classes ``class_weights`` names with their own weights per member
        (``path``: the file they came from, for errors); the rest keep ``weights``."""
        from .class_weights import class_weight_table

        table = class_weight_table([m.weight for m in self.members], self.class_names,
                                   class_weights, path)
        self._class_blend = torch.as_tensor(table, dtype=torch.float32,
                                            device=self.device)[:, :, None, None]

    # ------------------------------------------------------------------ what the input must be
    @property
    def needs_full_res(self) -> bool:
        """Sliding windows and scale TTA want full-resolution input."""
        return self.window is not None or self.scales != (1.0,)

    @property
    def input_size(self) -> int | None:
        """The square side every model takes in plain mode, if they share one; else None."""
        sizes = {m.card.size for m in self.members}
        return None if self.needs_full_res or len(sizes) != 1 else sizes.pop()

    def describe(self) -> dict:
        return {
            "models": [{"name": m.name, "arch": m.card.arch, "encoder": m.card.encoder,
                        "size": m.card.size, "crop": m.card.crop, "weight": m.weight,
                        "preprocess": m.spec.to_dict()} for m in self.members],
            "class_weights": None if self._class_blend is None else {
                c: [round(float(v), 6) for v in self._class_blend[:, k, 0, 0].tolist()]
                for k, c in enumerate(self.class_names)},
            "device": str(self.device), "amp": self.amp, "window": self.window,
            "stride": self.stride, "sigma": self.sigma, "tta_hflip": self.tta_hflip,
            "scales": list(self.scales), "thresholds": list(self.thresholds),
            "min_sizes": list(self.min_sizes),
        }

    # ------------------------------------------------------------------ model calls
    def _autocast(self):
        if not self.amp or self.device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _forward(self, m: Member, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, h, w] normalised → [B, K, h, w] probabilities; pads to a multiple of 32."""
        h, w = x.shape[-2:]
        ph, pw = -h % _MULTIPLE, -w % _MULTIPLE
        if ph or pw:
            x = pad_image(x, (0, pw, 0, ph), m.spec.black)
        with self._autocast():
            logits = m.model(x)
        return torch.sigmoid(logits.float())[..., :h, :w]

    def _member_probs(self, m: Member, x: torch.Tensor, out_hw: tuple[int, int],
                      path=None) -> torch.Tensor:
        height, width = out_hw
        if m.spec.geometric:
            # x is the hand window at the model's size; predict there, then map back
            if path is None:
                raise ConfigError(f"{m.name} crops to the hand ROI or mirrors hands; pass the "
                                  "image's path (predict_probs(..., path=...))")
            side = m.card.size
            if tuple(x.shape[-2:]) != (side, side):
                raise ValueError(f"{m.name} takes the hand window at {side}x{side} "
                                 f"(open_loader gives it), got {tuple(x.shape[-2:])}")

            def in_frame(v: torch.Tensor, s: float) -> torch.Tensor:
                n = max(1, round(side * s))
                return self._forward(m, resize(v, (n, n)))

            p = tta_predict(in_frame, x, (side, side), self.scales, self.tta_hflip)[0]
            return unwarp(p, m.spec.matrix(path), out_hw)
        if self.window is None:
            def at_scale(v: torch.Tensor, s: float) -> torch.Tensor:
                side = max(1, round(m.card.size * s))
                return self._forward(m, resize(v, (side, side)))
        else:
            base = m.card.size / (m.card.crop or max(height, width))

            def at_scale(v: torch.Tensor, s: float) -> torch.Tensor:
                f = base * s
                hs, ws = max(1, round(height * f)), max(1, round(width * f))
                win, st = max(1, round(self.window * f)), max(1, round(self.stride * f))
                return sliding_window(lambda p: self._forward(m, p), resize(v, (hs, ws)), win, st,
                                      self.sigma, self.batch_size, m.spec.black)

        return tta_predict(at_scale, x, out_hw, self.scales, self.tta_hflip)[0]

    def _inputs(self, images) -> dict:
        """Normalise the accepted input forms to {decode_key: (tensor [1,1,h,w], spec)}."""
        if isinstance(images, Mapping):
            out = {}
            for k, v in images.items():
                spec = k if isinstance(k, PreprocessSpec) else next(
                    (s for s in self.specs if s.decode_key == k), None)
                if spec is None:
                    raise ConfigError(f"no model of this predictor uses preprocessing {k}")
                out[spec.decode_key] = (v, spec)
        else:
            if len(self.specs) > 1:
                raise ConfigError("the models need differently preprocessed images (their CLAHE "
                                  "settings differ); pass {spec: image} for each of predictor.specs")
            out = {self.specs[0].decode_key: (images, self.specs[0])}
        for k, (v, spec) in out.items():
            v = torch.as_tensor(v)
            if v.ndim == 2:
                v = v[None, None]
            elif v.ndim == 3:
                v = v[None]
            if v.ndim != 4 or v.shape[:2] != (1, spec.channels):
                raise ValueError(f"expected one image [1, {spec.channels}, H, W], got {tuple(v.shape)}")
            out[k] = (v.to(self.device, torch.float32), spec)
        return out

    # ------------------------------------------------------------------ public API
    @torch.inference_mode()
    def predict_probs(self, images, orig_hw: tuple[int, int] | None = None,
                      path: str | Path | None = None) -> torch.Tensor:
        """Preprocessed image(s) → [K, H, W] float32 probabilities on the device.

        ``images``: a [1, 1, h, w] tensor normalised as ``predictor.specs[0]`` says (CLAHE,
        mean, std; full resolution, or the models' input size for plain prediction), or
        ``{spec: tensor}`` when the models' CLAHE settings differ. ``orig_hw``: the output
        size, by default the input's own. ``path``: the image file, needed by models whose
        card crops to the hand or mirrors hands (their input is the image warped by
        ``spec.matrix(path)``, as ``open_loader`` gives it; predictions are mapped back).
        """
        inputs = self._inputs(images)
        if orig_hw is None:
            orig_hw = tuple(next(iter(inputs.values()))[0].shape[-2:])
        orig_hw = (int(orig_hw[0]), int(orig_hw[1]))
        acc = None
        for i, m in enumerate(self.members):
            x, spec = inputs[m.spec.decode_key]
            p = self._member_probs(m, renormalize(x, spec, m.spec), orig_hw, path)
            if self._class_blend is not None:
                acc = p * self._class_blend[i] if acc is None else acc.addcmul_(p, self._class_blend[i])
            elif acc is None:
                acc = p * m.weight if len(self.members) > 1 else p
            else:
                acc.add_(p, alpha=m.weight)
        return acc

    def postprocess(self, probs: torch.Tensor) -> torch.Tensor:
        """[K, H, W] probabilities → bool masks (thresholds, then small-object removal)."""
        return postprocess(probs, self.thresholds, self.min_sizes)

    def predict_masks(self, images, orig_hw: tuple[int, int] | None = None,
                      path: str | Path | None = None) -> torch.Tensor:
        """Like ``predict_probs``, then ``postprocess``: [K, H, W] bool on the device."""
        return self.postprocess(self.predict_probs(images, orig_hw, path))
