"""Thin ``@pipeline_def`` wrappers: a data source, reading and decoding, then a graph from
:mod:`graph`.

Graph arguments (``source``, ``device``, ``size``, ``aug``, ``norm``…) are given with the
call; runtime arguments (``batch_size``, ``num_threads``, ``device_id``, ``seed``,
``prefetch_queue_depth``) go beside them and are taken by ``pipeline_def``::

    source = FileSource([images, masks], 4, params=AugmentParams(aug, shapes_hw, 256),
                        shuffle=True)
    pipe = train_pipeline(source, device="cpu", size=256, aug=aug,
                          norm=NormalizeConfig(), batch_size=4, num_threads=2,
                          device_id=None, seed=0)

The sources (:mod:`sources`) are epoch-aware batch callbacks, so one pipeline serves a
whole run: ``source.begin(epoch)``, run until ``StopIteration``, ``pipe.reset()``.
``fn.io.file.read`` reads the files on DALI's threads. ``device="gpu"`` decodes ``mixed``
(DALI still parses PNG on CPU threads) and runs every pixel operator on the GPU;
``device="cpu"`` runs the same graph on CPU threads (``device_id=None``). Outputs: image
``[B, C, H, W]`` float (CHW; C = 1 grey or 3 RGB), packed mask ``[B, H, W, 4]`` uint8.
"""

from __future__ import annotations

from typing import Any

from nvidia.dali import fn, pipeline_def
from nvidia.dali.types import DALIDataType, DALIImageType

from .config import NO_AUGMENT, AugmentConfig, NormalizeConfig
from .draw import Size
from .graph import GraphOps, augment_pair, eval_pair, resize_matrix
from .sources import PARAM_OUTPUTS

__all__ = [
    "train_pipeline", "eval_pipeline", "infer_pipeline",
    "cache_train_pipeline", "cache_eval_pipeline", "decode_pipeline",
]

DEVICES = ("cpu", "gpu")
_PARAM_TYPES = {"matrix": (DALIDataType.FLOAT, 2), "alpha": (DALIDataType.FLOAT, 0),
                "beta": (DALIDataType.FLOAT, 0), "clahe": (DALIDataType.BOOL, 0)}
# fn.io is a namespace package that DALI 2.4's type stubs leave out
_read_file: Any = fn.io.file.read  # type: ignore[attr-defined]


def _decoder_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    return "mixed" if device == "gpu" else "cpu"


def _decode(encoded, device: str, output_type):
    return fn.decoders.image(encoded, device=_decoder_device(device), output_type=output_type)


def _image_type(channels: int):
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    return DALIImageType.GRAY if channels == 1 else DALIImageType.RGB


def _read_files(source, device: str, with_params: bool, channels: int = 1):
    """Paths (and parameters) from ``source`` → decoded image, packed mask, parameter nodes."""
    n_params = len(PARAM_OUTPUTS) if with_params else 0
    dtypes = [DALIDataType.UINT8] * 2 + [_PARAM_TYPES[k][0] for k in PARAM_OUTPUTS[:n_params]]
    ndims = [1, 1] + [_PARAM_TYPES[k][1] for k in PARAM_OUTPUTS[:n_params]]
    outs = fn.external_source(source=source, num_outputs=2 + n_params, batch=True,
                              batch_info=True, dtype=dtypes, ndim=ndims)
    image_path, mask_path, params = outs[0], outs[1], outs[2:]
    image = _decode(_read_file(image_path), device, _image_type(channels))
    mask = _decode(_read_file(mask_path), device, DALIImageType.ANY_DATA)
    return image, mask, params


def _cached(source, device: str):
    """Decoded pixels from memory (GPU tensors or numpy) and their parameter nodes."""
    _decoder_device(device)
    image, mask = fn.external_source(source=source.pixels, num_outputs=2, batch=True,
                                     batch_info=True, device=device, dtype=DALIDataType.UINT8,
                                     ndim=3, layout="HWC")
    params = fn.external_source(source=source.params, num_outputs=len(PARAM_OUTPUTS), batch=True,
                                batch_info=True, device="cpu",
                                dtype=[_PARAM_TYPES[k][0] for k in PARAM_OUTPUTS],
                                ndim=[_PARAM_TYPES[k][1] for k in PARAM_OUTPUTS])
    return image, mask, params


@pipeline_def(enable_conditionals=True)
def train_pipeline(source, *, device: str = "cpu", size: Size = 512,
                   aug: AugmentConfig = NO_AUGMENT, norm: NormalizeConfig = NormalizeConfig(),
                   channels: int = 1, ops: GraphOps | None = None):
    """Training: ``source`` is a :class:`~hbseg.dali_pipes.sources.FileSource` over
    (image, packed mask) paths with :class:`~hbseg.dali_pipes.sources.AugmentParams`.
    Outputs the normalised image and the packed mask. ``channels``: 1 decodes grey, 3 RGB;
    ``size``: a side or ``(H, W)``; ``ops``: your own DALI operations (``augment_pair``)."""
    image, mask, params = _read_files(source, device, with_params=True, channels=channels)
    return augment_pair(image, mask, params, size=size, aug=aug, norm=norm, ops=ops)


@pipeline_def(enable_conditionals=True)
def cache_train_pipeline(source, *, device: str = "gpu", size: Size = 512,
                         aug: AugmentConfig = NO_AUGMENT,
                         norm: NormalizeConfig = NormalizeConfig(), ops: GraphOps | None = None):
    """The training graph fed from decoded pixels in memory (a ``CachedArraySource``):
    no PNG decode at all. ``device="gpu"`` takes torch/cupy CUDA tensors."""
    image, mask, params = _cached(source, device)
    return augment_pair(image, mask, params, size=size, aug=aug, norm=norm, ops=ops)


@pipeline_def
def eval_pipeline(source, *, device: str = "cpu", size: Size = 512,
                  aug: AugmentConfig = NO_AUGMENT, norm: NormalizeConfig = NormalizeConfig(),
                  full_res_mask: bool = False, channels: int = 1):
    """Eval: nothing random; image (linear) and mask (nearest) get the same resize, or the
    mask stays at its original size with ``full_res_mask``."""
    image, mask, params = _read_files(source, device, with_params=True, channels=channels)
    return eval_pair(image, mask, params[0], size=size, aug=aug, norm=norm,
                     full_res_mask=full_res_mask)


@pipeline_def
def cache_eval_pipeline(source, *, device: str = "gpu", size: Size = 512,
                        aug: AugmentConfig = NO_AUGMENT, norm: NormalizeConfig = NormalizeConfig(),
                        full_res_mask: bool = False):
    image, mask, params = _cached(source, device)
    return eval_pair(image, mask, params[0], size=size, aug=aug, norm=norm,
                     full_res_mask=full_res_mask)


@pipeline_def
def infer_pipeline(source, *, device: str = "cpu", size: Size | None = 512,
                   aug: AugmentConfig = NO_AUGMENT, norm: NormalizeConfig = NormalizeConfig(),
                   channels: int = 1, with_matrix: bool = False):
    """Unlabelled images of any size: ``source`` yields (image path,) batches. Outputs the
    normalised ``[B, C, H, W]`` image (``size=None``: each at its own size) and each
    image's original ``[H, W]`` (int64). ``with_matrix``: the source yields (image path,
    [2, 3] float32 matrix) and each image is warped by its own matrix (hand ROI crop and
    handedness, :mod:`hbseg.dali_pipes.roi`) instead of the plain resize."""
    if with_matrix:
        image_path, given = fn.external_source(source=source, num_outputs=2, batch=True,
                                               batch_info=True,
                                               dtype=[DALIDataType.UINT8, DALIDataType.FLOAT],
                                               ndim=[1, 2])
    else:
        (image_path,) = fn.external_source(source=source, num_outputs=1, batch=True,
                                           batch_info=True, dtype=DALIDataType.UINT8, ndim=1)
    encoded = _read_file(image_path)
    shape = fn.peek_image_shape(encoded)
    image = _decode(encoded, device, _image_type(channels))
    matrix: Any = None
    if with_matrix:
        matrix = given
    elif size is not None:
        matrix = resize_matrix(fn.cast(shape[0:2], dtype=DALIDataType.FLOAT), size)
    image, _ = eval_pair(image, None, matrix, size=size, aug=aug, norm=norm)
    return image, shape[0:2]


@pipeline_def
def decode_pipeline(source, *, device: str = "gpu", channels: int = 1):
    """Decode (image, packed mask) files once, for the in-memory cache: HWC uint8 pairs."""
    image, mask, _ = _read_files(source, device, with_params=False, channels=channels)
    return image, mask
