"""The ``dali`` back-end: PNG files → DALI graph → torch tensors on the device.

One DALI pipeline is built per epoch, seeded from ``(cfg.seed, epoch, shard_id)``: the same
seed gives the same batches, and resuming at epoch ``e`` reproduces epoch ``e`` exactly.
Samples come in ``epoch_order`` (shuffled in train mode, sharded for DDP); the last batch of
a shard is partial, never dropped or padded. Building a pipeline costs well under a second,
next to an epoch of decoding.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from hbseg.errors import ConfigError, DataError

from .config import LoaderConfig
from .loader_base import EpochIterator, check_index
from .sources import EncodedFileSource

__all__ = ["DaliLoader", "require_dali", "resolve_device", "pipeline_seed", "to_torch", "convert_pair", "run_batch", "runtime_args"]

MODES = ("train", "eval")


DALI_MISSING = ("NVIDIA DALI is not installed; install it with `pip install -e '.[cuda12]'` "
                "(CUDA 12 wheel, also runs CPU-only pipelines) or `'.[cuda13]'`, "
                "or use the torch loader (--loader torch)")


def require_dali() -> None:
    """Fail early, with the fix in the message, where DALI cannot be imported."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as e:
        raise ImportError(DALI_MISSING) from e


def resolve_device(device: str) -> tuple[str, int | None]:
    """``"cpu"`` → ``("cpu", None)``; ``"cuda"``/``"cuda:N"`` → ``("gpu", N)``."""
    require_dali()
    device = str(device)
    if device == "cpu":
        return "cpu", None
    if device == "cuda" or device.startswith("cuda:"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but no CUDA GPU is visible; "
                              "use device 'cpu' (DALI runs the same graph on CPU threads)")
        idx = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
        return "gpu", idx
    raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def pipeline_seed(seed: int, epoch: int, shard_id: int) -> int:
    """A DALI seed (31 bits) that depends on the run's seed, the epoch and the shard only."""
    ss = np.random.SeedSequence([int(seed), int(epoch), int(shard_id), 0xDA11])
    return int(ss.generate_state(1)[0] & 0x7FFFFFFF)


def _gpu_to_torch(t, device_id: int):
    """One dense DALI GPU tensor → a new torch CUDA tensor (copied on torch's current stream,
    so the copy is ordered before any kernel that later reads it)."""
    import torch
    from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

    dev = torch.device("cuda", device_id)
    out = torch.empty(tuple(t.shape()), dtype=to_torch_type[t.dtype], device=dev)
    feed_ndarray(t, out, cuda_stream=torch.cuda.current_stream(dev))
    return out


def to_torch(tl, device_id: int | None = None, per_sample: bool = False):
    """A DALI TensorList → one stacked torch tensor (or a list, one per sample), kept on
    the side it lives on: host outputs become CPU tensors, GPU outputs CUDA tensors."""
    import torch
    from nvidia.dali.backend import TensorListGPU

    if isinstance(tl, TensorListGPU):
        if per_sample:
            return [_gpu_to_torch(tl[i], device_id) for i in range(len(tl))]
        return _gpu_to_torch(tl.as_tensor(), device_id)
    if per_sample:
        return [torch.from_numpy(np.array(tl[i])) for i in range(len(tl))]
    return torch.from_numpy(np.array(tl.as_array()))


def convert_pair(image, mask, device_id: int | None, full_res_mask: bool):
    """Pipeline outputs → ``(image tensor, unpacked mask tensor or list)`` on their device;
    masks are unpacked from bits there with torch bitwise ops."""
    from hbseg.data.masks import unpack_masks_torch

    image = to_torch(image, device_id)
    if full_res_mask:
        return image, [unpack_masks_torch(m) for m in to_torch(mask, device_id, per_sample=True)]
    return image, unpack_masks_torch(to_torch(mask, device_id))


def _bad_file(source: EncodedFileSource, batches: range) -> DataError | None:
    """Decode the files of ``batches`` with OpenCV to find the one DALI choked on."""
    from hbseg.data.images import read_gray_png
    from hbseg.data.masks import read_packed_png

    readers = [read_gray_png, read_packed_png, read_packed_png]
    for k in batches:
        if k >= len(source):
            break
        for files in source.batch_files(k):
            for read, path in zip(readers, files, strict=False):
                try:
                    read(path)
                except DataError as e:
                    return e
    return None


def run_batch(pipe, k: int, source: EncodedFileSource | None = None, lookahead: int = 2):
    """``pipe.run()`` for batch ``k``; a DALI failure becomes a DataError naming the file.

    DALI's decoder errors name no sample, so the files of batch ``k`` (and of the batches
    prefetched after it) are decoded with OpenCV to find the culprit. When none fails
    there, the DALI error is re-raised with the batch's files listed.
    """
    try:
        return pipe.run()
    except RuntimeError as e:
        if source is None:
            raise
        bad = _bad_file(source, range(k, k + 1 + lookahead))
        if bad is not None:
            raise DataError(f"DALI could not decode it ({bad.problem})", bad.path) from e
        files = ", ".join(f[0] for f in source.batch_files(k)) if k < len(source) else "?"
        raise RuntimeError(f"{e}\n(batch {k} held: {files})") from e


def check_mode(mode: str, cfg: LoaderConfig) -> None:
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    if cfg.full_res_mask and mode != "eval":
        raise ConfigError("full_res_mask is for eval mode only (training needs equal-size masks)")


def runtime_args(cfg: LoaderConfig, device_id: int | None, epoch: int) -> dict:
    """DALI's runtime arguments for one epoch's pipeline, kept apart from the graph's:
    the seed follows (seed, epoch, shard), so resuming at epoch e replays epoch e."""
    return dict(batch_size=cfg.batch_size, num_threads=max(1, cfg.num_threads),
                device_id=device_id, seed=pipeline_seed(cfg.seed, epoch, cfg.shard_id),
                prefetch_queue_depth=max(1, cfg.prefetch))


class DaliLoader(EpochIterator):
    """The ``dali`` back-end, implementing :class:`~hbseg.dali_pipes.loader_base.Loader`.

    ``index``: rows of the mask cache's index (``load_cache_index``). ``device``: ``"cpu"``
    (DALI on CPU threads) or ``"cuda[:N]"`` (``mixed`` decoding, GPU operators). Yields
    ``(image [B, 1, S, S] float, mask [B, 29, S, S] uint8 0/1)`` on ``device``; with
    ``cfg.full_res_mask`` (eval) the mask is a list of ``[29, H_i, W_i]``. Masks leave DALI
    bit-packed and are unpacked on the device with torch bitwise ops.
    """

    def __init__(self, index: pd.DataFrame, cfg: LoaderConfig, mode: str = "train",
                 device: str = "cpu"):
        check_mode(mode, cfg)
        check_index(index)
        self.cfg, self.mode, self.device = cfg, mode, str(device)
        self._dali_device, self._device_id = resolve_device(device)
        self.batch_size = cfg.batch_size
        self._columns = [list(index["image_path"]), list(index["mask_path"])]
        self.num_samples = self._source(0).num_samples

    def _source(self, epoch: int) -> EncodedFileSource:
        c = self.cfg
        return EncodedFileSource(self._columns, c.batch_size, shuffle=self.mode == "train",
                                 seed=c.seed, shard_id=c.shard_id, num_shards=c.num_shards,
                                 epoch=epoch)

    def _pipeline(self, source, epoch: int):
        from .pipelines import eval_pipeline, train_pipeline

        c = self.cfg
        rt = runtime_args(c, self._device_id, epoch)
        if self.mode == "train":
            return train_pipeline(source, device=self._dali_device, size=c.size, crop=c.crop,
                                  aug=c.augment, norm=c.normalize, **rt)
        return eval_pipeline(source, device=self._dali_device, size=c.size, aug=c.augment,
                             norm=c.normalize, full_res_mask=c.full_res_mask, **rt)

    def _epoch(self, epoch: int) -> Iterator:
        source = self._source(epoch)
        pipe = self._pipeline(source, epoch)
        try:
            pipe.build()
            for k in range(len(source)):
                image, mask = run_batch(pipe, k, source, lookahead=self.cfg.prefetch)
                yield self._convert(image, mask)
        finally:
            del pipe

    def _convert(self, image, mask):
        return convert_pair(image, mask, self._device_id, self.cfg.full_res_mask)
