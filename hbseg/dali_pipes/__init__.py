"""hbseg's data pipelines, for use in other projects too::

    from hbseg.dali_pipes import AugmentConfig, DaliLoader

    loader = DaliLoader.from_files(images, masks, size=256, batch_size=8, shuffle=True,
                                   augment=AugmentConfig(ssr_p=0.5, hflip_p=0.5))
    for image, mask in loader:  # float32 [B, C, H, W], uint8 [B, K, H, W]
        ...

See docs/library.md ("Use hbseg in your project").

Configs and the loader protocol import at once; everything that needs NVIDIA DALI (the
pipelines, graph functions and DALI loaders) is imported on first use, so importing this
package works without DALI and a missing DALI is reported when a DALI name is asked for.
"""

from __future__ import annotations

from hbseg.lazy import lazy_exports

from .config import HAND_XRAY, NO_AUGMENT, AugmentConfig, LoaderConfig, NormalizeConfig
from .draw import SampleDraw, draw_sample, eval_draw, sample_matrix, to_opencv_matrix
from .loader_base import EpochClock, Loader, epoch_order, num_batches

_LAZY = {
    # pipelines: thin @pipeline_def wrappers
    "train_pipeline": "pipelines", "eval_pipeline": "pipelines", "infer_pipeline": "pipelines",
    "cache_train_pipeline": "pipelines", "cache_eval_pipeline": "pipelines",
    "decode_pipeline": "pipelines",
    # pure graph functions on DataNodes
    "clahe": "graph", "resize_matrix": "graph", "warp_pair": "graph",
    "brightness_contrast": "graph", "normalize": "graph", "augment_pair": "graph",
    "eval_pair": "graph",
    "clahe_like_opencv": "clahe", "GraphOps": "graph",
    # epoch-aware external_source callbacks
    "FileSource": "sources", "CachedArraySource": "sources", "AugmentParams": "sources",
    "EpochSource": "sources",
    # your own files → a packed-mask cache → an index; what the data say
    "file_set": "files", "files_index": "files", "default_cache_root": "files",
    "DataLayout": "layout", "cache_layout": "layout", "index_layout": "layout",
    "fit_config": "layout",
    # loaders
    "DaliLoader": "dali_loader", "DaliCacheLoader": "cache_loader",
    "CacheTooLargeError": "cache_loader", "dali_cache_or_fallback": "cache_loader",
    "cache_bytes": "cache_loader",
    "DaliInferLoader": "infer_loader",
}

# Names that moved out of this package, so that it never depends on the torch back-ends:
# importable from here with a DeprecationWarning until the next release.
_MOVED = {
    "TorchLoader": "hbseg.torch_loaders", "BaselineLoader": "hbseg.torch_loaders",
    "build_loader": "hbseg.loaders", "LOADERS": "hbseg.loaders",
}

__all__ = [
    "AugmentConfig", "NormalizeConfig", "LoaderConfig", "NO_AUGMENT", "HAND_XRAY",
    "Loader", "EpochClock", "epoch_order", "num_batches",
    "SampleDraw", "draw_sample", "eval_draw", "sample_matrix", "to_opencv_matrix",
    *_LAZY,
]


def _dali_missing(name: str, error: ModuleNotFoundError) -> None:
    if error.name and error.name.split(".")[0] == "nvidia":
        from .dali_loader import DALI_MISSING

        raise ImportError(f"hbseg.dali_pipes.{name}: {DALI_MISSING}") from error


_lazy_getattr, __dir__ = lazy_exports(__name__, _LAZY, on_missing=_dali_missing)


def __getattr__(name: str):
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(f"hbseg.dali_pipes.{name} moved to {_MOVED[name]}.{name}",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    return _lazy_getattr(name)
