"""Submission CSVs: atomic writing, reading, and errors that name the line."""

from __future__ import annotations

import numpy as np
import pytest

from hbseg.data.classes import CLASSES, NUM_CLASSES
from hbseg.errors import DataError
from hbseg.infer.csv_io import SubmissionWriter, read_submission, write_submission
from hbseg.infer.rle import encode_rle


def _rles(seed: int, h: int = 6, w: int = 5) -> list[str]:
    rng = np.random.default_rng(seed)
    return [encode_rle(rng.random((h, w)) > 0.6) for _ in range(NUM_CLASSES)]


def _write(path, rows: list[str], header: str = "image_name,class,rle") -> None:
    path.write_text("\n".join([header, *rows]) + "\n")


def test_round_trip(tmp_path):
    out = tmp_path / "sub.csv"
    items = [("a.png", _rles(0)), ("ID001/b.png", _rles(1))]
    assert write_submission(out, items) == 2
    lines = out.read_text().splitlines()
    assert lines[0] == "image_name,class,rle"
    assert len(lines) == 1 + 2 * NUM_CLASSES
    assert [ln.split(",")[1] for ln in lines[1:30]] == list(CLASSES)  # class order
    assert lines[30].startswith("b.png,finger-1,")  # the basename only
    sub = read_submission(out)
    assert sub.images == ["a.png", "b.png"]
    assert sub.rles["b.png"] == _rles(1)
    assert sub.line_of("b.png", 0) == 31
    masks = sub.masks("a.png", 6, 5)
    assert masks.shape == (NUM_CLASSES, 6, 5)
    assert encode_rle(masks[4]) == _rles(0)[4]


def test_write_is_atomic(tmp_path):
    out = tmp_path / "sub.csv"
    out.write_text("old\n")
    with pytest.raises(RuntimeError), SubmissionWriter(out) as w:
        w.write("a.png", _rles(0))
        raise RuntimeError("interrupted")
    assert out.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [out]  # no temporary left behind


def _rows(name: str, rles: list[str]) -> list[str]:
    return [f"{name},{c},{r}" for c, r in zip(CLASSES, rles, strict=True)]


@pytest.mark.parametrize("mutate,needle", [
    (lambda rows: rows, None),
    (lambda rows: rows[:5] + rows[6:], "missing rows: image 'a.png' (first row at line 2) has no row for class 'finger-6'"),
    (lambda rows: rows + [rows[3]], "line 31: second row for (a.png, finger-4); the first is line 5"),
    (lambda rows: rows[:2] + ["a.png,finger-33,1 2"] + rows[3:], "line 4: unknown class 'finger-33'"),
    (lambda rows: rows[:2] + ["a.png,finger-3,1 2 3"] + rows[3:], "line 4 (a.png, finger-3): RLE has an odd number of values (3)"),
    (lambda rows: rows[:2] + ["a.png,finger-3,0 2"] + rows[3:], "line 4 (a.png, finger-3): RLE run 1 starts at 0"),
    (lambda rows: rows[:2] + ["a.png,finger-3"] + rows[3:], "line 4: 2 fields; expected 3"),
    (lambda rows: rows[:2] + [",finger-3,"] + rows[3:], "line 4: empty image_name"),
])
def test_read_errors_name_the_line(tmp_path, mutate, needle):
    f = tmp_path / "sub.csv"
    _write(f, mutate(_rows("a.png", _rles(0))))
    if needle is None:
        read_submission(f)
        return
    with pytest.raises(DataError) as e:
        read_submission(f)
    assert str(f) in str(e.value)
    assert needle in str(e.value)


def test_wrong_header_and_empty_file(tmp_path):
    f = tmp_path / "sub.csv"
    _write(f, _rows("a.png", _rles(0)), header="ImageId,EncodedPixels")
    with pytest.raises(DataError, match="line 1: header is 'ImageId,EncodedPixels'"):
        read_submission(f)
    f.write_text("")
    with pytest.raises(DataError, match="empty CSV"):
        read_submission(f)
    with pytest.raises(DataError, match="not found"):
        read_submission(tmp_path / "nope.csv")


def test_run_past_the_end_names_the_line(tmp_path):
    f = tmp_path / "sub.csv"
    rles = [""] * NUM_CLASSES
    rles[7] = "28 3"  # a 6x5 image has 30 pixels: ends at 30, fine
    rles[8] = "29 3"  # ends at 31
    _write(f, _rows("a.png", rles))
    sub = read_submission(f)
    assert sub.mask("a.png", 7, 6, 5).sum() == 3
    with pytest.raises(DataError) as e:
        sub.masks("a.png", 6, 5)
    assert "line 10 (a.png, finger-9)" in str(e.value)
    assert "past the image's end (30 pixels) for a 5x6 image" in str(e.value)
