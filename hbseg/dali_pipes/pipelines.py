"""Thin ``@pipeline_def`` wrappers: a data source, decoding, then a graph from :mod:`graph`.

Graph arguments (``source``, ``device``, ``size``, ``crop``, ``aug``, ``norm``…) are given
with the call; runtime arguments (``batch_size``, ``num_threads``, ``device_id``, ``seed``,
``prefetch_queue_depth``) go beside them and are taken by ``pipeline_def``::

    pipe = train_pipeline(source, device="cpu", size=256, crop=None, aug=AugmentConfig(),
                          norm=NormalizeConfig(), batch_size=4, num_threads=2,
                          device_id=None, seed=0)

``device="gpu"`` decodes ``mixed`` (DALI still parses PNG on CPU threads) and runs every
pixel operator on the GPU; ``device="cpu"`` runs the same graph on CPU threads
(``device_id=None``). Outputs: image ``[B, 1, H, W]`` float (CHW), packed mask
``[B, H, W, 4]`` uint8.
"""

from __future__ import annotations

from nvidia.dali import fn, pipeline_def, types

from .config import NO_AUGMENT, AugmentConfig, NormalizeConfig
from .graph import augment_pair, eval_pair

__all__ = [
    "train_pipeline", "eval_pipeline", "infer_pipeline",
    "cache_train_pipeline", "cache_eval_pipeline", "decode_pipeline",
]

DEVICES = ("cpu", "gpu")


def _decoder_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    return "mixed" if device == "gpu" else "cpu"


def _read_pair(source, device: str):
    """Encoded image + packed-mask bytes → decoded HWC uint8 pair and CPU ``[H, W]``."""
    enc_image, enc_mask = fn.external_source(source=source, num_outputs=2, batch=True,
                                             dtype=types.UINT8, ndim=1)
    shape_hw = fn.peek_image_shape(enc_image, dtype=types.FLOAT)[0:2]
    dec = _decoder_device(device)
    image = fn.decoders.image(enc_image, device=dec, output_type=types.GRAY)
    mask = fn.decoders.image(enc_mask, device=dec, output_type=types.ANY_DATA)
    return image, mask, shape_hw


def _cached_pair(source, device: str):
    """Decoded pixels from memory (GPU tensors or numpy) and CPU ``[H, W]``."""
    _decoder_device(device)
    image, mask = fn.external_source(source=source.pixels(), num_outputs=2, batch=True,
                                     device=device, dtype=types.UINT8, ndim=3,
                                     layout="HWC")
    shape_hw = fn.external_source(source=source.shapes(), batch=True, device="cpu",
                                  dtype=types.FLOAT, ndim=1)
    return image, mask, shape_hw


@pipeline_def(enable_conditionals=True)
def train_pipeline(source, *, device: str = "cpu", size: int = 512, crop: int | None = None,
                   aug: AugmentConfig = AugmentConfig(), norm: NormalizeConfig = NormalizeConfig(),
                   return_matrix: bool = False):
    """Training: ``source`` yields (image bytes, mask bytes) batches. Outputs image, packed
    mask (and the 2x3 forward matrix per sample with ``return_matrix``, for tests)."""
    image, mask, shape_hw = _read_pair(source, device)
    image, mask, mt = augment_pair(image, mask, shape_hw, size=size, crop=crop, aug=aug, norm=norm)
    return (image, mask, mt) if return_matrix else (image, mask)


@pipeline_def(enable_conditionals=True)
def cache_train_pipeline(source, *, device: str = "gpu", size: int = 512, crop: int | None = None,
                         aug: AugmentConfig = AugmentConfig(),
                         norm: NormalizeConfig = NormalizeConfig(), return_matrix: bool = False):
    """The training graph fed from decoded pixels in memory (a ``CachedArraySource``):
    no PNG decode at all. ``device="gpu"`` takes torch/cupy CUDA tensors."""
    image, mask, shape_hw = _cached_pair(source, device)
    image, mask, mt = augment_pair(image, mask, shape_hw, size=size, crop=crop, aug=aug, norm=norm)
    return (image, mask, mt) if return_matrix else (image, mask)


@pipeline_def
def eval_pipeline(source, *, device: str = "cpu", size: int = 512,
                  aug: AugmentConfig = NO_AUGMENT, norm: NormalizeConfig = NormalizeConfig(),
                  full_res_mask: bool = False):
    """Eval: nothing random; image (linear) and mask (nearest) get the same resize, or the
    mask stays at its original size with ``full_res_mask``."""
    image, mask, shape_hw = _read_pair(source, device)
    return eval_pair(image, mask, shape_hw, size=size, aug=aug, norm=norm,
                     full_res_mask=full_res_mask)


@pipeline_def
def cache_eval_pipeline(source, *, device: str = "gpu", size: int = 512,
                        aug: AugmentConfig = NO_AUGMENT, norm: NormalizeConfig = NormalizeConfig(),
                        full_res_mask: bool = False):
    image, mask, shape_hw = _cached_pair(source, device)
    return eval_pair(image, mask, shape_hw, size=size, aug=aug, norm=norm,
                     full_res_mask=full_res_mask)


@pipeline_def
def infer_pipeline(source, *, device: str = "cpu", size: int | None = 512,
                   aug: AugmentConfig = NO_AUGMENT, norm: NormalizeConfig = NormalizeConfig()):
    """Unlabelled images of any size: ``source`` yields (image bytes,) batches. Outputs the
    normalised ``[B, 1, size, size]`` image (``size=None``: each at its own size) and each
    image's original ``[H, W]`` (int64)."""
    (enc_image,) = fn.external_source(source=source, num_outputs=1, batch=True,
                                      dtype=types.UINT8, ndim=1)
    shape = fn.peek_image_shape(enc_image)
    shape_hw = fn.cast(shape[0:2], dtype=types.FLOAT)
    image = fn.decoders.image(enc_image, device=_decoder_device(device), output_type=types.GRAY)
    image, _ = eval_pair(image, None, shape_hw, size=size, aug=aug, norm=norm)
    return image, shape[0:2]


@pipeline_def
def decode_pipeline(source, *, device: str = "gpu"):
    """Decode (image, packed mask) files once, for the in-memory cache: HWC uint8 pairs."""
    image, mask, _ = _read_pair(source, device)
    return image, mask
