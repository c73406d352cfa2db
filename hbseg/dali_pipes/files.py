"""Your own files in one call: lists of image and mask paths → a mask cache → the index
every hbseg loader reads (``DaliLoader.from_files``, ``TorchLoader.from_files``).

Masks come in one of two forms:

* a list of **index masks**, one per image: one value per pixel (grey, 16-bit or palette
  PNG), 0 background, ``k`` class ``k`` (1-32);
* a dict ``{class name: list of binary masks}``: non-zero is the class, classes may
  overlap, ``None`` is an empty mask.

Every image and mask is read once, checked (a PNG that cannot be read, a mask of another
size than its image, a value out of range: an error naming the file) and its mask stored
(:mod:`hbseg.dali_pipes.outputs`) in a cache of the same layout as ``hbseg-data cache``
writes, with the classes, channels and mask encoding in its ``meta.json``; the loaders
then read it like any other (:mod:`hbseg.dali_pipes.layout`). Nothing is written beside
your data: the cache goes to ``cache_dir``, by default ``$HBSEG_CACHE_DIR``,
``$XDG_CACHE_HOME/hbseg`` or ``~/.cache/hbseg``, under ``files/<hash of the file lists>``.
A later call stores again only the masks whose files changed (size or modification time).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

from hbseg.errors import ConfigError, DataError

from .config import NO_AUGMENT, AugmentConfig, LoaderConfig, NormalizeConfig

if TYPE_CHECKING:
    from .graph import GraphOps

__all__ = ["FileSet", "FromFiles", "file_set", "files_index", "default_cache_root"]

PathLike = str | os.PathLike[str]
MaskFiles = Sequence[PathLike] | Mapping[str, Sequence[PathLike | None]]
FILES_VERSION = 2  # 2: index masks stored as they are, binary ones in one byte when they fit
MAX_VALUE = 32  # a packed mask pixel holds 32 classes


@dataclass(frozen=True)
class FileSet:
    """Absolute paths: ``masks[i]`` is ``(index mask,)`` or one binary mask per class
    (``""``: empty); ``classes`` names the binary masks' classes (None for index masks)."""

    images: tuple[str, ...]
    masks: tuple[tuple[str, ...], ...]
    classes: tuple[str, ...] | None

    @property
    def kind(self) -> str:
        return "index" if self.classes is None else "binary"

    def key(self) -> str:
        """A name for the cache of exactly these files."""
        doc = json.dumps([FILES_VERSION, self.classes, self.images, self.masks])
        return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _abs(p: PathLike | None) -> str:
    return "" if p is None or str(p) == "" else str(Path(p).expanduser().resolve())


def _from_table(table: pd.DataFrame | PathLike) -> tuple[list[Any], MaskFiles]:
    """A table (or CSV) with an ``image`` column and either a ``mask`` column (index masks)
    or one column per class (binary masks); a CSV's relative paths are relative to it."""
    base = None
    if not isinstance(table, pd.DataFrame):
        base = Path(table).parent
        try:
            table = pd.read_csv(table, keep_default_na=False, dtype=str)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read the table of files ({e})", Path(str(table))) from None

    def col(name: str) -> list[Any]:
        vals = [None if (v is None or (isinstance(v, float) and np.isnan(v)) or v == "")
                else v for v in table[name]]
        return [v if v is None or base is None else base / str(v) for v in vals]

    if "image" not in table.columns:
        raise ConfigError(f"a table of files needs an 'image' column, got {list(table.columns)}")
    others = [c for c in table.columns if c != "image"]
    if others == ["mask"]:
        return col("image"), col("mask")
    if not others or "mask" in others:
        raise ConfigError("a table of files has an 'image' column and either one 'mask' column "
                          f"(index masks) or one column per class (binary masks), got {others}")
    return col("image"), {str(c): col(c) for c in others}


def file_set(images: Sequence[PathLike] | pd.DataFrame | PathLike,
             masks: MaskFiles | None = None) -> FileSet:
    """Check the counts and make every path absolute (see the module's docstring)."""
    if masks is None:
        images, masks = _from_table(images)  # type: ignore[arg-type]
    if isinstance(images, (str, os.PathLike)) or isinstance(images, pd.DataFrame):
        raise ConfigError("give images as a list of paths with masks, or one table of files alone")
    imgs = tuple(_abs(p) for p in images)
    if not imgs:
        raise DataError("no images given (the list of image paths is empty)")
    if any(not p for p in imgs):
        raise DataError("an image path is empty")
    if isinstance(masks, Mapping):
        if not 1 <= len(masks) <= MAX_VALUE:
            raise ConfigError(f"{len(masks)} classes of binary masks; give 1 to {MAX_VALUE}")
        for name, files in masks.items():
            if len(files) != len(imgs):
                raise DataError(f"{len(imgs)} images but {len(files)} masks of class {name!r}; "
                                "give one mask (or None) per image, in the same order")
        rows = tuple(tuple(_abs(files[i]) for files in masks.values()) for i in range(len(imgs)))
        return FileSet(imgs, rows, tuple(str(c) for c in masks))
    if isinstance(masks, (str, os.PathLike)):
        raise ConfigError("masks must be a list of paths (index masks) or a dict of lists "
                          "(binary masks per class), not one path")
    if len(masks) != len(imgs):
        raise DataError(f"{len(imgs)} images but {len(masks)} masks; give one index mask per "
                        "image, in the same order")
    rows = tuple((_abs(m),) for m in masks)
    for img, (m,) in zip(imgs, rows, strict=True):
        if not m:
            raise DataError("no index mask for this image (None); a blank mask is a PNG of zeros",
                            img)
    return FileSet(imgs, rows, None)


def default_cache_root() -> Path:
    """``$HBSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/hbseg``, else ``~/.cache/hbseg``."""
    if os.environ.get("HBSEG_CACHE_DIR"):
        return Path(os.environ["HBSEG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hbseg"


# ----------------------------------------------------------------------------- one row


def _image_info(path: str) -> tuple[int, int, int]:
    """``(H, W, channels)`` of an image, decoded once to prove it reads: 1 for grey (and
    colour PNGs whose channels are all equal, as hbseg reads grey everywhere), 3 for colour."""
    from hbseg.data.formats.images import read_rgb_png
    from hbseg.data.images import png_header, read_gray_png

    colour = png_header(path)["colour"]
    try:
        img = read_gray_png(path, verify=True)
        return int(img.shape[0]), int(img.shape[1]), 1
    except DataError:
        if colour == "grey":
            raise
    img = read_rgb_png(path)
    return int(img.shape[0]), int(img.shape[1]), 3


def _label(path: str, height: int, width: int, image: str) -> np.ndarray:
    """A one-value-per-pixel mask (grey, 16-bit or palette PNG) → [H, W] values; a size
    other than its image's names the image too."""
    from hbseg.data.formats.index_png import read_label_png

    try:
        return read_label_png(path, height, width)
    except DataError as e:
        if not e.problem.startswith("label is "):
            raise
        problem = e.problem.replace("label is", "mask is", 1)
        raise DataError(problem.replace("its image is", f"its image ({image}) is"), path) from None


def _read_binary(path: str, height: int, width: int, image: str) -> np.ndarray:
    """A binary mask → [H, W] bool: non-zero values, or for a colour PNG any non-zero
    colour channel (alpha ignored)."""
    from hbseg.data.images import png_header, read_any_png

    if png_header(path)["colour"] not in ("RGB", "RGBA", "grey+alpha"):
        return _label(path, height, width, image) != 0
    img = read_any_png(path)
    if img.shape[:2] != (height, width):
        raise DataError(f"mask is {img.shape[1]}x{img.shape[0]} but its image ({image}) is "
                        f"{width}x{height}", path)
    return (img[..., :1 if img.shape[2] == 2 else 3] != 0).any(axis=-1)


def _index_values(path: str, height: int, width: int, image: str) -> tuple[np.ndarray, int]:
    """An index mask → (its values [H, W] uint8, the largest)."""
    values = _label(path, height, width, image)
    top = int(values.max(initial=0))
    if top > MAX_VALUE or values.min(initial=0) < 0:
        raise DataError(f"holds value {top}; index masks hold 0 (background) and classes "
                        f"1..{MAX_VALUE}", path)
    return values.astype(np.uint8), top


def _write_png(path: str, pixels: np.ndarray) -> None:
    import cv2

    from hbseg.data.masks import write_packed_png

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if pixels.ndim == 3:
        write_packed_png(path, pixels)
        return
    ok, buf = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise OSError(f"could not encode the mask {path}")
    Path(path).write_bytes(buf.tobytes())


def _pack_one(job: tuple[str, tuple[str, ...], str, str]) -> tuple[int, int, int, int, bool]:
    """One row: check its files and store its mask (``outputs``' encodings: index masks as
    they are, binary ones as bits, in one byte for up to 8 classes); returns ``(H, W,
    channels, largest index value, classes overlap)``."""
    image, masks, kind, out = job
    h, w, channels = _image_info(image)
    if kind == "index":
        values, top = _index_values(masks[0], h, w, image)
        _write_png(out, values)
        return h, w, channels, top, False
    bits = np.zeros((h, w), np.uint32)
    for c, path in enumerate(masks):
        if path:
            bits |= _read_binary(path, h, w, image).astype(np.uint32) << np.uint32(c)
    overlap = bool(((bits & (bits - np.uint32(1))) != 0).any())  # two bits or more (0 - 1 wraps)
    packed = bits.astype("<u4").view(np.uint8).reshape(h, w, 4)
    _write_png(out, packed[..., 0] if len(masks) <= 8 else packed)
    return h, w, channels, 0, overlap


# ----------------------------------------------------------------------------- the cache


def _stamp(paths: Sequence[str]) -> str:
    """Size and modification time of each file; a missing one is named."""
    parts = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as e:
            raise DataError(f"cannot read it ({e.strerror})", p) from None
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def _mask_name(image: str) -> str:
    h = hashlib.sha256(image.encode()).hexdigest()
    return f"masks/{h[:2]}/{h[2:18]}.png"


def _old_rows(cache_dir: Path) -> pd.DataFrame | None:
    """The index of the cache there, when this version of ``files`` wrote it."""
    from hbseg.data.cache import _old_index  # the cache's own reader (version-checked)

    try:
        meta = json.loads((cache_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("files_version") != FILES_VERSION:
        return None
    old = _old_index(cache_dir)
    return None if old is None or "sources" not in old.columns else old


def _reuse(df: pd.DataFrame, old: pd.DataFrame | None, cache: Path) -> pd.Series:
    """Rows whose files are unchanged since their mask was packed (same paths, sizes and
    modification times) and whose mask is still there; their facts are copied into ``df``."""
    reuse = pd.Series(False, index=df.index)
    if old is None:
        return reuse
    known = {(r.image_path, r.sources, r.source_stamp): r for r in old.itertuples()}
    for i in df.index:
        r = known.get((df.at[i, "image_path"], df.at[i, "sources"], df.at[i, "source_stamp"]))
        if r is not None and (cache / str(r.mask_path)).is_file():
            reuse[i] = True
            for c in _FACTS:
                df.at[i, c] = getattr(r, c)
    return reuse


_FACTS = ("mask_path", "height", "width", "channels", "top", "overlap")


def _write(df: pd.DataFrame, reuse: pd.Series, files: FileSet, cache: Path,
           workers: int | None, progress: bool) -> None:
    """Rebuild ``cache`` atomically: reusable masks linked, the others packed; its
    ``meta.json`` says nothing of classes yet (``_describe`` does, once they are known)."""
    import shutil

    from hbseg.atomic import atomic_dir
    from hbseg.data.cache import CACHE_VERSION
    from hbseg.progress import map_with_progress

    with atomic_dir(cache) as tmp:
        for m in df.loc[reuse, "mask_path"]:
            (tmp / m).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(cache / m, tmp / m)
            except OSError:
                shutil.copy2(cache / m, tmp / m)
        todo = [int(i) for i in np.flatnonzero(~reuse.to_numpy(bool))]
        names = [str(m) for m in df["mask_path"]]
        jobs = [(files.images[i], files.masks[i], files.kind, str(tmp / names[i])) for i in todo]
        out = map_with_progress(_pack_one, jobs, workers=workers, desc="packing masks",
                                progress=progress, chunksize=4)
        for i, facts in zip(todo, out, strict=True):
            for c, v in zip(_FACTS[1:], facts, strict=True):
                df.at[i, c] = v
        df.to_csv(tmp / "index.csv", index=False)
        meta = {"version": CACHE_VERSION, "files_version": FILES_VERSION, "data_root": ".",
                "files": files.kind, "images": len(df)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))


def _layout(df: pd.DataFrame, files: FileSet, channels: int | None,
            num_classes: int | None) -> tuple[tuple[str, ...], int]:
    """The classes and channels the files hold; a setting they contradict is refused."""
    colour = np.flatnonzero(df["channels"].to_numpy(np.int64) == 3)
    found = 3 if colour.size else 1
    if channels == 1 and colour.size:
        raise ConfigError("channels=1, but this image is colour; leave channels out to load "
                          "colour images as RGB", files.images[int(colour[0])])
    if channels == 3 and not colour.size:
        raise ConfigError(f"channels=3, but all {len(df)} images are grey (this one among "
                          "them); leave channels out to load them as grey", files.images[0])
    if files.classes is not None:
        if num_classes is not None and num_classes != len(files.classes):
            raise ConfigError(f"num_classes={num_classes}, but the masks name "
                              f"{len(files.classes)} classes ({', '.join(files.classes)})")
        return files.classes, found
    tops = df["top"].to_numpy(np.int64)
    k = int(tops.max()) if num_classes is None else num_classes
    if num_classes is not None and tops.max() > num_classes:
        i = int(tops.argmax())
        raise DataError(f"holds value {int(tops[i])}, but num_classes={num_classes}",
                        files.masks[i][0])
    if k == 0:
        raise DataError(f"all {len(df)} index masks are empty (0 everywhere); give "
                        "num_classes to load them anyway", files.masks[0][0])
    return tuple(str(v) for v in range(1, k + 1)), found


def _describe(cache: Path, files: FileSet, classes: tuple[str, ...], channels: int) -> None:
    """Record classes and channels in ``meta.json`` (the loaders read them from there)."""
    from hbseg.atomic import atomic_write_text
    from hbseg.data.spec import DatasetSpec

    spec = DatasetSpec(name="files", classes=classes, channels=channels,
                       format="index-png" if files.classes is None else "class-png")
    path = cache / "meta.json"
    meta = json.loads(path.read_text())
    new = {**meta, "classes": list(classes), "dataset": spec.to_dict(),
           "mask_encoding": "index" if files.classes is None else "bits"}
    if new != meta:
        atomic_write_text(path, json.dumps(new, indent=2))


def files_index(files: FileSet, cache_dir: PathLike | None = None, *,
                channels: int | None = None, num_classes: int | None = None,
                workers: int | None = 1, progress: bool = False) -> pd.DataFrame:
    """The index of ``files``' cache (built or brought up to date first): absolute
    ``image_path`` and ``mask_path`` and, per row, ``height``, ``width``, ``channels``,
    ``top`` (an index mask's largest value) and ``overlap`` (classes overlap somewhere).
    ``channels`` and ``num_classes`` are checked against the files (see module doc)."""
    from hbseg.data.cache import _build_lock  # one builder per cache, as for hbseg-data cache

    cache = Path(cache_dir) if cache_dir is not None else default_cache_root() / "files" / files.key()
    sources = [json.dumps(list(m)) for m in files.masks]
    df = pd.DataFrame({
        "id": [f"{i:06d}" for i in range(len(files.images))],
        "image_name": [Path(p).name for p in files.images],
        "image_path": list(files.images), "json_path": "",
        "mask_path": [_mask_name(p) for p in files.images],
        "height": 0, "width": 0, "fold": 0,
        "source_stamp": [_stamp([img, *(p for p in m if p)])
                         for img, m in zip(files.images, files.masks, strict=True)],
        "sources": sources, "channels": 0, "top": 0, "overlap": False,
    })
    with _build_lock(cache):
        old = _old_rows(cache)
        reuse = _reuse(df, old, cache)
        if not (old is not None and bool(reuse.all())
                and list(old["image_path"]) == list(df["image_path"])):
            _write(df, reuse, files, cache, workers, progress)
        classes, found = _layout(df, files, channels, num_classes)
        _describe(cache, files, classes, found)
    df["mask_path"] = [str(cache.resolve() / m) for m in df["mask_path"]]
    df["overlap"] = df["overlap"].astype(bool)
    return df


# ----------------------------------------------------------------------------- the loaders

L = TypeVar("L", bound="FromFiles")


class FromFiles:
    """``from_files``, shared by the loader back-ends (``cls(index, cfg, "train", device)``)."""

    supports_ops = False  # DALI back-ends take your own graph operations

    @classmethod
    def from_files(cls: type[L], images: Sequence[PathLike] | pd.DataFrame | PathLike,
                   masks: MaskFiles | None = None, *, size: int | tuple[int, int],
                   batch_size: int, device: str = "cpu", shuffle: bool = False, seed: int = 0,
                   drop_last: bool = False, augment: AugmentConfig = NO_AUGMENT,
                   channels: int | None = None, num_classes: int | None = None,
                   cache_dir: PathLike | None = None, mask_output: str = "planes",
                   normalize: NormalizeConfig | None = None, crop: int | tuple[int, int] | None = None,
                   num_threads: int = 2, prefetch: int = 2, shard_id: int = 0,
                   num_shards: int = 1, ops: GraphOps | None = None, workers: int | None = 1,
                   progress: bool = False) -> L:
        """A loader over your own files, in one call.

        ``images``: image paths (PNG; grey or colour, detected); ``masks``: a list of index
        masks (0 background, ``k`` = class ``k``) or a dict ``{class name: binary masks}``
        (``None``: an empty mask). Or ``images`` is a pandas table (or a CSV file) with an
        ``image`` column and either a ``mask`` column or one column per class, and
        ``masks`` is left out. Yields ``(image float32 [B, C, H, W], mask uint8
        [B, K, H, W])`` on ``device``: C channels normalised with ImageNet's mean and std,
        K class planes (no background plane); ``mask_output="index"`` gives ``[B, H, W]``
        int64 (0 background) for cross-entropy. ``size``: a side or ``(H, W)``; ``augment``
        defaults to none; ``channels``/``num_classes`` are checked against the files
        (``num_classes`` also widens index masks to classes none of them holds).
        The masks are checked and stored once in ``cache_dir`` (default: the user cache
        folder, see :func:`default_cache_root`); ``workers`` processes do it.
        """
        if ops is not None and not cls.supports_ops:
            raise ConfigError(f"{cls.__name__} cannot run DALI operations (ops); use DaliLoader")
        files = file_set(images, masks)
        index = files_index(files, cache_dir, channels=channels, num_classes=num_classes,
                            workers=workers, progress=progress)
        if mask_output == "index" and index["overlap"].any():
            i = int(np.flatnonzero(index["overlap"].to_numpy())[0])
            raise DataError("classes overlap in this image's masks; mask_output='index' needs "
                            "one class per pixel (use the default 'planes')", files.images[i])
        cfg = LoaderConfig(size=size, crop=crop, batch_size=batch_size, num_threads=num_threads,
                           prefetch=prefetch, seed=seed, shard_id=shard_id, num_shards=num_shards,
                           shuffle=shuffle, drop_last=drop_last, augment=augment,
                           normalize=normalize or NormalizeConfig(), mask_output=mask_output)
        kw = {"ops": ops} if ops is not None else {}
        return cls(index, cfg, "train", device, **kw)  # type: ignore[call-arg]
