"""Inference input: unlabelled PNGs of any size → normalised batches + original sizes.

Each image gets the eval graph (deterministic CLAHE, one linear resize by ``fn.warp_affine``,
normalisation) so that the model sees exactly what eval showed it; its original ``(H, W)``
comes along so predictions can be resized back to it, and its file name so the submission
can name it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hbseg.errors import DataError

from .config import NO_AUGMENT, AugmentConfig, NormalizeConfig, as_hw
from .dali_loader import resolve_device, to_torch
from .draw import Size
from .pipe_loader import PipelineLoader
from .sources import FileSource

__all__ = ["DaliInferLoader"]


class _Matrices:
    """``FileSource`` params: each row's own forward matrix (hand ROI crop, handedness)."""

    def __init__(self, matrices: list):
        self.matrices = matrices

    def __call__(self, epoch: int, idx) -> list[list]:
        return [[self.matrices[int(i)] for i in idx]]


class DaliInferLoader(PipelineLoader):
    """Yields ``(image [B, C, H, W] float on device, orig_hw list[(h, w)], names list[str])``
    over ``image_paths`` in the order given (``(H, W)``: ``size``, a side or a pair); the
    last batch is partial. ``size=None`` keeps
    full resolution: ``image`` is then a list of ``[1, H_i, W_i]`` tensors. The pipeline is
    built once; iterating again (another model, another TTA pass) reuses it.

    ``augment``: the training ``AugmentConfig``; only its CLAHE settings are used, applied
    when ``clahe_in_eval`` says so (as in eval). ``device``: ``"cpu"`` or ``"cuda[:N]"``.
    ``channels``: 1 decodes grey, 3 RGB (``normalize`` then has one or three values).
    ``matrices``: one [2, 3] forward matrix per image (DALI convention, onto ``size``²) that
    replaces the plain resize: the hand ROI crop and handedness of :mod:`hbseg.dali_pipes.roi`.
    """

    supports_full_res = True  # size=None

    def __init__(self, image_paths: Sequence[str | Path], size: Size | None = 512,
                 augment: AugmentConfig = NO_AUGMENT, normalize: NormalizeConfig = NormalizeConfig(),
                 batch_size: int = 4, device: str = "cpu", num_threads: int = 2, prefetch: int = 2,
                 channels: int = 1, matrices: Sequence | None = None):
        from .pipelines import infer_pipeline

        self.image_paths = [str(p) for p in image_paths]
        if not self.image_paths:
            raise DataError("no images to predict (the list of image paths is empty)")
        self.size: Size | None = None if size is None else as_hw(size)  # ValueError if < 16
        self.augment, self.normalize = augment, normalize
        self.batch_size, self.num_threads, self.prefetch = int(batch_size), num_threads, prefetch
        self.device = str(device)
        dali_device, device_id = resolve_device(device)
        params = None
        if matrices is not None:
            if self.size is None or len(matrices) != len(self.image_paths):
                raise ValueError("matrices need a size and one [2, 3] matrix per image")
            mats = [np.asarray(m, np.float32).reshape(2, 3) for m in matrices]
            params = _Matrices(mats)
        source = FileSource([self.image_paths], self.batch_size, shuffle=False, params=params)
        self._files = source  # the batch's names
        pipe = infer_pipeline(source, device=dali_device, size=self.size, aug=self.augment,
                              norm=self.normalize, channels=channels,
                              with_matrix=matrices is not None, batch_size=self.batch_size,
                              num_threads=max(1, self.num_threads), device_id=device_id,
                              seed=0, prefetch_queue_depth=max(1, self.prefetch))
        self._start(pipe, source, device_id)

    def _convert(self, outputs, k: int):
        image, shape_hw = outputs
        hw = [tuple(int(v) for v in shape_hw.at(i)) for i in range(len(shape_hw))]
        image = to_torch(image, self._device_id, per_sample=self.size is None)
        return image, hw, self._files.names(k)
