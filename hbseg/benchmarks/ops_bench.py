"""``hbseg-bench ops``: what each step of the input pipeline costs, per image, on CPU and GPU.

Operations, on real files of the data set (the first ``batch_size`` images):

    decode image   PNG → [H, W] uint8 grey        cv2.imdecode | DALI cpu | DALI mixed
    decode mask    packed RGBA PNG → [H, W, 4]    cv2.imdecode | DALI cpu | DALI mixed
    clahe          8×8 tiles, clip 2 (native size) cv2.createCLAHE | fn.clahe cpu/gpu
    warp image     rotate + resize → size, linear  cv2.warpAffine | fn.warp_affine cpu/gpu
    warp mask      the same, nearest, 4 channels   cv2.warpAffine | fn.warp_affine cpu/gpu
    normalise      uint8 → float (x/255-m)/s, CHW  torch cpu/cuda | fn.crop_mirror_normalize
    mask unpack    [S, S, 4] bits → [29, S, S]     numpy | torch cpu/cuda (bitwise)

The DALI rows run the very graph functions the loaders use (``hbseg.dali_pipes.graph``)
in one small pipeline per operation, fed decoded pixels from memory by
``fn.external_source`` (already on the GPU for GPU rows), so a row is the operation
plus DALI's per-iteration overhead; the ``dali passthrough`` row measures that overhead
alone. OpenCV and numpy rows spread the batch over a pool of ``threads`` threads with
OpenCV's own threading off (as DataLoader workers run it); torch CPU rows use
``threads`` intra-op threads. Times are wall milliseconds per image: a timed loop of
``iters`` batches after ``warmup`` untimed ones, CUDA synchronised around it, median of
``repeats`` loops. With prefetching, DALI rows are throughputs, not latencies.
"""

from __future__ import annotations

import datetime
import json
import math
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from hbseg.atomic import atomic_write_text, check_writable_dir

__all__ = ["OPS", "run_ops_bench", "SCHEMA"]

SCHEMA = "hbseg.bench.ops/1"
OPS = ("decode image", "decode mask", "clahe", "warp image", "warp mask", "normalise",
       "mask unpack")


def _matrix(h: int, w: int, size: int, angle: float = 7.0) -> np.ndarray:
    """2x3 forward matrix: rotate ``angle`` degrees about the centre, then resize to size²."""
    import cv2

    rot = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), [0, 0, 1]])
    scale = np.diag([size / w, size / h, 1.0])
    return (scale @ rot)[:2].astype(np.float32)


class _Inputs:
    """The batch every row works on: encoded files, decoded pixels, resized pixels."""

    def __init__(self, index, batch_size: int, size: int):
        import cv2

        from hbseg.data.images import read_gray_png
        from hbseg.data.masks import read_packed_png

        rows = [index.iloc[i % len(index)] for i in range(batch_size)]
        self.enc_images = [np.fromfile(r["image_path"], dtype=np.uint8) for r in rows]
        self.enc_masks = [np.fromfile(r["mask_path"], dtype=np.uint8) for r in rows]
        self.images = [read_gray_png(r["image_path"])[..., None] for r in rows]  # HWC
        self.masks = [read_packed_png(r["mask_path"]) for r in rows]
        h, w = self.images[0].shape[:2]
        self.native = (h, w)
        self.size = size
        self.matrix = _matrix(h, w, size)
        self.small_images = [cv2.resize(i[..., 0], (size, size))[..., None] for i in self.images]
        self.small_masks = [cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST)
                            for m in self.masks]


# --------------------------------------------------------------------------- timing


def _timed(run: Callable[[], object], batch: int, iters: int, warmup: int, repeats: int,
           sync: Callable[[], None]) -> dict:
    for _ in range(warmup):
        run()
    sync()
    per_image = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            run()
        sync()
        per_image.append((time.perf_counter() - t0) / (iters * batch) * 1000.0)
    return {"ms_per_image": statistics.median(per_image), "ms_per_image_all": per_image}


def _cuda_sync() -> None:
    import torch

    torch.cuda.synchronize()


def _no_sync() -> None:
    pass


# --------------------------------------------------------------------------- rows


def _cv2_rows(x: _Inputs, pool: ThreadPoolExecutor) -> dict[str, Callable[[], object]]:
    import cv2

    from hbseg.data.masks import unpack_masks

    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    # DALI's pixel-corner forward matrix as OpenCV's pixel-centre one (graph.to_opencv_matrix)
    t = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    m_cv = (np.linalg.inv(t) @ np.vstack([x.matrix, [0, 0, 1]]) @ t)[:2]
    s = x.size

    def each(f, items):
        return lambda: list(pool.map(f, items))

    return {
        "decode image": each(lambda b: cv2.imdecode(b, cv2.IMREAD_GRAYSCALE), x.enc_images),
        "decode mask": each(lambda b: cv2.imdecode(b, cv2.IMREAD_UNCHANGED), x.enc_masks),
        "clahe": each(lambda i: clahe.apply(i[..., 0]), x.images),
        "warp image": each(lambda i: cv2.warpAffine(i[..., 0], m_cv, (s, s), flags=cv2.INTER_LINEAR),
                           x.images),
        "warp mask": each(lambda m: cv2.warpAffine(m, m_cv, (s, s), flags=cv2.INTER_NEAREST),
                          x.masks),
        "mask unpack": each(unpack_masks, x.small_masks),
    }


def _torch_rows(x: _Inputs, device: str) -> dict[str, Callable[[], object]]:
    import torch

    from hbseg.data.masks import unpack_masks_torch

    images = torch.from_numpy(np.stack(x.small_images)).to(device)  # [B, S, S, 1] uint8
    masks = torch.from_numpy(np.stack(x.small_masks)).to(device)  # [B, S, S, 4]
    mean, std = 0.485, 0.229

    def normalise():
        return images.permute(0, 3, 1, 2).float().div_(255.0).sub_(mean).div_(std).contiguous()

    return {"normalise": normalise, "mask unpack": lambda: unpack_masks_torch(masks)}


_DALI_CLAHE = "clahe dali kernel"


def _dali_rows(x: _Inputs, device: str, threads: int, device_id: int | None,
               batch: int) -> dict[str, Callable[[], object]]:
    """One small pipeline per operation; returns name → run-one-iteration."""
    from nvidia.dali import fn, pipeline_def, types

    from hbseg.dali_pipes.config import AugmentConfig, NormalizeConfig
    from hbseg.dali_pipes.graph import clahe, normalize

    gpu = device == "gpu"
    if gpu:
        import torch

        def on_dev(arrays):
            return [torch.from_numpy(np.ascontiguousarray(a)).cuda() for a in arrays]
    else:
        def on_dev(arrays):
            return list(arrays)

    def pixels(arrays):
        data = on_dev(arrays)
        return fn.external_source(source=lambda: data, batch=True, device="gpu" if gpu else "cpu",
                                  layout="HWC", dtype=types.UINT8, ndim=3)

    def encoded(blobs):
        return fn.external_source(source=lambda: blobs, batch=True, dtype=types.UINT8, ndim=1)

    dec = "mixed" if gpu else "cpu"
    s = float(x.size)
    mt = [float(v) for v in x.matrix.reshape(-1)]
    graphs = {
        "dali passthrough": lambda: pixels(x.images),
        "decode image": lambda: fn.decoders.image(encoded(x.enc_images), device=dec,
                                                  output_type=types.GRAY),
        "decode mask": lambda: fn.decoders.image(encoded(x.enc_masks), device=dec,
                                                 output_type=types.ANY_DATA),
        "clahe": lambda: clahe(pixels(x.images), AugmentConfig(clahe_p=1.0)),
        "warp image": lambda: fn.warp_affine(pixels(x.images), matrix=mt, size=[s, s],
                                             inverse_map=False, fill_value=0.0,
                                             interp_type=types.INTERP_LINEAR),
        "warp mask": lambda: fn.warp_affine(pixels(x.masks), matrix=mt, size=[s, s],
                                            inverse_map=False, fill_value=0.0,
                                            interp_type=types.INTERP_NN),
        "normalise": lambda: normalize(pixels(x.small_images), NormalizeConfig()),
    }
    if gpu:  # what grey GPU nodes ran before hbseg's own kernel: DALI's, padded to OpenCV's tiles
        from hbseg.dali_pipes.clahe import clahe_like_opencv

        graphs[_DALI_CLAHE] = lambda: clahe_like_opencv(pixels(x.images), tiles_x=8, tiles_y=8,
                                                        clip_limit=2.0, gpu_kernel="dali")
    rows = {}
    for name, graph in graphs.items():
        @pipeline_def
        def pipe_fn(graph=graph):
            return graph()

        def make(pipe_fn=pipe_fn):
            pipe = pipe_fn(batch_size=batch, num_threads=threads, device_id=device_id, seed=0)
            pipe.build()
            return pipe.run

        rows[name] = make
    return rows


def run_ops_bench(root: str | Path, out: str | Path | None = None, size: int = 512,
                  batch_size: int = 8, threads: int = 2, iters: int = 10, warmup: int = 2,
                  repeats: int = 3, device: str = "auto", ops: tuple[str, ...] = OPS,
                  log: Callable[[str], None] = print) -> dict:
    """Time every (operation, implementation, device) row; write ``ops.json``/``ops.md``."""
    import cv2
    import torch

    from hbseg.data.cache import default_cache_dir, load_cache_index

    from .report import ops_table
    from .sysinfo import machine_info

    cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    index = load_cache_index(default_cache_dir(root))
    x = _Inputs(index, batch_size, size)
    cv2.setNumThreads(1)
    torch.set_num_threads(threads)
    rows: list[dict] = []

    def record(op: str, impl: str, dev: str, make: Callable[[], Callable[[], object]],
               sync: Callable[[], None], note: str = "") -> None:
        if op not in ops and op != "dali passthrough":
            return
        row = {"op": op, "impl": impl, "device": dev, "threads": threads, "note": note}
        try:
            row.update(_timed(make(), batch_size, iters, warmup, repeats, sync))
            row["status"] = "ok"
            log(f"  {op:<16} {impl:<22} {dev:<4} {row['ms_per_image']:8.3f} ms/image")
        except Exception as e:  # noqa: BLE001 - one broken row must not end the table
            row.update(status="error", error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            log(f"  {op:<16} {impl:<22} {dev:<4} failed: {row['error']}")
        rows.append(row)

    with ThreadPoolExecutor(threads) as pool:
        for op, run in _cv2_rows(x, pool).items():
            impl = "numpy" if op == "mask unpack" else "opencv"
            record(op, impl, "cpu", lambda run=run: run, _no_sync, f"{threads}-thread pool")
    for op, run in _torch_rows(x, "cpu").items():
        record(op, "torch", "cpu", lambda run=run: run, _no_sync)
    if cuda:
        for op, run in _torch_rows(x, "cuda").items():
            record(op, "torch", "gpu", lambda run=run: run, _cuda_sync)
    try:
        dali_sets = [("cpu", None, _no_sync)] + ([("gpu", 0, _cuda_sync)] if cuda else [])
        for dev, device_id, sync in dali_sets:
            for op, make in _dali_rows(x, dev, threads, device_id, batch_size).items():
                impl = "dali " + ("mixed" if dev == "gpu" and op.startswith("decode") else dev)
                if op == _DALI_CLAHE:
                    op, impl = "clahe", "dali gpu fn.clahe"
                elif op == "clahe" and dev == "gpu":
                    impl = "hbseg kernel (dali gpu)"
                record(op, impl, dev, make, sync, "" if op != "dali passthrough"
                       else "external_source → output only")
    except ImportError as e:
        log(f"  DALI rows skipped: {e}")

    results = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": {"data": str(root), "size": size, "batch_size": batch_size, "threads": threads,
                   "iters": iters, "warmup": warmup, "repeats": repeats, "cuda": cuda,
                   "native_hw": list(x.native)},
        "machine": machine_info(gpu=cuda),
        "ops": rows,
    }
    results["table_markdown"] = ops_table(results)
    if out is not None:
        out = check_writable_dir(out)
        atomic_write_text(out / "ops.json", json.dumps(results, indent=1, default=_json_default) + "\n")
        atomic_write_text(out / "ops.md", results["table_markdown"] + "\n")
    return results


def _json_default(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)
