"""One DALI pipeline per loader for the whole run, epochs advanced through the source.

:class:`PipelineLoader` holds a built pipeline and its epoch-aware source
(:mod:`hbseg.dali_pipes.sources`). ``iter()`` selects the epoch in the source
(``source.begin(epoch)``: the next epoch, or the one ``set_epoch`` pinned) and runs the
pipeline until the source ends the epoch; the next ``iter()`` calls ``pipe.reset()`` and
goes on with the same pipeline, executor, thread pool and decoder. A half-read epoch
(``reset()``, or an abandoned iterator) is closed by asking the source to stop and
draining the batches already in flight.

The hand-off never blocks the host on CUDA: ``pipe.run(stream)`` returns outputs bound to
torch's current stream (DALI's dynamic executor, the default in DALI 2.x; see
``Pipeline.run``'s ``cuda_stream`` argument) and they are copied into torch tensors on
that stream, so the training kernels queue behind DALI's without a host-side wait.
DALI's own prefetch queue (``prefetch_queue_depth``) keeps the next batches in flight.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

from hbseg.errors import DataError

from .loader_base import Closable, EpochClock
from .sources import EpochSource, FileSource

__all__ = ["PipelineLoader"]


class PipelineLoader(Closable):
    """Epoch bookkeeping over one pipeline. Subclasses call :meth:`_start` once with the
    pipeline and its source, and implement ``_convert(outputs, k)`` for batch ``k``."""

    pipeline_builds: int = 0
    pipeline_build_s: float | None = None

    def _start(self, pipe, source: EpochSource, device_id: int | None) -> None:
        self._pipe, self._source, self._device_id = pipe, source, device_id
        self._clock = EpochClock()
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            # the source always hands out every parameter; a graph that skips brightness
            # or CLAHE (eval, p = 0) leaves some unused, at no measurable cost
            warnings.filterwarnings("ignore", message=r".*external source node .* not used")
            pipe.build()
        self.pipeline_build_s = time.perf_counter() - t0
        self.pipeline_builds += 1
        self._open = False  # an epoch was begun and not run to its end
        self._at_end = False  # the pipeline ended an epoch and needs reset() before the next

    @property
    def num_samples(self) -> int:
        return self._source.num_samples

    def __len__(self) -> int:
        return len(self._source)

    @property
    def epoch(self) -> int:
        """The epoch of the current (or last) iteration, or the one ``set_epoch`` pinned."""
        return self._clock.epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration read epoch ``epoch`` (its order and draws); later
        iterations follow from there."""
        self._clock.set_epoch(epoch)

    def reset(self) -> None:
        """Rewind: close a half-read epoch (the source stops, the batches in flight are
        drained) and make the next iteration read the current epoch again."""
        self._drain()
        self._clock.rewind()

    def _drain(self) -> None:
        """Close a half-read epoch: the source stops, the batches in flight are drained."""
        if self._open and not self.closed:
            self._source.stop()
            while True:
                try:
                    self._pipe.run()
                except StopIteration:
                    break
            self._open, self._at_end = False, True

    def __iter__(self) -> Iterator:
        if self.closed:
            raise RuntimeError(f"{type(self).__name__} was closed; build a new loader")
        self._drain()  # an abandoned iteration is over; the next epoch begins
        if self._at_end:
            self._pipe.reset()
            self._at_end = False
        self._source.begin(self._clock.next_epoch())
        self._open = True
        return self._batches()

    def close(self) -> None:
        """Release the pipeline and what its source holds (for ``dali-cache``, the decoded
        data set) now. The pipeline's external-source callbacks keep the loader's source in
        a reference cycle, so without this the memory waits for a garbage collection, and a
        k-fold or tuning loop would hold the previous fold's cache beside the next one."""
        pipe, self._pipe = getattr(self, "_pipe", None), None
        if pipe is None:
            return
        self._open = False
        self._source.release()
        shutdown = getattr(pipe, "_shutdown", None)  # DALI's own atexit hook uses it too
        if callable(shutdown):
            shutdown()

    @property
    def closed(self) -> bool:
        return getattr(self, "_pipe", None) is None

    def _stream(self):
        if self._device_id is None:
            return None
        import torch

        return torch.cuda.current_stream(self._device_id)

    def _run(self, k: int):
        """``pipe.run`` for batch ``k``; raises StopIteration at the epoch's end."""
        return run_batch(self._pipe, k, self._source, stream=self._stream())

    def _batches(self) -> Iterator:
        k = 0
        while True:
            try:
                outputs = self._run(k)
            except StopIteration:
                self._open, self._at_end = False, True
                return
            yield self._convert(outputs, k)
            k += 1

    def _convert(self, outputs, k: int):
        raise NotImplementedError


def _bad_file(source: FileSource, batches: range) -> DataError | None:
    """Decode the files of ``batches`` with OpenCV to find the one DALI choked on."""
    from collections.abc import Callable
    from functools import partial

    from hbseg.data.formats.images import read_image

    from .outputs import read_mask_file

    readers: list[Callable[[str], Any]] = [
        partial(read_image, channels=getattr(source, "channels", 1)), read_mask_file,
        read_mask_file]
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


def run_batch(pipe, k: int, source=None, lookahead: int = 2, stream=None):
    """``pipe.run(stream)`` for batch ``k``; a DALI failure becomes a DataError naming the file.

    ``stream`` (torch's current CUDA stream on a GPU) makes the outputs asynchronous:
    they are bound to it instead of being synchronised with the host. DALI's reader and
    decoder errors name no sample, so the files of batch ``k`` (and of the batches
    prefetched after it) are decoded with OpenCV to find the culprit. When none fails
    there, the DALI error is re-raised with the batch's files listed. ``StopIteration``
    (the source ended the epoch) passes through.
    """
    try:
        return pipe.run() if stream is None else pipe.run(stream)
    except RuntimeError as e:
        if not isinstance(source, FileSource):
            raise
        bad = _bad_file(source, range(k, k + 1 + lookahead))
        if bad is not None:
            raise DataError(f"DALI could not read or decode it ({bad.problem})", bad.path) from e
        files = ", ".join(f[0] for f in source.batch_files(k)) if k < len(source) else "?"
        raise RuntimeError(f"{e}\n(batch {k} held: {files})") from e
