"""hbseg.dali_pipes as a library other projects adopt (issue #31), one section per row of the
issue's table: own files in one call, the data decide, RGB statistics, neutral defaults,
a new epoch per iteration, own operations and a vertical flip, (H, W) and DataLoader
options, index masks and the documented rules; then the docs page and the type check."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from hbseg.dali_pipes import (
    HAND_XRAY,
    NO_AUGMENT,
    AugmentConfig,
    LoaderConfig,
    NormalizeConfig,
    draw_sample,
    eval_draw,
    num_batches,
)
from hbseg.dali_pipes.config import IMAGENET_RGB_MEAN, IMAGENET_RGB_STD
from hbseg.errors import ConfigError, DataError

pytest.importorskip("nvidia.dali")

from hbseg.dali_pipes import DaliCacheLoader, DaliInferLoader, DaliLoader  # noqa: E402
from hbseg.torch_loaders import BaselineLoader, TorchLoader  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GREY = NormalizeConfig()
SIDE = 64  # every file here is 64 px, so size=64 reads them unresampled


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch) -> Path:
    """The user cache folder, kept inside the test's own folder."""
    folder = tmp_path / "user-cache"
    monkeypatch.setenv("HBSEG_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def spine(tmp_path_factory) -> tuple[list[Path], list[Path]]:
    """8 grey images with index masks of 6 classes (hbseg.data.synth_shapes)."""
    from hbseg.data.synth_shapes import ShapesConfig, generate_shapes

    root = tmp_path_factory.mktemp("spine")
    generate_shapes(root, ShapesConfig(kind="spine", images=8, size=SIDE))
    images = sorted((root / "images").rglob("*.png"))
    return images, [root / "labels" / p.relative_to(root / "images") for p in images]


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> tuple[list[Path], dict[str, list[Path | None]]]:
    """4 colour images with one binary mask per class (overlapping; some absent)."""
    from hbseg.data.synth_shapes import ShapesConfig, generate_shapes
    from hbseg.data.synth_shapes.generate import BLOB_CLASSES

    root = tmp_path_factory.mktemp("cells")
    generate_shapes(root, ShapesConfig(kind="blobs", format="class-png", images=4, size=SIDE))
    images = sorted((root / "images").rglob("*.png"))

    def mask(c: str, p: Path) -> Path | None:
        path = root / "labels" / c / p.relative_to(root / "images")
        return path if path.exists() else None

    return images, {c: [mask(c, p) for p in images] for c in BLOB_CLASSES}


@pytest.fixture(scope="module")
def numbered(tmp_path_factory) -> tuple[list[Path], list[Path]]:
    """7 constant images (grey 20 + 30·i) whose index masks hold class i % 6 + 1 in a
    square: any batch tells which rows it holds."""
    root = tmp_path_factory.mktemp("numbered")
    images, masks = [], []
    for i in range(7):
        img, msk = root / f"img{i}.png", root / f"img{i}_mask.png"
        cv2.imwrite(str(img), np.full((SIDE, SIDE), 20 + 30 * i, np.uint8))
        index = np.zeros((SIDE, SIDE), np.uint8)
        index[8 + 4 * i: 40 + 2 * i, 10:50] = i % 6 + 1
        cv2.imwrite(str(msk), index)
        images.append(img)
        masks.append(msk)
    return images, masks


def rows(image: torch.Tensor) -> list[int]:
    grey = (image.float().flatten(1).amax(1) * GREY.std + GREY.mean) * 255
    return [int(round((g - 20) / 30)) for g in grey.tolist()]


def epoch_rows(loader) -> list[int]:
    return [i for image, _ in loader for i in rows(image)]


def collect(loader) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(masks)


def grey_levels(x: torch.Tensor, norm: NormalizeConfig, channels: int) -> torch.Tensor:
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in norm.per_channel(channels))
    return (x * std + mean) * 255


def listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


# ------------------------------------------------------------- own files in one call (high)


def test_index_masks_of_grey_images_in_one_call(spine):
    images, masks = spine
    loader = DaliLoader.from_files(images, masks, size=SIDE, batch_size=3)
    assert len(loader) == 3 and loader.num_samples == 8
    image, mask = collect(loader)
    assert image.dtype == torch.float32 and image.shape == (8, 1, SIDE, SIDE)
    assert mask.dtype == torch.uint8 and mask.shape == (8, 6, SIDE, SIDE)  # no background plane
    for k, (img, msk) in enumerate(zip(images, masks, strict=True)):
        want = cv2.imread(str(img), cv2.IMREAD_GRAYSCALE)
        got = grey_levels(image[k: k + 1], loader.cfg.normalize, 1)[0, 0]
        assert float((got - torch.from_numpy(want).float()).abs().max()) < 0.01
        from PIL import Image

        index = np.asarray(Image.open(msk))
        planes = np.stack([index == c for c in range(1, 7)]).astype(np.uint8)
        assert np.array_equal(mask[k].numpy(), planes)


def test_binary_masks_per_class_of_colour_images(cells):
    images, masks = cells
    loader = DaliLoader.from_files(images, masks, size=SIDE, batch_size=2)
    assert (loader.cfg.channels, loader.cfg.num_classes) == (3, 3)
    image, mask = collect(loader)
    assert image.shape == (4, 3, SIDE, SIDE) and mask.shape == (4, 3, SIDE, SIDE)
    from hbseg.data.formats.images import read_rgb_png

    for k, path in enumerate(images):
        got = grey_levels(image[k: k + 1], loader.cfg.normalize, 3)[0].permute(1, 2, 0)
        assert float((got - torch.from_numpy(read_rgb_png(path)).float()).abs().max()) < 0.01
        for c, files in enumerate(masks.values()):
            want = np.zeros((SIDE, SIDE), bool) if files[k] is None else (
                cv2.imread(str(files[k]), cv2.IMREAD_GRAYSCALE) != 0)
            assert np.array_equal(mask[k, c].numpy().astype(bool), want)
    assert bool((mask.sum(1) > 1).any())  # the classes overlap
    with pytest.raises(DataError, match="overlap") as err:
        DaliLoader.from_files(images, masks, size=SIDE, batch_size=2, mask_output="index")
    assert err.value.path is not None and err.value.path.name.endswith(".png")


def test_a_table_or_csv_of_paths_is_the_same(spine, tmp_path):
    images, masks = spine
    want = collect(DaliLoader.from_files(images, masks, size=48, batch_size=4))
    table = pd.DataFrame({"image": images, "mask": masks})
    got = collect(DaliLoader.from_files(table, size=48, batch_size=4))
    assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
    base = images[0].parents[2]
    csv = base / "files.csv"
    try:
        table.map(lambda p: os.path.relpath(p, base)).to_csv(csv, index=False)
        got = collect(DaliLoader.from_files(csv, size=48, batch_size=4))
    finally:
        csv.unlink()
    assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))


def test_bad_files_give_errors_naming_them(spine, tmp_path):
    images, masks = spine
    with pytest.raises(DataError, match="8 images but 7 masks"):
        DaliLoader.from_files(images, masks[:7], size=SIDE, batch_size=2)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((32, SIDE), np.uint8))
    with pytest.raises(DataError, match=r"mask is 64x32 but its image .* is 64x64") as err:
        DaliLoader.from_files(images, [*masks[:7], small], size=SIDE, batch_size=2)
    assert err.value.path == small
    broken = tmp_path / "broken.png"
    broken.write_bytes(images[3].read_bytes()[:200])
    with pytest.raises(DataError) as err:
        DaliLoader.from_files([*images[:3], broken, *images[4:]], masks, size=SIDE, batch_size=2)
    assert err.value.path == broken
    gone = tmp_path / "gone.png"
    with pytest.raises(DataError) as err:
        DaliLoader.from_files(images, [*masks[:2], gone, *masks[3:]], size=SIDE, batch_size=2)
    assert err.value.path == gone
    with pytest.raises(DataError, match="num_classes=4") as err:
        DaliLoader.from_files(images, masks, size=SIDE, batch_size=2, num_classes=4)
    assert err.value.path in set(masks)


def test_nothing_is_written_beside_the_data_and_the_cache_is_reused(numbered, tmp_path,
                                                                      user_cache, monkeypatch):
    import hbseg.dali_pipes.files as files

    images, masks = numbered
    folder = images[0].parent
    before = listing(folder)
    packed: list[str] = []
    pack = files._pack_one
    monkeypatch.setattr(files, "_pack_one", lambda job: packed.append(job[0]) or pack(job))
    DaliLoader.from_files(images, masks, size=SIDE, batch_size=4)
    assert listing(folder) == before  # the user's folder is untouched
    [cache] = [p for p in (user_cache / "files").iterdir() if not p.name.startswith(".")]
    assert (cache / "meta.json").is_file() and len(packed) == 7
    DaliLoader.from_files(images, masks, size=SIDE, batch_size=4)
    assert len(packed) == 7  # nothing repacked
    mine = tmp_path / "here"
    loader = DaliLoader.from_files(images, masks, size=SIDE, batch_size=4, cache_dir=mine)
    assert (mine / "index.csv").is_file() and len(packed) == 14
    # a mask that changes is repacked, and only it
    index = np.zeros((SIDE, SIDE), np.uint8)
    changed = tmp_path / "changed.png"
    cv2.imwrite(str(changed), index)
    loader = DaliLoader.from_files(images, [*masks[:6], changed], size=SIDE, batch_size=4,
                                   cache_dir=mine)
    assert len(packed) == 15 and packed[-1] == str(images[6])
    assert int(collect(loader)[1][6].sum()) == 0


def test_many_classes_of_binary_masks(numbered, tmp_path):
    """Up to 8 classes a mask is stored in one byte, beyond in four: both read alike."""
    from PIL import Image

    images, masks = numbered
    values = [np.asarray(Image.open(m)) for m in masks]
    folder = tmp_path
    for n in (3, 9):
        files: dict[str, list[Path | None]] = {}
        for c in range(n):
            files[f"c{c}"] = []
            for i, v in enumerate(values):
                path = folder / f"{i}_{c}.png"
                cv2.imwrite(str(path), ((v == c % 6 + 1) * 255).astype(np.uint8))
                files[f"c{c}"].append(path)
        for kind in (DaliLoader, TorchLoader):
            extra = {"num_threads": 0} if kind is TorchLoader else {}
            got = collect(kind.from_files(images, files, size=SIDE, batch_size=4, **extra))[1]
            want = np.stack([np.stack([v == c % 6 + 1 for c in range(n)]) for v in values])
            assert np.array_equal(got.numpy(), want.astype(np.uint8)), (n, kind.__name__)


def test_torch_back_end_reads_the_same_files_the_same_way(spine):
    images, masks = spine
    aug = AugmentConfig(ssr_p=1.0, rotate_limit=20, hflip_p=0.5, vflip_p=0.5)
    kw = dict(size=(48, 56), batch_size=3, shuffle=True, seed=4, augment=aug)
    dali = collect(DaliLoader.from_files(images, masks, **kw))
    torch_ = collect(TorchLoader.from_files(images, masks, num_threads=0, **kw))
    assert float((dali[0] - torch_[0]).abs().max()) <= 2 / (255 * GREY.std) + 1e-4
    assert float((dali[1] != torch_[1]).float().mean()) < 0.01  # nearest ties on pixel edges


# ------------------------------------------------------------- the data decide (high)


@pytest.fixture(scope="module")
def spine_cache(spine) -> Path:
    from hbseg.data import build_cache

    root = spine[0][0].parents[2]
    build_cache(root, cache_dir=root.parent / "spine-cache", workers=1, progress=False)
    return root.parent / "spine-cache"


@pytest.mark.parametrize("kind", ["dali", "torch"])
def test_a_cache_decides_classes_and_channels(spine_cache, kind):
    from hbseg.data import load_cache_index

    index = load_cache_index(spine_cache)
    build = DaliLoader if kind == "dali" else TorchLoader
    extra = {} if kind == "dali" else {"num_threads": 0}
    loader = build(index, LoaderConfig(size=SIDE, batch_size=4, **extra), "eval")
    image, mask = next(iter(loader))
    assert image.shape[1] == 1 and mask.shape[1] == 6
    with pytest.raises(ConfigError, match=r"num_classes=29.* 6 classes") as err:
        build(index, LoaderConfig(size=SIDE, num_classes=29), "eval")
    assert err.value.path == spine_cache / "meta.json"
    with pytest.raises(ConfigError, match=r"channels=3.* grey"):
        build(index, LoaderConfig(size=SIDE, channels=3), "eval")
    build(index, LoaderConfig(size=SIDE, channels=1, num_classes=6, **extra), "eval")  # agreeing


# ------------------------------------------------------------- RGB normalisation (high)


def test_colour_gets_imagenet_rgb_statistics(cells):
    norm = LoaderConfig(channels=3).normalize
    assert (norm.mean, norm.std) == (IMAGENET_RGB_MEAN, IMAGENET_RGB_STD)
    assert LoaderConfig(channels=1).normalize == GREY
    own = NormalizeConfig(mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    assert LoaderConfig(channels=3, normalize=own).normalize == own  # yours stay
    loader = DaliLoader.from_files(*cells, size=SIDE, batch_size=4)
    assert (loader.cfg.normalize.mean, loader.cfg.normalize.std) == (IMAGENET_RGB_MEAN,
                                                                     IMAGENET_RGB_STD)
    with pytest.raises(ConfigError, match=r"channels=1, but this image is colour"):
        DaliLoader.from_files(*cells, size=SIDE, batch_size=4, channels=1)


# ------------------------------------------------------------- neutral defaults (med)


def test_defaults_change_nothing_and_the_hand_recipe_is_a_preset():
    from hbseg.train.config import TrainConfig

    off = AugmentConfig()
    assert NO_AUGMENT == off
    assert all(getattr(off, f.name) == 0 for f in dataclasses.fields(off) if f.name.endswith("_p"))
    unused_crop = dict(crop_u=0.5, crop_v=0.5)  # drawn always, used only with a crop
    assert dataclasses.replace(draw_sample(off, 0, 0, 3), **unused_crop) == eval_draw(off)
    assert not eval_draw(NO_AUGMENT).clahe  # "no augment" means no CLAHE either
    assert LoaderConfig().augment == off
    assert HAND_XRAY == AugmentConfig.hand_xray() == AugmentConfig(
        clahe_p=1.0, ssr_p=0.5, brightness_contrast_p=0.5)
    assert TrainConfig(out="run", data="data").augment == HAND_XRAY  # hbseg-train unchanged
    assert eval_draw(HAND_XRAY).clahe  # a model trained with CLAHE is scored with it


@pytest.mark.parametrize("field,bad", [
    ("clahe_p", 1.5), ("clahe_clip_limit", 0.0), ("clahe_tile_grid", (0, 8)),
    ("clahe_tile_grid", (8,)), ("clahe_gpu_kernel", "fast"), ("ssr_p", -0.1),
    ("shift_limit", 2.0), ("scale_limit", 1.0), ("rotate_limit", 270.0), ("hflip_p", 1.5),
    ("vflip_p", float("nan")), ("brightness_contrast_p", "0.5"), ("brightness_limit", 1.5),
    ("contrast_limit", -1.0),
])
def test_every_augment_field_is_range_checked(field, bad):
    with pytest.raises(ValueError, match=re.escape(field)) as err:
        AugmentConfig(**{field: bad})
    assert repr(bad) in str(err.value) and ("[" in str(err.value) or "one of" in str(err.value))


def test_help_gives_units():
    doc = " ".join((AugmentConfig.__doc__ or "").split())
    for unit in ("probability", "degrees", "of 255", "of each side", "tileGridSize", "clipLimit"):
        assert unit in doc, unit


# ------------------------------------------------------------- a new epoch per iteration (med)


@pytest.mark.parametrize("kind", [DaliLoader, TorchLoader])
def test_each_iteration_is_a_new_epoch_and_set_epoch_pins_one(numbered, kind):
    aug = AugmentConfig(ssr_p=1.0, hflip_p=0.5)
    extra = {"num_threads": 0} if kind is TorchLoader else {}
    loader = kind.from_files(*numbered, size=SIDE, batch_size=3, shuffle=True, augment=aug,
                             **extra)
    first, second = collect(loader), collect(loader)  # no set_epoch
    assert loader.epoch == 1
    assert rows(first[0]) != rows(second[0])  # reshuffled
    assert not torch.equal(first[1].sum((1, 2, 3)).sort()[0], second[1].sum((1, 2, 3)).sort()[0])
    loader.set_epoch(0)
    assert all(torch.equal(a, b) for a, b in zip(collect(loader), first, strict=True))
    loader.set_epoch(5)
    collect(loader)
    other = kind.from_files(*numbered, size=SIDE, batch_size=3, shuffle=True, augment=aug,
                            **extra)
    other.set_epoch(6)
    assert all(torch.equal(a, b) for a, b in zip(collect(loader), collect(other), strict=True))


# ------------------------------------------------------------- own operations, vflip (med)


@pytest.mark.parametrize("kind", [DaliLoader, TorchLoader])
def test_vertical_flip_flips_image_and_mask(spine, kind):
    extra = {"num_threads": 0} if kind is TorchLoader else {}
    plain = collect(kind.from_files(*spine, size=SIDE, batch_size=4, **extra))
    flipped = collect(kind.from_files(*spine, size=SIDE, batch_size=4,
                                      augment=AugmentConfig(vflip_p=1.0), **extra))
    for a, b in zip(plain, flipped, strict=True):
        assert torch.equal(a.flip(-2), b)


def test_own_dali_operations_get_one_draw_for_image_and_mask(spine):
    from nvidia.dali import fn

    def maybe_flip(image, mask):
        coin = fn.random.coin_flip(probability=0.5)  # one draw per sample, used twice
        return (fn.flip(image, vertical=coin, horizontal=0),
                fn.flip(mask, vertical=coin, horizontal=0))

    plain = collect(DaliLoader.from_files(*spine, size=SIDE, batch_size=4))
    mine = collect(DaliLoader.from_files(*spine, size=SIDE, batch_size=4, ops=maybe_flip, seed=3))
    flipped = []
    for k in range(len(plain[0])):
        same = torch.equal(mine[0][k], plain[0][k]) and torch.equal(mine[1][k], plain[1][k])
        flip = (torch.equal(mine[0][k], plain[0][k].flip(-2))
                and torch.equal(mine[1][k], plain[1][k].flip(-2)))
        assert same or flip, f"row {k}: image and mask were not moved together"
        flipped.append(flip)
    assert any(flipped) and not all(flipped)
    with pytest.raises(ConfigError, match="DaliLoader"):
        TorchLoader.from_files(*spine, size=SIDE, batch_size=4, ops=maybe_flip)


# ------------------------------------------------------------- (H, W), shuffle, drop_last (low)


def test_h_w_sizes_on_every_loader(spine, tiny_root):
    from hbseg.data import load_cache_index

    hw = (48, 80)
    loaders = [DaliLoader.from_files(*spine, size=hw, batch_size=4),
               TorchLoader.from_files(*spine, size=hw, batch_size=4, num_threads=0)]
    from hbseg.dali_pipes import file_set, files_index

    cfg = LoaderConfig(size=hw, batch_size=4, num_threads=0)
    mine = files_index(file_set(*spine))  # the cache from_files made above
    hands = load_cache_index(tiny_root / "hbseg-cache").head(4)
    loaders += [DaliCacheLoader(mine, cfg, "train", "cpu", headroom_bytes=0),
                DaliCacheLoader(hands, cfg, "eval", "cpu", headroom_bytes=0),
                BaselineLoader(hands, cfg, "eval")]
    for loader in loaders:
        image, mask = next(iter(loader))
        assert tuple(image.shape[-2:]) == tuple(mask.shape[-2:]) == hw, type(loader).__name__
    image, _, _ = next(iter(DaliInferLoader(spine[0][:2], size=hw, batch_size=2)))
    assert tuple(image.shape) == (2, 1, *hw)


def test_shuffle_and_drop_last_are_options_of_their_own(numbered, spine_cache):
    from hbseg.data import load_cache_index

    plain = DaliLoader.from_files(*numbered, size=SIDE, batch_size=3)
    assert epoch_rows(plain) == epoch_rows(plain) == list(range(7))  # shuffle=False keeps order
    dropped = DaliLoader.from_files(*numbered, size=SIDE, batch_size=3, shuffle=True,
                                    drop_last=True)
    assert len(dropped) == num_batches(7, 3, drop_last=True) == 2
    batches = [rows(image) for image, _ in dropped]
    assert [len(b) for b in batches] == [3, 3] and sorted(sum(batches, [])) != list(range(6))
    torch_dropped = TorchLoader.from_files(*numbered, size=SIDE, batch_size=3, shuffle=True,
                                           drop_last=True, num_threads=0)
    assert [rows(image) for image, _ in torch_dropped] == batches
    index = load_cache_index(spine_cache)
    shuffled_eval = DaliLoader(index, LoaderConfig(size=SIDE, batch_size=8, shuffle=True), "eval")
    kept = DaliLoader(index, LoaderConfig(size=SIDE, batch_size=8), "eval")
    assert not torch.equal(collect(shuffled_eval)[0], collect(kept)[0])


# ------------------------------------------------------------- index masks, documented rules (low)


def test_index_mask_output_for_cross_entropy(spine):
    images, masks = spine
    planes = collect(DaliLoader.from_files(images, masks, size=48, batch_size=4))[1]
    loader = DaliLoader.from_files(images, masks, size=48, batch_size=4, mask_output="index")
    index = collect(loader)[1]
    assert index.dtype == torch.int64 and index.shape == (8, 48, 48)
    weights = torch.arange(1, 7).view(1, -1, 1, 1)
    assert torch.equal(index, (planes.long() * weights).amax(1))
    logits = torch.zeros(8, 7, 48, 48, requires_grad=True)
    torch.nn.functional.cross_entropy(logits, index).backward()


def test_masks_resample_by_the_documented_nearest_rule(spine):
    from PIL import Image

    images, masks = spine
    index = collect(DaliLoader.from_files(images, masks, size=32, batch_size=8,
                                          mask_output="index"))[1]
    for k, path in enumerate(masks):
        want = cv2.resize(np.asarray(Image.open(path)), (32, 32),
                          interpolation=cv2.INTER_NEAREST_EXACT)
        assert np.array_equal(index[k].numpy(), want)  # a whole factor: equal everywhere


# ------------------------------------------------------------- the docs page, the type check


def docs_code() -> str:
    """The python blocks of docs/library.md, in order: one script."""
    text = (ROOT / "docs" / "library.md").read_text()
    return "\n".join(re.findall(r"```python\n(.*?)```", text, re.S))


def test_docs_page_runs_as_written(tmp_path):
    code = docs_code()
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp_path),
           "PYTHONPATH": path, "HBSEG_CACHE_DIR": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"docs/library.md failed:\n{res.stderr[-3000:]}"
    out = res.stdout
    assert out.count("epoch 1: loss") == 3
    assert "torch.float32 (4, 1, 96, 96) torch.uint8 (4, 6, 96, 96) 1 grey level(s)" in out
    assert "torch.int64 (4, 96, 96) [0, 1, 2, 3, 4, 5, 6]" in out
    assert "(2, 3, 96, 128) (2, 3, 96, 128) (0.485, 0.456, 0.406)" in out
    assert "8 images but 7 masks" in out
    assert not (tmp_path / "cache").exists() or any((tmp_path / "cache").iterdir())


# the public names of hbseg.dali_pipes and the torch back-ends; what they import from the rest
# of hbseg is read for its signatures only (--follow-imports=silent)
TYPE_CHECK = [sys.executable, "-m", "mypy", "-p", "hbseg.dali_pipes", "-p", "hbseg.torch_loaders",
              "--ignore-missing-imports", "--follow-imports=silent"]


def test_public_names_pass_the_type_check(tmp_path):
    """The package's modules, and the docs page's code as another project would write it."""
    pytest.importorskip("mypy")
    cache = ["--cache-dir", str(tmp_path / "mypy")]
    res = subprocess.run([*TYPE_CHECK, *cache], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-4000:]
    user = tmp_path / "user_code.py"
    user.write_text(docs_code())
    res = subprocess.run([sys.executable, "-m", "mypy", str(user), *TYPE_CHECK[-2:], *cache],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:]
