"""The one random draw every hbseg back-end applies: numpy only, no DALI, no torch.

The augmentation of sample ``i`` in epoch ``e`` is a pure function of ``(seed, e, i)``:
:func:`draw_sample` draws CLAHE on/off, flip, angle, scale, shift, crop origin, brightness,
contrast and vertical flip from ``np.random.default_rng(SeedSequence([seed, e, i]))``,
always in the same order and always all of them, so a change of one probability never
shifts another draw (the vertical flip came later, so its coin is drawn last and every
earlier draw is what it was). :func:`sample_matrix` folds flips → shift/scale/rotate →
crop window or resize into one 2x3 forward matrix in DALI's pixel-corner coordinates.

The DALI graphs receive these values as per-sample CPU argument inputs (the matrix for
``fn.warp_affine``, ``alpha``/``beta`` for ``fn.brightness_contrast``, the CLAHE predicate);
the torch back-end applies the same values with OpenCV. Both back-ends therefore yield the
same samples, and resuming at epoch ``e`` replays it without any RNG state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import AugmentConfig, as_hw, clahe_in_eval

Size = int | tuple[int, int]

__all__ = ["SampleDraw", "draw_sample", "eval_draw", "sample_matrix", "batch_params",
           "to_opencv_matrix"]


@dataclass(frozen=True)
class SampleDraw:
    """Augmentation parameters of one sample (identity values where a coin said no)."""

    clahe: bool = False
    flip: bool = False  # horizontal
    vflip: bool = False
    angle: float = 0.0  # degrees
    scale: float = 1.0
    shift_x: float = 0.0  # fraction of the width
    shift_y: float = 0.0  # fraction of the height
    crop_u: float = 0.5  # crop origin, as a fraction of the free room (0.5: centred)
    crop_v: float = 0.5
    alpha: float = 1.0  # contrast factor
    beta: float = 0.0  # brightness shift, fraction of 255


def draw_sample(aug: AugmentConfig, seed: int, epoch: int, index: int) -> SampleDraw:
    """The training draw of row ``index`` in ``epoch``; depends on nothing else."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))
    coins = rng.random(4)  # clahe, flip, ssr, brightness/contrast
    u = rng.random(8)  # angle, scale, shift x, shift y, crop x, crop y, contrast, brightness
    ssr = coins[2] < aug.ssr_p
    bc = coins[3] < aug.brightness_contrast_p

    def span(x: float, limit: float) -> float:
        return (2.0 * x - 1.0) * limit

    return SampleDraw(
        clahe=bool(coins[0] < aug.clahe_p),
        flip=bool(coins[1] < aug.hflip_p),
        angle=span(u[0], aug.rotate_limit) if ssr else 0.0,
        scale=1.0 + span(u[1], aug.scale_limit) if ssr else 1.0,
        shift_x=span(u[2], aug.shift_limit) if ssr else 0.0,
        shift_y=span(u[3], aug.shift_limit) if ssr else 0.0,
        crop_u=float(u[4]), crop_v=float(u[5]),
        alpha=1.0 + span(u[6], aug.contrast_limit) if bc else 1.0,
        beta=span(u[7], aug.brightness_limit) if bc else 0.0,
        vflip=bool(rng.random() < aug.vflip_p),
    )


def eval_draw(aug: AugmentConfig) -> SampleDraw:
    """Eval and inference: nothing random; CLAHE by ``clahe_in_eval``."""
    return SampleDraw(clahe=clahe_in_eval(aug.clahe_p))


def _translate(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _about(m: np.ndarray, cx: float, cy: float) -> np.ndarray:
    return _translate(cx, cy) @ m @ _translate(-cx, -cy)


def sample_matrix(d: SampleDraw, shape_hw, out_size: Size, crop: Size | None,
                  roi=None) -> np.ndarray:
    """One 2x3 forward matrix (source → destination, pixel-corner coordinates).

    flips (``x → W - x``, ``y → H - y``) → rotation by ``angle`` and scale about the centre
    → shift by ``shift·(W, H)`` → ``crop=None``: the ``W×H`` frame onto ``out_size``;
    ``crop=(ch, cw)``: the ``cw×ch`` window at ``(crop_u·(W - cw), crop_v·(H - ch))`` onto
    ``out_size``. Sizes are a side (square) or ``(H, W)``.

    ``roi=(x0, y0, w, h)`` (the hand's window, :mod:`hbseg.dali_pipes.roi`) takes the
    frame's place: flips, rotation and scale about the window's centre, shift by
    ``shift·(w, h)``, the window onto ``out_size`` (``crop`` must then be None).
    """
    out_h, out_w = as_hw(out_size)
    h, w = float(shape_hw[0]), float(shape_hw[1])
    x0, y0 = 0.0, 0.0
    if roi is not None:
        if crop is not None:
            raise ValueError("a hand ROI window and a random crop exclude each other")
        x0, y0, w, h = (float(v) for v in roi)
    cx, cy = x0 + 0.5 * w, y0 + 0.5 * h
    m = np.eye(3)
    if d.flip or d.vflip:
        m = _about(np.diag([-1.0 if d.flip else 1.0, -1.0 if d.vflip else 1.0, 1.0]), cx, cy) @ m
    if d.angle or d.scale != 1.0:
        a = np.deg2rad(d.angle)
        c, s = np.cos(a) * d.scale, np.sin(a) * d.scale
        m = _about(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), cx, cy) @ m
    m = _translate(d.shift_x * w, d.shift_y * h) @ m
    if crop is None:
        m = np.diag([out_w / w, out_h / h, 1.0]) @ _translate(-x0, -y0) @ m
    else:
        ch, cw = as_hw(crop, "crop")
        x0, y0 = d.crop_u * (w - cw), d.crop_v * (h - ch)
        m = np.diag([out_w / cw, out_h / ch, 1.0]) @ _translate(-x0, -y0) @ m
    return m[:2].astype(np.float32)


def batch_params(draws: list[SampleDraw], shapes_hw, out_size: Size | None,
                 crop: Size | None, rois=None) -> dict[str, list[np.ndarray]]:
    """Per-sample arrays for DALI's argument inputs: ``matrix`` [2, 3] float32 (absent when
    ``out_size`` is None), ``alpha`` and ``beta`` float32 scalars, ``clahe`` bool scalar.
    ``rois``: one ``(x0, y0, w, h)`` window per sample (see ``sample_matrix``), or None."""
    out: dict[str, list[Any]] = {
        "alpha": [np.float32(d.alpha) for d in draws],
        "beta": [np.float32(d.beta) for d in draws],
        "clahe": [np.bool_(d.clahe) for d in draws],
    }
    if out_size is not None:
        rois = [None] * len(draws) if rois is None else rois
        out["matrix"] = [sample_matrix(d, hw, out_size, crop, roi)
                         for d, hw, roi in zip(draws, shapes_hw, rois, strict=True)]
    return {k: [np.asarray(v) for v in vs] for k, vs in out.items()}


def to_opencv_matrix(mt) -> np.ndarray:
    """A 2x3 forward matrix in DALI's pixel-corner coordinates → the matrix that
    ``cv2.warpAffine`` (pixel-centre coordinates, forward) needs for the same warp."""
    m = np.vstack([np.asarray(mt, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    return (_translate(-0.5, -0.5) @ m @ _translate(0.5, 0.5))[:2]
