import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hbseg.data import (
    NUM_CLASSES,
    pack_masks,
    read_packed_png,
    unpack_masks,
    unpack_masks_torch,
    write_packed_png,
)


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 32), st.integers(1, 12), st.integers(1, 12)),
              elements=st.integers(0, 1)))
def test_pack_unpack_round_trip(masks):
    packed = pack_masks(masks)
    assert packed.shape == (*masks.shape[1:], 4) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_masks(packed, masks.shape[0]), masks)
    t = unpack_masks_torch(torch.from_numpy(packed), masks.shape[0])
    np.testing.assert_array_equal(t.numpy(), masks)


def test_bit_c_is_class_c():
    masks = np.zeros((NUM_CLASSES, 1, 1), np.uint8)
    masks[[0, 9, 28], 0, 0] = 1
    value = pack_masks(masks).view("<u4")[0, 0, 0]
    assert value == (1 << 0) | (1 << 9) | (1 << 28)


def test_unpack_torch_batched():
    rng = np.random.default_rng(0)
    masks = (rng.random((3, NUM_CLASSES, 5, 7)) > 0.5).astype(np.uint8)
    packed = np.stack([pack_masks(m) for m in masks])
    out = unpack_masks_torch(torch.from_numpy(packed))
    assert out.shape == (3, NUM_CLASSES, 5, 7)
    np.testing.assert_array_equal(out.numpy(), masks)


def test_png_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    masks = (rng.random((NUM_CLASSES, 33, 21)) > 0.7).astype(np.uint8)
    write_packed_png(tmp_path / "m.png", pack_masks(masks))
    np.testing.assert_array_equal(unpack_masks(read_packed_png(tmp_path / "m.png")), masks)


def test_pack_rejects_too_many_classes():
    with pytest.raises(ValueError, match="C<=32"):
        pack_masks(np.zeros((33, 2, 2), np.uint8))
