"""From probabilities to masks: thresholds (global or per class) and small-object removal.

Connected components use 8-connectivity, per class: ``cupyx.scipy.ndimage.label`` for
CUDA tensors (no host round trip), ``scipy.ndimage.label`` otherwise.
"""

from __future__ import annotations

import difflib
import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from hbseg.data.classes import CLASSES
from hbseg.errors import ConfigError

__all__ = [
    "load_thresholds", "load_min_sizes", "resolve_thresholds", "resolve_min_sizes", "binarize",
    "remove_small_objects", "postprocess",
]

_EIGHT = np.ones((3, 3), dtype=bool)


def _check_classes(keys, class_names: Sequence[str], path: Path | None, what: str) -> None:
    for k in keys:
        if k not in class_names:
            close = difflib.get_close_matches(str(k), class_names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{what}: unknown class {k!r}{hint}", path)


def _read_class_json(path: Path, what: str) -> dict:
    """A JSON (or YAML) object keyed by class name (thresholds.json, min_sizes.json, weights.json)."""
    from hbseg.settings_file import read_mapping

    return read_mapping(path, f"{what} file")


def load_thresholds(path: str | Path, class_names: Sequence[str] = CLASSES) -> dict[str, float]:
    """Read ``{"class name": threshold, …}``; classes left out keep the global threshold."""
    path = Path(path)
    doc = _read_class_json(path, "thresholds")
    _check_classes(doc, class_names, path, "thresholds")
    for k, v in doc.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v < 1.0:
            raise ConfigError(f"threshold for {k!r} is {v!r}; expected a number in (0, 1)", path)
    return {k: float(v) for k, v in doc.items()}


def load_min_sizes(path: str | Path, class_names: Sequence[str] = CLASSES) -> dict[str, int]:
    """Read ``{"class name": pixels, …}`` (hbseg-tune's min_sizes.json); classes left out
    keep the global ``--min-size``."""
    path = Path(path)
    doc = _read_class_json(path, "min_sizes")
    _check_classes(doc, class_names, path, "min_sizes")
    for k, v in doc.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != int(v):
            raise ConfigError(f"minimum size for {k!r} is {v!r}; expected a whole number >= 0", path)
    return {k: int(v) for k, v in doc.items()}


def resolve_thresholds(
    thresholds: float | Mapping[str, float] | Sequence[float],
    class_names: Sequence[str] = CLASSES,
    default: float = 0.5,
) -> tuple[float, ...]:
    """One threshold per class from a number, a ``{class: thr}`` mapping or a sequence."""
    if isinstance(thresholds, (int, float)):
        out = (float(thresholds),) * len(class_names)
    elif isinstance(thresholds, Mapping):
        _check_classes(thresholds, class_names, None, "thresholds")
        out = tuple(float(thresholds.get(c, default)) for c in class_names)
    else:
        out = tuple(float(t) for t in thresholds)
        if len(out) != len(class_names):
            raise ConfigError(f"{len(out)} thresholds for {len(class_names)} classes")
    bad = [t for t in out if not 0.0 < t < 1.0 or math.isnan(t)]
    if bad:
        raise ConfigError(f"threshold {bad[0]} is outside (0, 1)")
    return out


def resolve_min_sizes(
    min_size: int | Mapping[str, int] | Sequence[int], class_names: Sequence[str] = CLASSES
) -> tuple[int, ...]:
    """One minimum component size (pixels, at original resolution) per class; 0 keeps all."""
    if isinstance(min_size, (int, np.integer)):
        out = (int(min_size),) * len(class_names)
    elif isinstance(min_size, Mapping):
        _check_classes(min_size, class_names, None, "min_size")
        out = tuple(int(min_size.get(c, 0)) for c in class_names)
    else:
        out = tuple(int(m) for m in min_size)
        if len(out) != len(class_names):
            raise ConfigError(f"{len(out)} minimum sizes for {len(class_names)} classes")
    if any(m < 0 for m in out):
        raise ConfigError(f"minimum object size {min(out)} is negative")
    return out


def binarize(probs: torch.Tensor, thresholds: Sequence[float]) -> torch.Tensor:
    """[C, H, W] probabilities → bool masks, ``prob > threshold`` per class."""
    thr = torch.as_tensor(thresholds, dtype=probs.dtype, device=probs.device)
    return probs > thr.view(-1, 1, 1)


def _keep_large(labels, count: int, min_size: int, xp):
    sizes = xp.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


@functools.cache
def _warn_no_cupy() -> None:
    warnings.warn("cupy is not installed: small-object removal runs on the CPU "
                  "(pip install 'hbseg[cuda12]' for cupy)", stacklevel=3)


class _StreamRef:
    """A raw CUDA stream handle behind the CUDA stream protocol (``__cuda_stream__``), so
    cupy can wrap torch's stream whatever torch's version implements."""

    def __init__(self, ptr: int) -> None:
        self.ptr = int(ptr)

    def __cuda_stream__(self) -> tuple[int, int]:
        return (0, self.ptr)


def _cupy_stream(cp, ptr: int):
    """cupy's view of the stream ``ptr``: ``Stream.from_external`` (cupy >= 14, where
    ``ExternalStream`` is deprecated), else ``ExternalStream``."""
    if hasattr(cp.cuda.Stream, "from_external"):
        return cp.cuda.Stream.from_external(_StreamRef(ptr))
    return cp.cuda.ExternalStream(ptr)


def remove_small_objects(masks: torch.Tensor, min_sizes: Sequence[int]) -> torch.Tensor:
    """Drop, per class, the 8-connected components of fewer than ``min_sizes[c]`` pixels.

    ``masks`` is a [C, H, W] bool tensor; the result stays on its device.
    """
    if not any(min_sizes):
        return masks
    if masks.is_cuda:
        try:
            import cupy as cp
            from cupyx.scipy import ndimage as cndi
        except ImportError:
            _warn_no_cupy()
            return remove_small_objects(masks.cpu(), min_sizes).to(masks.device)
        out = masks.clone()
        with _cupy_stream(cp, torch.cuda.current_stream(masks.device).cuda_stream):
            for c, m in enumerate(min_sizes):
                if m <= 1:
                    continue
                plane = cp.asarray(out[c])
                labels, count = cndi.label(plane, structure=_EIGHT)  # int32 labels, count an int
                if count:
                    out[c] = torch.as_tensor(_keep_large(labels, int(count), m, cp), device=masks.device)
        return out
    from scipy import ndimage

    arr = masks.numpy().copy()
    for c, m in enumerate(min_sizes):
        if m <= 1 or not arr[c].any():
            continue
        labels, count = ndimage.label(arr[c], structure=_EIGHT)
        arr[c] = _keep_large(labels, count, m, np)
    return torch.from_numpy(arr)


def postprocess(probs: torch.Tensor, thresholds: Sequence[float], min_sizes: Sequence[int]) -> torch.Tensor:
    """Probabilities [C, H, W] → bool masks: threshold, then small-object removal."""
    return remove_small_objects(binarize(probs, thresholds), min_sizes)
