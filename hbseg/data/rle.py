"""Run-length encoding of binary masks, as the competition's submission format wants it.

A mask is flattened row-major (C order); the RLE lists ``start length`` pairs with
1-indexed starts, separated by single spaces. An empty mask is the empty string.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = [
    "RLEError", "encode_rle", "encode_masks", "mask_runs", "format_runs", "parse_rle", "check_order",
    "decode_rle",
]

_INT = re.compile(r"[+-]?[0-9]+")


class RLEError(ValueError):
    """An RLE string that is malformed, or that does not fit the image it is decoded for."""


def encode_rle(mask) -> str:
    """[H, W] (or any shape) bool/0-1 mask → ``"start length start length …"``."""
    pixels = np.asarray(mask).reshape(-1) != 0
    padded = np.concatenate([[False], pixels, [False]])
    runs = np.flatnonzero(padded[1:] != padded[:-1]) + 1
    runs[1::2] -= runs[::2]
    return " ".join(map(str, runs.tolist()))


def mask_runs(masks) -> list[np.ndarray]:
    """[C, H, W] masks (numpy array or torch tensor, any device) → per class the RLE numbers
    as an int64 array (``start length …``).

    For a torch tensor the run boundaries are found where the tensor lives, so on a GPU
    only the boundaries, not the masks, cross to the host.
    """
    if isinstance(masks, np.ndarray):
        out = []
        for m in masks:
            padded = np.concatenate([[False], m.reshape(-1) != 0, [False]])
            runs = np.flatnonzero(padded[1:] != padded[:-1]) + 1
            runs[1::2] -= runs[::2]
            out.append(runs)
        return out
    import torch

    c = masks.shape[0]
    flat = masks.reshape(c, -1).to(torch.int8)
    padded = torch.nn.functional.pad(flat, (1, 1))
    change = (padded[:, 1:] != padded[:, :-1]).nonzero()  # [M, 2], sorted by class then pixel
    change = change.cpu().numpy()
    bounds = np.searchsorted(change[:, 0], np.arange(c + 1))
    out = []
    for k in range(c):
        runs = change[bounds[k]:bounds[k + 1], 1] + 1
        runs[1::2] -= runs[::2]
        out.append(runs)
    return out


def format_runs(runs: np.ndarray) -> str:
    return " ".join(map(str, runs.tolist()))


def encode_masks(masks) -> list[str]:
    """[C, H, W] masks (numpy array or torch tensor, any device) → one RLE per class."""
    return [format_runs(r) for r in mask_runs(masks)]


def parse_rle(rle: str, num_pixels: int | None = None) -> np.ndarray:
    """Check an RLE string and return its ``[K, 2]`` int64 (start, length) pairs.

    Raises RLEError for a token that is not an integer, an odd number of values, a start
    below 1, a length below 1, or (with ``num_pixels``) a run past the image's end.
    """
    rle = "" if rle is None else str(rle).strip()
    if not rle:
        return np.zeros((0, 2), dtype=np.int64)
    tokens = rle.split()
    try:
        values = np.array(list(map(int, tokens)), dtype=np.int64)
    except (ValueError, OverflowError):
        bad = next((t for t in tokens if not _INT.fullmatch(t)), None)
        what = f"RLE value {bad[:20]!r} is not an integer" if bad else "RLE value out of range"
        raise RLEError(what) from None
    if len(values) % 2:
        raise RLEError(f"RLE has an odd number of values ({len(values)}); "
                       "expected start length pairs")
    pairs = values.reshape(-1, 2)
    starts, lengths = pairs[:, 0], pairs[:, 1]
    if (starts < 1).any():
        k = int(np.argmax(starts < 1))
        raise RLEError(f"RLE run {k + 1} starts at {starts[k]}; starts are 1-indexed (>= 1)")
    if (lengths < 1).any():
        k = int(np.argmax(lengths < 1))
        raise RLEError(f"RLE run {k + 1} has length {lengths[k]}; lengths must be >= 1")
    if num_pixels is not None:
        ends = starts - 1 + lengths
        if (ends > num_pixels).any():
            k = int(np.argmax(ends > num_pixels))
            raise RLEError(
                f"RLE run {k + 1} ({starts[k]} {lengths[k]}) ends at pixel {ends[k]}, past the "
                f"image's end ({num_pixels} pixels)"
            )
    return pairs


def check_order(pairs: np.ndarray) -> None:
    """Refuse runs that are out of order or overlap, as Kaggle's checker does: each pixel
    decoded once, the pairs sorted by start. (``decode_rle`` itself takes the union, so a
    mask can still be read; a submission must not rely on it.)"""
    if len(pairs) < 2:
        return
    starts, ends = pairs[:, 0], pairs[:, 0] + pairs[:, 1]  # ends: one past the last pixel
    bad = np.flatnonzero(starts[1:] < ends[:-1])
    if bad.size:
        k = int(bad[0])
        what = "comes before" if starts[k + 1] < starts[k] else "overlaps"
        raise RLEError(f"RLE run {k + 2} ({starts[k + 1]} {pairs[k + 1, 1]}) {what} run {k + 1} "
                       f"({starts[k]} {pairs[k, 1]}); runs must be sorted by start and must not "
                       "overlap (no pixel twice)")


def decode_rle(rle: str, height: int, width: int) -> np.ndarray:
    """RLE string → [H, W] uint8 mask of 0/1. Runs may overlap or come in any order."""
    n = height * width
    pairs = parse_rle(rle, n)
    starts = pairs[:, 0] - 1
    ends = starts + pairs[:, 1]
    if np.all(ends[:-1] <= starts[1:]):
        # sorted, non-overlapping (what encoders write): +1 at starts, -1 at ends, running sum
        delta = np.zeros(n + 1, dtype=np.int8)
        delta[starts] = 1
        delta[ends] -= 1
        mask = np.cumsum(delta[:n], dtype=np.int8).view(np.uint8)
    else:
        delta = np.bincount(starts, minlength=n + 1) - np.bincount(ends, minlength=n + 1)
        mask = (np.cumsum(delta[:n]) > 0).astype(np.uint8)
    return mask.reshape(height, width)
