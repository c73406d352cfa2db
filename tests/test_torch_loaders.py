"""The torch and baseline loader back-ends and the loader factory, on CPU."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hbseg.dali_pipes.config import NO_AUGMENT, AugmentConfig, LoaderConfig, NormalizeConfig
from hbseg.dali_pipes.loader_base import Loader, epoch_order
from hbseg.data import CLASSES, build_cache, load_cache_index, rasterize, read_polygons
from hbseg.errors import ConfigError, DataError
from hbseg.loaders import LOADERS, build_loader

SIZE = 128
MEAN, STD = NormalizeConfig().mean, NormalizeConfig().std
LO, HI = (0 - MEAN) / STD, (1 - MEAN) / STD  # normalised range of an 8-bit image


@pytest.fixture(scope="module")
def index(tiny_cache):
    return load_cache_index(tiny_cache)


def cfg_for(**kw) -> LoaderConfig:
    base = dict(size=SIZE, batch_size=3, num_threads=0)
    return LoaderConfig(**{**base, **kw})


def collect(loader) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(masks)


def truth(row, size: int | None, interpolation: int) -> np.ndarray:
    """[29, H, W] fillPoly ground truth of one index row, optionally resized."""
    h, w = int(row.height), int(row.width)
    masks = rasterize(read_polygons(row.json_path, w, h), h, w)
    if size is None:
        return masks
    return np.stack([cv2.resize(m, (size, size), interpolation=interpolation) for m in masks])


def sample_ids(images: torch.Tensor, reference: torch.Tensor) -> list[int]:
    """Which reference image (eval order) each of ``images`` is."""
    d = (images[:, None] - reference[None]).abs().flatten(2).amax(-1)
    assert (d.amin(1) < 1e-5).all(), "an image matches no reference sample"
    return d.argmin(1).tolist()


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("kind", ["torch", "baseline"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_output_contract(index, kind, mode):
    cfg = cfg_for()
    loader = build_loader(kind, index, cfg, mode)
    assert isinstance(loader, Loader)
    assert loader.num_samples == len(index) and loader.device == "cpu"
    batches = list(loader)
    assert len(batches) == len(loader) == -(-len(index) // cfg.batch_size)
    assert [b[0].shape[0] for b in batches] == [3, 3, 2]  # the last batch is partial
    for image, mask in batches:
        b = image.shape[0]
        assert image.shape == (b, 1, SIZE, SIZE) and image.dtype == torch.float32
        assert mask.shape == (b, len(CLASSES), SIZE, SIZE) and mask.dtype == torch.uint8
        assert image.device.type == mask.device.type == "cpu"
        assert torch.isfinite(image).all()
        assert LO - 1e-4 <= image.min() and image.max() <= HI + 1e-4
        assert image.std() > 0.1  # not blank
        assert set(mask.unique().tolist()) == {0, 1}
        assert (mask.flatten(2).amax(-1) == 1).float().mean() > 0.9  # most bones present


@pytest.mark.parametrize("kind", ["torch", "baseline"])
def test_float16_output(index, kind):
    cfg = cfg_for(normalize=NormalizeConfig(dtype="float16"))
    image, mask = next(iter(build_loader(kind, index, cfg, "train")))
    assert image.dtype == torch.float16 and mask.dtype == torch.uint8


def test_full_res_masks_at_original_size(index):
    cfg = cfg_for(full_res_mask=True)
    rows = list(index.itertuples())
    for kind in ("torch", "baseline"):
        masks = [m for _, batch in build_loader(kind, index, cfg, "eval") for m in batch]
        assert len(masks) == len(rows)
        for m, row in zip(masks, rows, strict=True):
            assert m.dtype == torch.uint8
            np.testing.assert_array_equal(m.numpy(), truth(row, None, cv2.INTER_NEAREST))


# ----------------------------------------------------------------------------- order


def test_same_seed_same_batches_whatever_the_workers(index):
    a = collect(build_loader("torch", index, cfg_for(seed=7, num_threads=0), "train"))
    b = collect(build_loader("torch", index, cfg_for(seed=7, num_threads=2), "train"))
    c = collect(build_loader("torch", index, cfg_for(seed=8, num_threads=0), "train"))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_order_follows_epoch_order(index):
    reference, _ = collect(build_loader("torch", index, cfg_for(augment=NO_AUGMENT), "eval"))
    loader = build_loader("torch", index, cfg_for(seed=3, augment=NO_AUGMENT), "train")
    orders = []
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        order = sample_ids(collect(loader)[0], reference)
        assert order == epoch_order(len(index), epoch, 3, True, 0, 1).tolist()
        orders.append(order)
    assert orders[0] != orders[1]
    loader.set_epoch(0)
    assert sample_ids(collect(loader)[0], reference) == orders[0]  # replayable


def test_shards_partition_an_epoch(index):
    reference, _ = collect(build_loader("torch", index, cfg_for(augment=NO_AUGMENT), "eval"))
    seen = []
    for shard in range(3):
        cfg = cfg_for(seed=5, augment=NO_AUGMENT, shard_id=shard, num_shards=3)
        loader = build_loader("torch", index, cfg, "train")
        loader.set_epoch(2)
        ids = sample_ids(collect(loader)[0], reference)
        assert len(ids) == loader.num_samples
        seen += ids
    assert sorted(seen) == list(range(len(index)))


def test_half_read_epoch_then_reset(index):
    loader = build_loader("torch", index, cfg_for(num_threads=2), "train")
    first = collect(loader)[0]  # epoch 0
    loader.set_epoch(1)
    full = collect(loader)[0]
    it = iter(loader)  # epoch 2, left half-read, then rewound
    next(it)
    loader.reset()
    again = collect(loader)[0]
    loader.set_epoch(2)
    assert torch.equal(again, collect(loader)[0]) and loader.epoch == 2
    assert not torch.equal(again, full) and not torch.equal(full, first)


def test_eval_is_deterministic_and_ignores_random_augmentation(index):
    strong = AugmentConfig(ssr_p=1.0, hflip_p=1.0, brightness_contrast_p=1.0)
    a = collect(build_loader("torch", index, cfg_for(augment=strong, crop=96), "eval"))
    b = collect(build_loader("torch", index, cfg_for(augment=NO_AUGMENT, seed=9), "eval"))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    rows = list(index.itertuples())
    for m, row in zip(a[1], rows, strict=True):  # masks: the ground truth resized at pixel centres
        np.testing.assert_array_equal(m.numpy(), truth(row, SIZE, cv2.INTER_NEAREST_EXACT))


# ----------------------------------------------------------------------------- geometry


def class_value(c: int) -> int:
    return 40 + 7 * c


def write_coded_dataset(root: Path, images: int = 2, size: int = 256) -> Path:
    """Images whose pixels inside bone ``c`` are ``40 + 7c`` and 0 elsewhere: 29 disjoint
    30×30 squares on a 6×5 grid, so a mask can be checked against its image."""
    dcm, js = root / "train" / "DCM" / "ID000", root / "train" / "outputs_json" / "ID000"
    dcm.mkdir(parents=True)
    js.mkdir(parents=True)
    for k in range(images):
        img = np.zeros((size, size), np.uint8)
        anns = []
        for c, label in enumerate(CLASSES):
            x0, y0 = 8 + 40 * (c % 6) + 3 * k, 20 + 40 * (c // 6)
            x1, y1 = x0 + 29, y0 + 29
            img[y0:y1 + 1, x0:x1 + 1] = class_value(c)
            anns.append({"label": label, "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]})
        cv2.imwrite(str(dcm / f"img{k}.png"), img)
        (js / f"img{k}.json").write_text(json.dumps({"annotations": anns}))
    build_cache(root, workers=1, progress=False)
    return root / "hbseg-cache"


def test_augmented_mask_follows_image_geometry(tmp_path):
    index = load_cache_index(write_coded_dataset(tmp_path / "coded"))
    aug = AugmentConfig(clahe_p=0.0, ssr_p=1.0, shift_limit=0.1, scale_limit=0.2,
                        rotate_limit=30.0, hflip_p=0.5, brightness_contrast_p=0.0)
    loader = build_loader("torch", index, cfg_for(augment=aug, crop=200, batch_size=2), "train")
    checked = 0
    for epoch in range(4):
        loader.set_epoch(epoch)
        for image, mask in loader:
            pixels = ((image[:, 0] * STD + MEAN) * 255).round()
            # flat 3×3 neighbourhoods: square interiors, never an edge's blend
            hi = torch.nn.functional.max_pool2d(pixels[:, None], 3, 1, 1)[:, 0]
            lo = -torch.nn.functional.max_pool2d(-pixels[:, None], 3, 1, 1)[:, 0]
            flat = hi == lo
            for b in range(image.shape[0]):
                for c in range(len(CLASSES)):
                    inside = mask[b, c].bool()
                    if inside.sum() < 30:
                        continue  # cropped away or nearly
                    values = pixels[b][inside]
                    assert values.median() == class_value(c)
                    core = -torch.nn.functional.max_pool2d(-mask[b, c, None].float(), 5, 1, 2)[0]
                    core_values = pixels[b][core.bool()]  # 2 px inside the mask's edge
                    assert ((core_values - class_value(c)).abs() <= 2).float().mean() > 0.98
                    interior = flat[b] & (pixels[b] == class_value(c))
                    assert inside[interior].float().mean() > 0.97
                    checked += 1
    assert checked > 100


# ----------------------------------------------------------------------------- baseline


def test_baseline_masks_equal_resized_fillpoly(index):
    _, masks = collect(build_loader("baseline", index, cfg_for(), "eval"))
    for m, row in zip(masks, index.itertuples(), strict=True):
        np.testing.assert_array_equal(m.numpy(), truth(row, SIZE, cv2.INTER_NEAREST))


def test_baseline_builds_the_full_resolution_label_in_uint8_like_the_real_baseline(index):
    from hbseg.torch_loaders.baseline_loader import _baseline_label

    row = index.iloc[0]
    label = _baseline_label(row.json_path, int(row.height), int(row.width))
    assert label.dtype == np.uint8 and label.shape == (row.height, row.width, len(CLASSES))
    np.testing.assert_array_equal(label.transpose(2, 0, 1), truth(row, None, cv2.INTER_NEAREST))


def test_baseline_image_is_the_plain_resized_png(index):
    images, _ = collect(build_loader("baseline", index, cfg_for(), "train"))
    order = epoch_order(len(index), 0, 0, True, 0, 1)
    for image, i in zip(images, order, strict=True):
        raw = cv2.imread(index.image_path[i], cv2.IMREAD_GRAYSCALE) / 255.0
        want = (cv2.resize(raw, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR) - MEAN) / STD
        np.testing.assert_allclose(image[0].numpy(), want, atol=1e-5)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kind", ["torch", "baseline"])
@pytest.mark.parametrize("workers", [0, 2])
def test_undecodable_image_raises_data_error_naming_it(index, tmp_path, kind, workers):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    broken = index.copy()
    broken.loc[4, "image_path"] = str(bad)
    loader = build_loader(kind, broken, cfg_for(num_threads=workers), "eval")
    with pytest.raises(DataError) as err:
        list(loader)
    assert err.value.path == bad and str(bad) in str(err.value)
    assert "\n" not in str(err.value)  # the one-line message, not a worker traceback


def test_factory_lists_the_back_ends():
    assert LOADERS == ("dali", "dali-cache", "torch", "baseline")


def test_factory_rejects_unknown_kind_with_suggestion(index):
    with pytest.raises(ConfigError, match=r"'tourch'.*dali, dali-cache, torch, baseline.*'torch'"):
        build_loader("tourch", index, cfg_for())


def test_factory_dali_cache_needs_cuda(index):
    with pytest.raises(ConfigError, match="needs --device cuda"):
        build_loader("dali-cache", index, cfg_for(), device="cpu")


@pytest.mark.parametrize("kind", ["torch", "baseline"])
def test_bad_settings_are_config_errors(index, kind):
    with pytest.raises(ConfigError, match="mode"):
        build_loader(kind, index, cfg_for(), mode="test")
    with pytest.raises(ConfigError, match="full_res_mask"):
        build_loader(kind, index, cfg_for(full_res_mask=True), mode="train")
    with pytest.raises(DataError, match="lacks column"):
        build_loader(kind, index.drop(columns=["image_path"]), cfg_for())
    with pytest.raises(DataError, match="empty"):
        build_loader(kind, index.iloc[:0], cfg_for())


def test_config_is_not_mutated(index):
    cfg = cfg_for()
    before = dataclasses.asdict(cfg)
    list(build_loader("torch", index, cfg, "train"))
    assert dataclasses.asdict(cfg) == before


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["torch", "baseline"])
def test_cuda_output(index, kind):
    image, mask = next(iter(build_loader(kind, index, cfg_for(num_threads=2), "train", "cuda")))
    assert image.is_cuda and mask.is_cuda and mask.dtype == torch.uint8


FORK_AFTER_DALI = """
import gc, sys
from dataclasses import replace
import hbseg.torch_loaders.torch_loader as tl
from hbseg.dali_pipes import DaliLoader, LoaderConfig
from hbseg.loaders import build_loader
from hbseg.data import load_cache_index

def collecting_worker_init(worker_id):
    gc.collect()  # what a worker's own allocations may trigger at any moment
    tl.worker_init(worker_id)

index = load_cache_index(sys.argv[1])
cfg = LoaderConfig(size=64, batch_size=4, num_threads=1)
dali = DaliLoader(index, cfg, "train", "cpu")
dali.me = dali  # a reference cycle: unreachable after del, but not yet collected
next(iter(dali))
del dali
loader = build_loader("torch", index, replace(cfg, num_threads=2), "train", "cpu")
loader._loader.worker_init_fn = collecting_worker_init
print(sum(x.shape[0] for x, _ in loader))
"""


@pytest.mark.slow
def test_workers_forked_after_a_dropped_dali_loader_do_not_destroy_its_pipeline(tiny_cache):
    """A forked worker that garbage-collects an inherited DALI pipeline crashes or hangs in
    its destructor; objects alive at the fork are frozen out of the child's collector."""
    pytest.importorskip("nvidia.dali")
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", FORK_AFTER_DALI, str(tiny_cache)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "8"
