"""The DALI loader back-ends (dali, dali-cache, inference) behind the one Loader interface."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("nvidia.dali")

from hbseg.dali_pipes import (  # noqa: E402
    NO_AUGMENT,
    AugmentConfig,
    CacheTooLargeError,
    DaliCacheLoader,
    DaliInferLoader,
    DaliLoader,
    Loader,
    LoaderConfig,
    NormalizeConfig,
    dali_cache_or_fallback,
    epoch_order,
    num_batches,
)
from hbseg.dali_pipes.graph import to_opencv_matrix  # noqa: E402
from hbseg.data import (  # noqa: E402
    NUM_CLASSES,
    load_cache_index,
    pack_masks,
    read_gray_png,
    read_packed_png,
    unpack_masks,
    write_packed_png,
)
from hbseg.errors import ConfigError, DataError  # noqa: E402

NORM = NormalizeConfig()
QUIET = AugmentConfig(clahe_p=0.0, brightness_contrast_p=0.0, ssr_p=0.5, hflip_p=0.5)


def identifiable_index(tmp: Path, n: int = 7, size: int = 64) -> pd.DataFrame:
    """``n`` constant images (grey 20 + 30·i) whose masks hold class ``i``: any output
    batch tells which samples it holds, whatever the geometry did to them."""
    rows = []
    for i in range(n):
        img, msk = tmp / f"img{i}.png", tmp / f"mask{i}.png"
        cv2.imwrite(str(img), np.full((size, size), 20 + 30 * i, np.uint8))
        masks = np.zeros((NUM_CLASSES, size, size), np.uint8)
        masks[i, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
        write_packed_png(msk, pack_masks(masks))
        rows.append(dict(id=f"ID{i:03d}", image_name=img.name, image_path=str(img),
                         mask_path=str(msk), height=size, width=size, fold=i % 5))
    return pd.DataFrame(rows)


def sample_ids(image: torch.Tensor, norm: NormalizeConfig = NORM) -> list[int]:
    grey = (image.float().flatten(1).amax(1) * norm.std + norm.mean) * 255
    return [int(round((g - 20) / 30)) for g in grey.tolist()]


def read_epoch(loader, epoch: int = 0) -> list[int]:
    loader.set_epoch(epoch)
    return [i for image, _ in loader for i in sample_ids(image)]


def batches(loader, epoch: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) and torch.equal(m, k)
                                    for (x, m), (y, k) in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def index(tiny_cache) -> pd.DataFrame:
    return load_cache_index(tiny_cache)


# ----------------------------------------------------------------------------- interface


def test_loader_interface_shapes_and_dtypes(index):
    cfg = LoaderConfig(size=64, batch_size=3, augment=AugmentConfig(clahe_p=0.5, hflip_p=0.5),
                       normalize=NormalizeConfig(dtype="float16"))
    loader = DaliLoader(index, cfg, "train", "cpu")
    assert isinstance(loader, Loader)
    assert len(loader) == num_batches(len(index), 3) == 3 and loader.num_samples == len(index)
    out = list(loader)
    assert [x.shape[0] for x, _ in out] == [3, 3, 2]  # the last batch is partial
    for image, mask in out:
        assert image.shape[1:] == (1, 64, 64) and image.dtype == torch.float16
        assert mask.shape[1:] == (NUM_CLASSES, 64, 64) and mask.dtype == torch.uint8
        assert mask.max() == 1 and image.device.type == "cpu"


def test_same_seed_same_batches_and_resume(index):
    cfg = LoaderConfig(size=48, batch_size=4, seed=5, augment=AugmentConfig(hflip_p=0.5))
    a = DaliLoader(index, cfg, "train", "cpu")
    epoch0, epoch1 = batches(a, 0), batches(a, 1)
    b = DaliLoader(index, cfg, "train", "cpu")
    assert same(batches(b, 1), epoch1)  # resuming at epoch 1 reproduces it
    assert same(batches(b, 0), epoch0)
    assert not same(epoch0, epoch1)
    other = DaliLoader(index, replace(cfg, seed=6), "train", "cpu")
    assert not same(batches(other, 0), epoch0)


def test_samples_follow_epoch_order_and_shards_partition_an_epoch(tmp_path):
    idx = identifiable_index(tmp_path)
    for epoch in (0, 1):
        seen = []
        for shard in range(3):
            cfg = LoaderConfig(size=32, batch_size=2, seed=3, shard_id=shard, num_shards=3,
                               augment=QUIET)
            loader = DaliLoader(idx, cfg, "train", "cpu")
            ids = read_epoch(loader, epoch)
            assert ids == list(epoch_order(len(idx), epoch, 3, True, shard, 3))
            assert len(loader) == num_batches(len(idx), 2, shard, 3)
            seen += ids
        assert sorted(seen) == list(range(len(idx)))  # every sample exactly once


def test_eval_is_unshuffled_and_full_res_masks_are_the_originals(index):
    cfg = LoaderConfig(size=64, batch_size=3, full_res_mask=True)
    loader = DaliLoader(index, cfg, "eval", "cpu")
    masks = [m for _, ms in loader for m in ms]
    assert len(masks) == len(index)
    for m, path in zip(masks, index["mask_path"], strict=True):
        assert torch.equal(m, torch.from_numpy(unpack_masks(read_packed_png(path))))


def test_reset_rewinds_a_half_read_epoch(index):
    loader = DaliLoader(index, LoaderConfig(size=32, batch_size=3), "train", "cpu")
    first = list(loader)  # epoch 0
    it = iter(loader)  # epoch 1, left half-read
    next(it)
    loader.reset()
    again = list(loader)  # epoch 1 again, from its start
    assert same(again, batches(DaliLoader(index, loader.cfg, "train", "cpu"), 1))
    assert not same(again, first) and loader.epoch == 1


@pytest.mark.parametrize("bad", ["truncated", "missing", "mask"])
def test_broken_file_raises_data_error_naming_it(index, tmp_path, bad):
    idx = index.copy()
    victim = tmp_path / ("m.png" if bad == "mask" else "x.png")
    column = "mask_path" if bad == "mask" else "image_path"
    if bad != "missing":
        data = Path(idx.loc[4, column]).read_bytes()
        victim.write_bytes(data[: len(data) // 2])
    idx.loc[4, column] = str(victim)
    loader = DaliLoader(idx, LoaderConfig(size=32, batch_size=2), "eval", "cpu")
    with pytest.raises(DataError) as err:
        list(loader)
    assert err.value.path == victim


def test_bad_settings_raise_config_error(index):
    with pytest.raises(ConfigError, match="mode"):
        DaliLoader(index, LoaderConfig(), "test", "cpu")
    with pytest.raises(ConfigError, match="full_res_mask"):
        DaliLoader(index, LoaderConfig(full_res_mask=True), "train", "cpu")
    with pytest.raises(ConfigError, match="device"):
        DaliLoader(index, LoaderConfig(), "train", "tpu")
    with pytest.raises(DataError, match="lacks column"):
        DaliLoader(index.drop(columns=["mask_path"]), LoaderConfig(), "train", "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_cuda_without_gpu_says_so(index):
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        DaliLoader(index, LoaderConfig(), "train", "cuda")


def test_package_imports_without_loading_dali():
    code = ("import sys, hbseg.dali_pipes as d; assert 'nvidia.dali' not in sys.modules; "
            "assert 'DaliLoader' in d.__all__ and 'train_pipeline' in d.__all__")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- dali-cache


def test_cache_loader_matches_file_loader_on_cpu(index):
    for mode, cfg in [("eval", LoaderConfig(size=48, batch_size=3)),
                      ("train", LoaderConfig(size=48, batch_size=3, seed=2, augment=NO_AUGMENT))]:
        cached = DaliCacheLoader(index, cfg, mode, "cpu", headroom_bytes=0)
        assert cached.cache_bytes == len(index) * 256 * 256 * 5
        assert isinstance(cached, Loader) and len(cached) == 3
        files = DaliLoader(index, cfg, mode, "cpu")
        assert same(batches(cached, 1), batches(files, 1))


def test_cache_loader_train_augments_and_keeps_order(tmp_path):
    idx = identifiable_index(tmp_path)
    cfg = LoaderConfig(size=32, batch_size=3, seed=4, augment=QUIET)
    cached = DaliCacheLoader(idx, cfg, "train", "cpu", headroom_bytes=0)
    assert read_epoch(cached, 2) == list(epoch_order(len(idx), 2, 4, True, 0, 1))


def test_cache_that_does_not_fit_is_refused_or_falls_back(index):
    huge = 1 << 60
    with pytest.raises(CacheTooLargeError, match="--loader dali"):
        DaliCacheLoader(index, LoaderConfig(size=32), "train", "cpu", headroom_bytes=huge)
    assert issubclass(CacheTooLargeError, ConfigError)
    with pytest.warns(RuntimeWarning, match="falling back"):
        loader = dali_cache_or_fallback(index, LoaderConfig(size=32), "train", "cpu",
                                        headroom_bytes=huge)
    assert type(loader) is DaliLoader


# ----------------------------------------------------------------------------- inference


def _infer_files(tmp: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    for i, (h, w) in enumerate([(300, 200), (128, 257), (64, 64)]):
        p = tmp / f"t{i}.png"
        cv2.imwrite(str(p), cv2.GaussianBlur(rng.integers(0, 256, (h, w), dtype=np.uint8), (7, 7), 2))
        files.append(p)
    return files


def test_infer_loader_any_size_keeps_original_sizes_and_names(tmp_path):
    files = _infer_files(tmp_path)
    aug = AugmentConfig(clahe_p=1.0)
    loader = DaliInferLoader(files, size=96, augment=aug, batch_size=2, device="cpu")
    out = list(loader)
    assert len(loader) == len(out) == 2
    hw = [t for _, b, _ in out for t in b]
    names = [n for _, _, b in out for n in b]
    assert hw == [read_gray_png(p).shape for p in files] and names == [p.name for p in files]
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    images = torch.cat([x for x, _, _ in out])
    assert images.shape == (3, 1, 96, 96) and images.dtype == torch.float32
    for x, p in zip(images, files, strict=True):
        src = clahe.apply(read_gray_png(p))
        h, w = src.shape
        mt = np.float32([[96 / w, 0, 0], [0, 96 / h, 0]])
        ref = cv2.warpAffine(src, to_opencv_matrix(mt), (96, 96), flags=cv2.INTER_LINEAR)
        grey = (x[0].double().numpy() * NORM.std + NORM.mean) * 255
        assert np.abs(grey - ref).mean() < 0.5


def test_infer_loader_full_resolution(tmp_path):
    files = _infer_files(tmp_path)
    aug = AugmentConfig(clahe_p=1.0)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    out = list(DaliInferLoader(files, None, aug, NORM, 2, "cpu"))
    images = [x for batch, _, _ in out for x in batch]
    assert [tuple(x.shape) for x in images] == [(1, *read_gray_png(p).shape) for p in files]
    for x, p in zip(images, files, strict=True):
        grey = (x[0].double().numpy() * NORM.std + NORM.mean) * 255
        assert np.abs(grey - clahe.apply(read_gray_png(p))).max() < 1e-3


def test_infer_loader_on_real_radiographs(real_hands):
    loader = DaliInferLoader(real_hands[:3], size=64, batch_size=3)
    (image, hw, names), = list(loader)
    assert image.shape == (3, 1, 64, 64)
    assert hw == [read_gray_png(p).shape for p in real_hands[:3]]
    assert names == [p.name for p in real_hands[:3]]


def test_infer_loader_names_a_corrupt_file(tmp_path):
    files = _infer_files(tmp_path)
    data = files[1].read_bytes()
    files[1].write_bytes(data[:40])
    with pytest.raises(DataError) as err:
        list(DaliInferLoader(files, size=32, batch_size=1))
    assert err.value.path == files[1]


def test_closing_a_cache_loader_frees_its_arrays_at_once(index):
    import gc
    import weakref

    gc.disable()  # what is freed must be freed by close(), not by a collection
    try:
        loader = DaliCacheLoader(index, LoaderConfig(size=32, batch_size=2), "train", "cpu",
                                 headroom_bytes=0)
        next(iter(loader))
        refs = [weakref.ref(a) for arrays in loader._source.arrays for a in arrays]
        assert refs and all(r() is not None for r in refs)
        with loader:
            pass  # the context manager closes it
        alive = sum(r() is not None for r in refs)
        assert alive == 0, f"{alive} of {len(refs)} cached arrays outlived close()"
        with pytest.raises(RuntimeError, match="closed"):
            iter(loader)
        loader.close()  # twice is fine
    finally:
        gc.enable()


def test_a_closed_file_loader_refuses_to_iterate(index):
    loader = DaliLoader(index, LoaderConfig(size=32, batch_size=2), "eval", "cpu")
    assert len(list(loader)) == len(loader)
    loader.close()
    assert loader.closed
    with pytest.raises(RuntimeError, match="closed"):
        list(loader)


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_loader_yields_cuda_tensors_close_to_cpu(index):
    cfg = LoaderConfig(size=64, batch_size=3)
    gpu = list(DaliLoader(index, cfg, "eval", "cuda"))
    cpu = list(DaliLoader(index, cfg, "eval", "cpu"))
    for (xg, mg), (xc, mc) in zip(gpu, cpu, strict=True):
        assert xg.device.type == "cuda" and mg.device.type == "cuda"
        # CLAHE is exact on both; DALI's GPU warp computes its taps with fused multiply-adds
        # where the CPU warp rounds each step, which moves a linear sample by at most 1 level
        levels = float((xg.cpu() - xc).abs().max()) * 255 * NORM.std
        assert levels <= 1.5, f"max |GPU - CPU| {levels:.2f} grey levels"
        agree = float((mg.cpu() == mc).float().mean())
        assert agree > 0.999, f"mask agreement {agree:.5f}"  # nearest: float ties may differ


@pytest.mark.gpu
def test_gpu_same_seed_same_batches(index):
    cfg = LoaderConfig(size=48, batch_size=4, seed=5, augment=AugmentConfig(hflip_p=0.5))
    assert same(batches(DaliLoader(index, cfg, "train", "cuda"), 1),
                batches(DaliLoader(index, cfg, "train", "cuda"), 1))


@pytest.mark.gpu
def test_gpu_cache_loader_fits_and_yields_the_same_shapes(index, tmp_path):
    cfg = LoaderConfig(size=64, batch_size=3, full_res_mask=False)
    cached = DaliCacheLoader(index, cfg, "train", "cuda", headroom_bytes=0)
    for image, mask in cached:
        assert image.device.type == "cuda" and image.shape[1:] == (1, 64, 64)
        assert mask.device.type == "cuda" and mask.shape[1:] == (NUM_CLASSES, 64, 64)
    files = list(DaliLoader(index, replace(cfg, augment=NO_AUGMENT), "eval", "cuda"))
    cached_eval = list(DaliCacheLoader(index, replace(cfg, augment=NO_AUGMENT), "eval", "cuda",
                                       headroom_bytes=0))
    assert same(files, cached_eval)
    with pytest.raises(CacheTooLargeError, match="--loader dali"):
        DaliCacheLoader(index, cfg, "train", "cuda", headroom_bytes=1 << 60)
    idx = identifiable_index(tmp_path)
    order = read_epoch(DaliCacheLoader(idx, LoaderConfig(size=32, batch_size=3, augment=QUIET),
                                       "train", "cuda", headroom_bytes=0), 1)
    assert order == list(epoch_order(len(idx), 1, 0, True, 0, 1))


@pytest.mark.gpu
def test_gpu_infer_loader(tmp_path):
    files = _infer_files(tmp_path)
    out = list(DaliInferLoader(files, size=64, batch_size=3, device="cuda"))
    (image, hw, _), = out
    assert image.device.type == "cuda" and image.shape == (3, 1, 64, 64)
    assert hw == [read_gray_png(p).shape for p in files]
