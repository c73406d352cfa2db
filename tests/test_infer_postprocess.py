"""Thresholds (global, per class, from JSON) and small-object removal."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hbseg.data.classes import CLASSES, NUM_CLASSES
from hbseg.errors import ConfigError
from hbseg.infer.postprocess import (
    binarize,
    load_thresholds,
    postprocess,
    remove_small_objects,
    resolve_min_sizes,
    resolve_thresholds,
)


def test_thresholds_global_mapping_sequence():
    assert resolve_thresholds(0.3) == (0.3,) * NUM_CLASSES
    t = resolve_thresholds({"Radius": 0.7}, default=0.4)
    assert t[CLASSES.index("Radius")] == 0.7 and t[0] == 0.4
    with pytest.raises(ConfigError, match="29 classes"):
        resolve_thresholds([0.5] * 3)
    with pytest.raises(ConfigError, match="outside"):
        resolve_thresholds(1.0)


def test_load_thresholds_file(tmp_path):
    f = tmp_path / "thr.json"
    f.write_text(json.dumps({"finger-1": 0.3, "Ulna": 0.6}))
    assert load_thresholds(f) == {"finger-1": 0.3, "Ulna": 0.6}
    f.write_text(json.dumps({"Radious": 0.3}))
    with pytest.raises(ConfigError) as e:
        load_thresholds(f)
    assert str(f) in str(e.value) and "unknown class 'Radious'" in str(e.value)
    assert "did you mean 'Radius'" in str(e.value)
    f.write_text(json.dumps({"Radius": 1.5}))
    with pytest.raises(ConfigError, match="expected a number in"):
        load_thresholds(f)
    f.write_text("[0.5]")
    with pytest.raises(ConfigError, match="expected an object"):
        load_thresholds(f)
    f.write_text("{")
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_thresholds(f)


def test_binarize_per_class():
    probs = torch.full((NUM_CLASSES, 2, 2), 0.5)
    thr = [0.4] * NUM_CLASSES
    thr[3] = 0.6
    masks = binarize(probs, thr)
    assert masks.dtype == torch.bool
    assert masks[0].all() and not masks[3].any()


def _blobs() -> torch.Tensor:
    m = np.zeros((NUM_CLASSES, 20, 20), bool)
    m[0, 1:4, 1:4] = True  # 9 px
    m[0, 10:12, 10:12] = True  # 4 px
    m[0, 12, 12] = True  # diagonal neighbour: with 8-connectivity, 5 px
    m[1, 5, 5] = True  # 1 px
    m[2, 0:20, 0] = True  # 20 px
    return torch.from_numpy(m)


def test_remove_small_objects_cpu():
    m = _blobs()
    out = remove_small_objects(m, resolve_min_sizes(5))
    assert out[0, 1:4, 1:4].all() and out[0, 10:12, 10:12].all() and out[0, 12, 12]
    assert not out[1].any() and out[2].sum() == 20
    out = remove_small_objects(m, resolve_min_sizes(6))
    assert out[0].sum() == 9 and out[2].sum() == 20
    per_class = resolve_min_sizes({"finger-3": 21})
    out = remove_small_objects(m, per_class)
    assert not out[2].any() and out[1].sum() == 1
    assert remove_small_objects(m, resolve_min_sizes(0)) is m


def test_postprocess_end_to_end():
    probs = _blobs().float() * 0.9
    masks = postprocess(probs, resolve_thresholds(0.5), resolve_min_sizes(2))
    assert masks[0].sum() == 14 and not masks[1].any()


@pytest.mark.gpu
def test_remove_small_objects_cuda_matches_cpu():
    pytest.importorskip("cupy")
    rng = np.random.default_rng(0)
    m = torch.from_numpy(rng.random((NUM_CLASSES, 64, 80)) > 0.7)
    sizes = resolve_min_sizes(4)
    cpu = remove_small_objects(m, sizes)
    gpu = remove_small_objects(m.cuda(), sizes)
    assert gpu.is_cuda
    assert torch.equal(gpu.cpu(), cpu)
