"""Decode and preprocess test images: CLAHE and normalisation as the model card says.

Two back-ends yield the same thing, ``(images, orig_hw, names)`` per batch, where
``images`` is a list of [1, 1, h, w] float tensors on the device:

* ``dali``: ``hbseg.dali_pipes.infer_loader.DaliInferLoader`` (decoding on the GPU or
  CPU). Used when it exists and can give what the predictor needs: full resolution for
  sliding windows and scale TTA, or the model's input size for plain prediction.
* ``cv2``: OpenCV in a few threads (CLAHE on the CPU, normalisation on the device).
  Always available; it is the reference the DALI loader is tested against.

``open_loader`` is the one place where the choice is made.
"""

from __future__ import annotations

import collections
import importlib.util
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hbseg.dali_pipes.config import clahe_in_eval
from hbseg.data.formats.images import check_image, read_image
from hbseg.errors import ConfigError

__all__ = ["PreprocessSpec", "apply_clahe", "preprocess_cpu", "renormalize", "Cv2Loader",
           "dali_available", "open_loader", "BACKENDS"]

BACKENDS = ("auto", "dali", "cv2")


@dataclass(frozen=True)
class PreprocessSpec:
    """What a model expects of its input pixels, besides their size."""

    clahe: bool = True
    clip_limit: float = 2.0
    tile_grid: tuple[int, int] = (8, 8)
    mean: float | tuple[float, ...] = 0.485  # one value, or one per channel
    std: float | tuple[float, ...] = 0.229
    channels: int = 1  # 1 grey, 3 RGB
    # hand ROI crop and handedness (hbseg.dali_pipes.roi): the loader then warps each image
    # by its own matrix onto ``size``² and the predictor maps predictions back
    roi_margin: float | None = None
    canonical_hand: str | None = None
    size: int | None = None  # the model's input side, set when the geometry is on

    @property
    def geometric(self) -> bool:
        return self.roi_margin is not None or self.canonical_hand is not None

    def matrix(self, path: str | Path):
        """The image's forward matrix onto ``size``² (DALI convention), or None when off."""
        if not self.geometric:
            return None
        from hbseg.dali_pipes.roi import infer_matrix

        return infer_matrix(str(path), int(self.size), self.roi_margin, self.canonical_hand)

    @property
    def black(self) -> float | tuple[float, ...]:
        """A black pixel once normalised (padding value)."""
        if isinstance(self.mean, tuple):
            return tuple(-m / s for m, s in zip(self.mean, self.std, strict=True))
        return -self.mean / self.std

    def _stats(self, x: torch.Tensor) -> tuple:
        """mean and std as numbers, or as [1, C, 1, 1] tensors beside ``x``."""
        if not isinstance(self.mean, tuple):
            return self.mean, self.std
        return tuple(torch.as_tensor(v, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
                     for v in (self.mean, self.std))

    @classmethod
    def from_card(cls, card) -> PreprocessSpec:
        """Training applied CLAHE with probability ``p``; inference applies it when training
        did for most images (``p >= 0.5``), like the DALI eval graph (``clahe_for_eval``)."""
        c, n = dict(card.clahe or {}), dict(card.normalize or {})

        def stat(v):
            return tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else float(v)

        return cls(
            clahe=clahe_in_eval(float(c.get("p", 1.0))),
            clip_limit=float(c.get("clip_limit", 2.0)),
            tile_grid=tuple(int(t) for t in c.get("tile_grid", (8, 8))),
            mean=stat(n.get("mean", 0.485)),
            std=stat(n.get("std", 0.229)),
            channels=int(getattr(card, "in_channels", 1)),
            **_geometry(card),
        )

    @property
    def decode_key(self) -> tuple:
        """Models with the same key share one decoding pass (normalisation is converted
        on the device by ``renormalize``)."""
        key = (self.clahe, self.clip_limit, self.tile_grid) if self.clahe else (False,)
        if self.geometric:
            key = (*key, "roi", self.roi_margin, self.canonical_hand, self.size)
        return key if self.channels == 1 else (*key, self.channels)

    def to_dict(self) -> dict:
        d = {"clahe": self.clahe, "clip_limit": self.clip_limit,
             "tile_grid": list(self.tile_grid), "mean": self.mean, "std": self.std}
        if self.channels != 1:
            d.update(mean=list(self.mean), std=list(self.std), channels=self.channels)
        if self.geometric:
            d.update(roi_margin=self.roi_margin, canonical_hand=self.canonical_hand, size=self.size)
        return d


def _geometry(card) -> dict:
    """The card's hand ROI and handedness settings (absent from older cards: off)."""
    margin, hand = getattr(card, "roi_margin", None), getattr(card, "canonical_hand", None)
    if margin is None and hand is None:
        return {}
    return {"roi_margin": None if margin is None else float(margin), "canonical_hand": hand,
            "size": int(card.size)}


def apply_clahe(img: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """CLAHE on an [H, W] uint8 image (or the luminance of an [H, W, 3] RGB one, as the
    DALI graph does) with the spec's settings (a no-op without CLAHE)."""
    if not spec.clahe:
        return img
    import cv2

    clahe = cv2.createCLAHE(clipLimit=spec.clip_limit, tileGridSize=tuple(spec.tile_grid))
    if img.ndim == 3:
        from hbseg.torch_loaders.torch_loader import clahe_rgb

        return clahe_rgb(img, clahe)
    return clahe.apply(img)


def preprocess_cpu(img: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """[H, W] (or [H, W, 3]) uint8 → float32 of the same shape: CLAHE, then
    ``(x / 255 - mean) / std`` (per channel for colour)."""
    x = apply_clahe(img, spec).astype(np.float32) / 255.0
    return (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)


def renormalize(x: torch.Tensor, src: PreprocessSpec, dst: PreprocessSpec) -> torch.Tensor:
    """Re-express an image normalised with ``src``'s mean/std in ``dst``'s."""
    if (src.mean, src.std) == (dst.mean, dst.std):
        return x
    (sm, ss), (dm, ds) = src._stats(x), dst._stats(x)
    return (x * ss + sm - dm) / ds


class Cv2Loader:
    """Full-resolution (or ``size``-square) preprocessed images from PNG files, via OpenCV.
    A spec with the hand geometry on gives each image warped by its own matrix instead.

    Decoding and CLAHE run in ``threads`` threads (OpenCV releases the GIL), a bounded
    number of images ahead; the uint8 image crosses to the device and is normalised there.
    """

    backend = "cv2"

    def __init__(self, image_paths: Sequence[str | Path], spec: PreprocessSpec, batch_size: int = 1,
                 device: str | torch.device = "cpu", size: int | None = None, threads: int = 2):
        self.paths = [Path(p) for p in image_paths]
        self.spec, self.batch_size, self.size = spec, max(1, int(batch_size)), size
        self.device = torch.device(device)
        self.threads = max(1, int(threads))

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)

    def _read(self, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        img = read_image(path, self.spec.channels)
        hw = img.shape[:2]
        img = apply_clahe(img, self.spec)
        if self.spec.geometric:  # CLAHE first, then the one warp, as in training
            import cv2

            from hbseg.dali_pipes.draw import to_opencv_matrix

            s = int(self.spec.size)
            img = cv2.warpAffine(img, to_opencv_matrix(self.spec.matrix(path)), dsize=(s, s),
                                 flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=0)
        elif self.size is not None:
            import cv2

            img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return img, hw

    def _to_device(self, img: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(img)
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        if t.ndim == 2:
            x = t.to(torch.float32).div_(255.0).sub_(self.spec.mean).div_(self.spec.std)
            return x[None, None]
        x = t.permute(2, 0, 1)[None].to(torch.float32).div_(255.0)
        mean, std = self.spec._stats(x)
        return x.sub_(mean).div_(std)

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], list[tuple[int, int]], list[str]]]:
        ahead = self.threads + 2 * self.batch_size
        with ThreadPoolExecutor(self.threads) as pool:
            pending: collections.deque = collections.deque()
            todo = iter(self.paths)
            for p in todo:
                pending.append((p, pool.submit(self._read, p)))
                if len(pending) >= ahead:
                    break
            batch: tuple[list, list, list] = ([], [], [])
            while pending:
                path, fut = pending.popleft()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(self._read, nxt)))
                img, hw = fut.result()
                batch[0].append(self._to_device(img))
                batch[1].append(hw)
                batch[2].append(path.name)
                if len(batch[0]) == self.batch_size:
                    yield batch
                    batch = ([], [], [])
            if batch[0]:
                yield batch


def dali_available() -> bool:
    """Whether the DALI inference loader and DALI itself are installed."""
    here = Path(__file__).resolve().parents[1] / "dali_pipes" / "infer_loader.py"
    return here.is_file() and importlib.util.find_spec("nvidia.dali") is not None


def _dali_full_res_ok() -> bool:
    """The contract: a ``DaliInferLoader`` with ``supports_full_res = True`` accepts
    ``size=None`` and yields a list of [1, h, w] (or [1, 1, h, w]) tensors per batch."""
    from hbseg.dali_pipes import infer_loader

    return bool(getattr(infer_loader.DaliInferLoader, "supports_full_res", False))


class _DaliAdapter:
    """Wrap ``DaliInferLoader`` so it yields lists of [1, 1, h, w] like ``Cv2Loader``."""

    backend = "dali"

    def __init__(self, image_paths, spec: PreprocessSpec, batch_size, device, size, threads=2):
        from dataclasses import replace

        from hbseg.dali_pipes.config import NO_AUGMENT, NormalizeConfig
        from hbseg.dali_pipes.infer_loader import DaliInferLoader

        augment = replace(NO_AUGMENT, clahe_p=1.0 if spec.clahe else 0.0,
                          clahe_clip_limit=spec.clip_limit, clahe_tile_grid=tuple(spec.tile_grid))
        normalize = NormalizeConfig(mean=spec.mean, std=spec.std)
        self.channels = spec.channels
        paths = [str(p) for p in image_paths]
        for p in paths:  # DALI decodes anything; refuse what training refuses (Cv2Loader does)
            check_image(p, spec.channels)
        matrices = [spec.matrix(p) for p in paths] if spec.geometric else None
        self._loader = DaliInferLoader(paths, spec.size if spec.geometric else size, augment,
                                       normalize, batch_size, str(device),
                                       num_threads=max(1, threads), channels=spec.channels,
                                       matrices=matrices)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self):
        for images, orig_hw, names in self._loader:
            if isinstance(images, torch.Tensor):
                images = list(images.float().split(1))
            images = [im.float().reshape(1, self.channels, *im.shape[-2:]) for im in images]
            yield images, [tuple(int(v) for v in hw) for hw in orig_hw], [Path(n).name for n in names]


def _utf8_name(path: str | Path) -> bool:
    """Whether ``path`` is valid UTF-8 (a name that is not reaches Python as surrogates)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def open_loader(image_paths: Sequence[str | Path], spec: PreprocessSpec, *, batch_size: int,
                device: str | torch.device, size: int | None, backend: str = "auto", threads: int = 2):
    """The loader for one preprocessing spec. ``size=None`` asks for full resolution.

    ``auto`` picks DALI when it is installed and can produce the requested size, else
    OpenCV; naming ``dali`` where it cannot is an error. A spec with the hand geometry on
    (``spec.geometric``) always gives each image's hand window at the model's size.
    """
    if spec.geometric:
        size = spec.size
    if backend not in BACKENDS:
        raise ConfigError(f"unknown image loader {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend in ("auto", "dali"):
        reason = None
        odd = next((p for p in image_paths if not _utf8_name(p)), None)
        if not dali_available():
            reason = "DALI or hbseg.dali_pipes.infer_loader is not installed"
        elif size is None and not _dali_full_res_ok():
            reason = "the DALI inference loader cannot give full-resolution images"
        elif odd is not None:  # OpenCV's loader opens any name the file system holds
            name = str(os.fsencode(Path(odd).name))[2:-1]  # its bytes, as r\xe9sum\xe9.png
            reason = f"DALI opens only UTF-8 file names, and {name} in {Path(odd).parent} is not one"
        if reason is None:
            return _DaliAdapter(image_paths, spec, batch_size, device, size, threads)
        if backend == "dali":
            raise ConfigError(f"--loader dali: {reason}; use --loader cv2")
    return Cv2Loader(image_paths, spec, batch_size, device, size, threads)
