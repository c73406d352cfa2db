"""Writing a whole synthetic data set in the competition layout, on every core."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hbseg.atomic import atomic_path, check_writable_dir
from hbseg.data.classes import CLASSES
from hbseg.data.layout import IMAGE_DIR, JSON_DIR, SYNTH_PARTIAL_MARK
from hbseg.errors import ConfigError, DataError
from hbseg.progress import bar_disabled

from .render import generate_hand

GENERATOR_VERSION = 1

# --------------------------------------------------------------------------------------
# Data set
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SynthConfig:
    """What :func:`generate_dataset` makes: ``ids`` train patients and ``test_ids`` test
    patients, two hands each, ``size``×``size`` pixels, all from ``seed``."""

    ids: int = 20
    size: int = 2048
    seed: int = 0
    test_ids: int = 0

    def validate(self) -> None:
        if self.ids < 0 or self.test_ids < 0 or self.ids + self.test_ids == 0:
            raise ConfigError(f"need at least one ID (ids={self.ids}, test_ids={self.test_ids})")
        if self.ids + self.test_ids > 1000:
            raise ConfigError("at most 1000 IDs (ID000..ID999)")
        if self.size < 64:
            raise ConfigError(f"image size must be at least 64 px, not {self.size}")
        if self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, not {self.seed}")


def image_name(seed: int, id_index: int, side: str) -> str:
    """File name of one image, like the competition's ``image1661130828152_L.png``.

    Numbers rise with the ID, so names are unique within a data set (and L/R differ).
    """
    ss = np.random.default_rng([seed, 0x5EED]).integers(0, 10**10)
    number = 1_600_000_000_000 + int(ss) + id_index * 100_003 + (0 if side == "L" else 41)
    return f"image{number}_{side}.png"


def _annotation_json(rng: np.random.Generator, polygons: dict[str, np.ndarray], name: str,
                     parent: str, size: int) -> str:
    def uid() -> str:
        return str(uuid.UUID(bytes=rng.bytes(16), version=4))

    anns = [{"id": uid(), "type": "poly_seg", "attributes": {}, "label": label,
             "points": polygons[label].tolist()} for label in CLASSES]
    doc = {
        "annotations": anns,
        "attributes": {},
        "file_id": uid(),
        "filename": name,
        "parent_path": parent,
        "last_modifier_id": uid(),
        "metadata": {"height": size, "width": size},
        "last_workers": {},
    }
    return json.dumps(doc, separators=(",", ":"))


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _make_one(task: tuple) -> str:
    """Generate and write one image (and its JSON for train): a Pool task."""
    out, split, pid, id_index, side, seed, size = task
    g = 2 * id_index + (0 if side == "L" else 1)  # global image index
    image, polygons = generate_hand(np.random.default_rng([seed, g]), size, side)
    name = image_name(seed, id_index, side)
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise DataError("PNG encoding failed", name)
    root = Path(out) / split
    _write_bytes(root / IMAGE_DIR / pid / name, buf.tobytes())
    if split == "train":
        text = _annotation_json(np.random.default_rng([seed, g, 1]), polygons, name,
                                f"synthetic/{split}/{IMAGE_DIR}/{pid}", size)
        _write_bytes(root / JSON_DIR / pid / f"{Path(name).stem}.json", text.encode())
    return name


def _worker_init() -> None:
    # one OpenCV thread per worker process: the pool already uses every core
    cv2.setNumThreads(1)
    # Ctrl-C reaches the whole process group: only the parent reports it, in one line
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


# Written first and removed last: its presence marks a data set whose generation was
# interrupted, which a new run may then replace without --overwrite.
PARTIAL_MARK = SYNTH_PARTIAL_MARK


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def generate_dataset(
    out: str | Path, cfg: SynthConfig, workers: int | None = None, progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Write a synthetic data set in the competition layout under ``out``.

    ``out/train/DCM/IDxxx/*.png`` with ``out/train/outputs_json/IDxxx/*.json`` for
    ``cfg.ids`` patients, then ``out/test/DCM/IDxxx/*.png`` for ``cfg.test_ids`` patients
    (numbered after the train IDs), two hands (L, R) per patient, and
    ``out/synth_config.json``. Every file is written atomically. ``workers`` processes
    (default: every core) share the images; the result does not depend on their number.

    Refuses to write over existing images unless ``overwrite``, which first deletes the
    old ``train/DCM``, ``train/outputs_json`` and ``test/DCM`` folders.
    Returns ``{"images", "train_images", "test_images", "seconds", "out", "workers"}``.
    """
    cfg.validate()
    out = Path(out)
    old = [out / "train" / IMAGE_DIR, out / "train" / JSON_DIR, out / "test" / IMAGE_DIR]
    existing = [p for p in old[::2] if _has_images(p)]
    if existing and (out / PARTIAL_MARK).is_file():
        overwrite = True  # our own unfinished output: replace it (generation is deterministic)
    if existing and not overwrite:
        raise DataError("already holds image data; choose an empty folder or pass --overwrite "
                        "(which deletes the old images and annotations)", existing[0])
    if overwrite:
        for p in old:
            if p.is_dir():
                shutil.rmtree(p)
    check_writable_dir(out)
    (out / PARTIAL_MARK).write_text("hbseg-data synth was interrupted here; run it again\n")

    tasks = []
    for i in range(cfg.ids + cfg.test_ids):
        split = "train" if i < cfg.ids else "test"
        pid = f"ID{i:03d}"
        for side in ("L", "R"):
            tasks.append((str(out), split, pid, i, side, cfg.seed, cfg.size))
    for split, pid in {(t[1], t[2]) for t in tasks}:
        (out / split / IMAGE_DIR / pid).mkdir(parents=True, exist_ok=True)
        if split == "train":
            (out / split / JSON_DIR / pid).mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    t0 = time.perf_counter()
    with tqdm(total=len(tasks), desc="synthetic hands", unit="img", disable=bar_disabled(progress)) as bar:
        if workers == 1:
            for t in tasks:
                _make_one(t)
                bar.update()
        else:
            import multiprocessing as mp

            # spawn, not fork: cv2.setNumThreads in a child forked after the parent used
            # OpenCV's thread pool can hang forever
            with mp.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
                for _ in pool.imap_unordered(_make_one, tasks, chunksize=1):
                    bar.update()
    seconds = time.perf_counter() - t0

    info = {**dataclasses.asdict(cfg), "generator": "hbseg.data.synth",
            "generator_version": GENERATOR_VERSION}
    _write_bytes(out / "synth_config.json", (json.dumps(info, indent=2) + "\n").encode())
    (out / PARTIAL_MARK).unlink(missing_ok=True)
    return {
        "images": len(tasks),
        "train_images": 2 * cfg.ids,
        "test_images": 2 * cfg.test_ids,
        "seconds": round(seconds, 3),
        "out": str(out),
        "workers": workers,
    }
