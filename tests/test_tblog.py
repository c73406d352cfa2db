"""TensorBoard event files: one scalar per metric per epoch, read back from the files."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from hbseg.data.classes import CLASSES
from hbseg.train.tblog import TB_DIR, TensorBoardLog, scalars

pytest.importorskip("tensorboardX")


def read_events(folder: Path) -> list:
    """Every Event in the TFRecord files of ``folder`` (length, crc, data, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            events.append(Event.FromString(data[pos + 12:pos + 12 + n]))
            pos += 12 + n + 4
    return events


def read_scalars(folder: Path) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for e in read_events(folder):
        for v in e.summary.value:
            out.setdefault(v.tag, {})[e.step] = v.simple_value
    return out


def record(epoch: int, dice: float | None = 0.5) -> dict:
    return {"epoch": epoch, "loss": 1.0 / epoch, "lr": 1e-3, "val_loss": None if dice is None else 0.7,
            "mean_dice": dice, "dice": None if dice is None else dict.fromkeys(CLASSES, dice),
            "epoch_seconds": 2.5, "images": 6, "images_per_s": 3.0, "amp": "fp32", "world_size": 1,
            "pipeline_build_s": None}


def test_scalars_name_every_number_of_a_record():
    s = scalars(record(3))
    assert s["train/loss"] == pytest.approx(1 / 3) and s["train/lr"] == 1e-3
    assert s["val/loss"] == 0.7 and s["val/mean_dice"] == 0.5
    assert s["time/epoch_seconds"] == 2.5 and s["time/images_per_s"] == 3.0
    assert {f"dice/{c}" for c in CLASSES} <= set(s)
    assert not {"epoch", "amp", "world_size", "time/amp", "time/pipeline_build_s"} & set(s)
    no_val = scalars(record(1, dice=None))
    assert "val/mean_dice" not in no_val and not any(k.startswith("dice/") for k in no_val)


def test_events_read_back_per_epoch_and_resume_purges(tmp_path):
    log = TensorBoardLog(tmp_path)
    for epoch in (1, 2, 3):
        log.log(record(epoch, dice=0.1 * epoch))
    log.close()
    got = read_scalars(tmp_path / TB_DIR)
    assert got["train/loss"] == pytest.approx({1: 1.0, 2: 0.5, 3: 1 / 3})
    assert got["val/mean_dice"] == pytest.approx({1: 0.1, 2: 0.2, 3: 0.3})
    assert got[f"dice/{CLASSES[-1]}"][3] == pytest.approx(0.3)
    # a resume from epoch 2 tells TensorBoard to drop the old epoch 3
    log = TensorBoardLog(tmp_path, resume_epoch=2)
    log.log(record(3, dice=0.9))
    log.close()
    starts = [e.step for e in read_events(tmp_path / TB_DIR) if e.HasField("session_log")]
    assert starts == [3]
    # a fresh run (no resume) clears earlier event files; disabled writes nothing
    TensorBoardLog(tmp_path).close()
    assert read_scalars(tmp_path / TB_DIR) == {}
    off = TensorBoardLog(tmp_path / "off", enabled=False)
    off.log(record(1))
    off.close()
    assert not (tmp_path / "off").exists()
