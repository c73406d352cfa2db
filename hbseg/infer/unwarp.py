"""Predictions made in a warped frame (hand ROI crop, mirrored hand) back to the original.

The loader warped each image by a forward 2x3 matrix ``M`` (DALI's pixel-corner
convention, source → the model's ``s×s`` frame; :func:`hbseg.dali_pipes.roi.infer_matrix`).
Each original pixel centre ``c`` then reads the prediction at ``M·c`` (bilinear, on the
device): the exact inverse of the same warp, so a mirrored hand's bones land back on their
own pixels. Pixels that map outside the frame (outside the ROI) get 0.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["unwarp"]


def unwarp(probs: torch.Tensor, matrix, out_hw: tuple[int, int]) -> torch.Tensor:
    """``probs`` [K, s, s] (or [K, h, w]) in the warped frame → [K, H, W] in the original."""
    if probs.ndim != 3:
        raise ValueError(f"expected [K, h, w] probabilities, got {tuple(probs.shape)}")
    k, sh, sw = probs.shape
    h, w = int(out_hw[0]), int(out_hw[1])
    m = np.vstack([np.asarray(matrix, np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    # affine_grid (align_corners=False) works in normalised coordinates: pixel-corner x in
    # the original is (x_n + 1)·W/2, and the frame's normalised u_n = 2u/s - 1
    to_pixels = np.array([[w / 2.0, 0.0, w / 2.0], [0.0, h / 2.0, h / 2.0], [0.0, 0.0, 1.0]])
    to_norm = np.array([[2.0 / sw, 0.0, -1.0], [0.0, 2.0 / sh, -1.0], [0.0, 0.0, 1.0]])
    theta = torch.as_tensor((to_norm @ m @ to_pixels)[:2], dtype=torch.float32,
                            device=probs.device)[None]
    grid = F.affine_grid(theta, [1, k, h, w], align_corners=False)
    out = F.grid_sample(probs[None].float(), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out[0]
