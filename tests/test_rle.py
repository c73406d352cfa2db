"""RLE: round trips (hypothesis), full and empty masks, torch/numpy parity, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hbseg.infer.rle import RLEError, decode_rle, encode_masks, encode_rle, parse_rle

shapes = st.tuples(st.integers(1, 24), st.integers(1, 24))


@settings(max_examples=200, deadline=None)
@given(shapes.flatmap(lambda s: arrays(np.bool_, s)))
def test_round_trip(mask):
    h, w = mask.shape
    text = encode_rle(mask)
    np.testing.assert_array_equal(decode_rle(text, h, w), mask.astype(np.uint8))
    values = [int(v) for v in text.split()]
    assert len(values) % 2 == 0
    starts, lengths = values[0::2], values[1::2]
    assert all(s >= 1 for s in starts) and all(n >= 1 for n in lengths)
    # runs are sorted, separated by at least one background pixel, and inside the image
    for (s0, n0), s1 in zip(zip(starts, lengths, strict=True), starts[1:], strict=False):
        assert s0 + n0 < s1
    if starts:
        assert starts[-1] + lengths[-1] - 1 <= h * w


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), shapes, st.data())
def test_torch_encoder_matches_numpy(c, hw, data):
    masks = data.draw(arrays(np.bool_, (c, *hw)))
    assert encode_masks(torch.from_numpy(masks)) == [encode_rle(m) for m in masks]
    assert encode_masks(masks) == [encode_rle(m) for m in masks]


@pytest.mark.parametrize("h,w", [(1, 1), (3, 5), (910, 592), (64, 64)])
def test_full_and_empty(h, w):
    full, empty = np.ones((h, w), bool), np.zeros((h, w), bool)
    assert encode_rle(full) == f"1 {h * w}"
    assert encode_rle(empty) == ""
    np.testing.assert_array_equal(decode_rle(f"1 {h * w}", h, w), full)
    np.testing.assert_array_equal(decode_rle("", h, w), empty)
    assert encode_masks(torch.from_numpy(np.stack([full, empty]))) == [f"1 {h * w}", ""]


def test_row_major_and_one_indexed():
    m = np.zeros((3, 4), bool)
    m[0, 1:3] = True  # pixels 2, 3 (1-indexed)
    m[2, 3] = True  # the last pixel, 12
    assert encode_rle(m) == "2 2 12 1"


def test_unsorted_overlapping_and_adjacent_runs_decode_as_union():
    np.testing.assert_array_equal(decode_rle("1 3 2 3", 1, 6), [[1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(decode_rle("5 2 1 2", 1, 6), [[1, 1, 0, 0, 1, 1]])
    np.testing.assert_array_equal(decode_rle("1 2 3 2", 1, 6), [[1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(decode_rle("1 2 1 2", 1, 6), [[1, 1, 0, 0, 0, 0]])


@pytest.mark.parametrize("text,needle", [
    ("1 2 3", "odd number of values (3)"),
    ("0 2", "starts at 0"),
    ("-4 2", "starts at -4"),
    ("3 0", "length 0"),
    ("1 x", "'x' is not an integer"),
    ("1.5 2", "'1.5' is not an integer"),
    ("11 3", "past the image's end (12 pixels)"),
    ("1 2 12 2", "run 2 (12 2) ends at pixel 13"),
])
def test_invalid(text, needle):
    with pytest.raises(RLEError, match=None) as e:
        decode_rle(text, 3, 4)
    assert needle in str(e.value)
    assert isinstance(e.value, ValueError)


def test_parse_without_size_accepts_long_runs():
    assert parse_rle("5 1000").tolist() == [[5, 1000]]
    assert parse_rle("  ").shape == (0, 2)
