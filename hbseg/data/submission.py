"""Submission CSVs: ``image_name,class,rle``, 29 rows per image in class order.

Writing goes through a temporary file and a rename, so an interrupted run never leaves a
half-written submission. Reading checks everything that can be checked without the
images and names the offending line; ``Submission.mask`` checks the rest (a run past the
image's end) when the image size is known.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hbseg.atomic import atomic_path
from hbseg.data.classes import CLASSES
from hbseg.errors import DataError
from hbseg.progress import bar_disabled

from .rle import RLEError, check_order, decode_rle, parse_rle

__all__ = ["HEADER", "SubmissionWriter", "write_submission", "Submission", "read_submission",
           "submission_classes"]

HEADER = ("image_name", "class", "rle")


class SubmissionWriter:
    """Stream rows into ``path`` atomically: the file appears only when the block succeeds.

    >>> with SubmissionWriter("submission.csv") as w:
    ...     w.write("image1.png", rles)  # one RLE per class, in class order
    """

    def __init__(self, path: str | Path, class_names: Sequence[str] = CLASSES):
        self.path = Path(path)
        self.class_names = tuple(class_names)
        self.images = 0
        self._stack: contextlib.ExitStack | None = None
        self._f = None

    def __enter__(self) -> SubmissionWriter:
        stack = contextlib.ExitStack()
        tmp = stack.enter_context(atomic_path(self.path))
        # a file name that is not UTF-8 keeps its bytes (as os.fsdecode gave it to us)
        self._f = stack.enter_context(open(tmp, "w", newline="", encoding="utf-8",
                                           errors="surrogateescape"))
        self._f.write(",".join(HEADER) + "\n")
        self._stack = stack
        return self

    def write(self, image_name: str, rles: Sequence[str]) -> None:
        if len(rles) != len(self.class_names):
            raise ValueError(f"{image_name}: {len(rles)} masks for {len(self.class_names)} classes")
        name = Path(image_name).name
        if "," in name or '"' in name:
            raise DataError("image names with commas or quotes cannot go into the CSV", name)
        self._f.write("".join(f"{name},{c},{r}\n" for c, r in zip(self.class_names, rles, strict=True)))
        self.images += 1

    def __exit__(self, *exc) -> bool:
        stack, self._stack, self._f = self._stack, None, None
        return stack.__exit__(*exc)


def write_submission(
    path: str | Path,
    items: Iterable[tuple[str, Sequence[str]]],
    class_names: Sequence[str] = CLASSES,
    progress: bool = False,
) -> int:
    """Write ``(image_name, rles)`` pairs; returns the number of images written."""
    from tqdm.auto import tqdm

    with SubmissionWriter(path, class_names) as w:
        for name, rles in tqdm(items, desc="writing CSV", unit="img", disable=bar_disabled(progress)):
            w.write(name, rles)
    return w.images


@dataclass
class Submission:
    """A checked submission: per image, one RLE per class (class order) and its CSV line."""

    path: Path
    class_names: tuple[str, ...]
    rles: dict[str, list[str]] = field(default_factory=dict)
    lines: dict[str, list[int]] = field(default_factory=dict)

    @property
    def images(self) -> list[str]:
        return list(self.rles)

    def line_of(self, image_name: str, c: int) -> int:
        return self.lines[image_name][c]

    def mask(self, image_name: str, c: int, height: int, width: int) -> np.ndarray:
        """[H, W] uint8 mask of class ``c``; a run past the image's end names the line."""
        try:
            return decode_rle(self.rles[image_name][c], height, width)
        except RLEError as e:
            raise DataError(
                f"line {self.line_of(image_name, c)} ({image_name}, {self.class_names[c]}): {e} "
                f"for a {width}x{height} image", self.path,
            ) from None

    def masks(self, image_name: str, height: int, width: int) -> np.ndarray:
        """[C, H, W] uint8 masks of one image."""
        return np.stack([self.mask(image_name, c, height, width) for c in range(len(self.class_names))])


@contextlib.contextmanager
def _no_field_limit():
    """The csv module caps fields at 128 KiB; a noisy 2048² mask's RLE can be longer."""
    old = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _open_csv(path: str | Path):
    """A CSV as text: UTF-8 with or without the byte-order mark Excel writes (or UTF-16 with
    its mark); bytes that are not UTF-8 stand for themselves, as in a file name that is
    not UTF-8 (what ``SubmissionWriter`` writes for one)."""
    from hbseg.regular_files import check_regular
    from hbseg.settings_file import text_encoding

    check_regular(path, "a submission CSV")  # a FIFO would block the reader for ever
    return open(path, newline="", encoding=text_encoding(path), errors="surrogateescape")


def _unknown_class(name: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f"unknown class {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def submission_classes(path: str | Path) -> tuple[str, ...]:
    """The classes a submission CSV has rows for, in the order they first appear."""
    seen: dict[str, None] = {}
    try:
        with _open_csv(path) as f, _no_field_limit():
            rows = csv.reader(f)
            header = next(rows, None)
            if header is None or tuple(h.strip() for h in header) != HEADER:
                read_submission(path, ())  # names the fault in its own words
            for row in rows:
                if len(row) == 3:
                    seen.setdefault(row[1].strip(), None)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        # it reads the same rows, so it meets the same fault, and names its line
        read_submission(path, tuple(seen))
        raise DataError(f"unreadable submission CSV ({e})", path) from None
    return tuple(seen)


def read_submission(path: str | Path, class_names: Sequence[str] = CLASSES) -> Submission:
    """Read and check a submission CSV.

    Errors (DataError, naming the line): a wrong header, a row without three fields, an
    empty image name, an unknown class, a repeated (image, class) pair, a malformed RLE
    (not integers, an odd count, a start or length below 1, runs out of order or
    overlapping, as Kaggle's checker refuses them), and an image that lacks a
    row for some class.
    """
    path = Path(path)
    class_names = tuple(class_names)
    index = {c: i for i, c in enumerate(class_names)}
    sub = Submission(path, class_names)
    try:
        f = _open_csv(path)
    except FileNotFoundError:
        raise DataError("submission CSV not found", path) from None
    with f, _no_field_limit():
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise DataError("empty CSV; expected the header image_name,class,rle", path)
            if tuple(h.strip() for h in header) != HEADER:
                raise DataError(f"line 1: header is {','.join(header)!r}; expected "
                                f"{','.join(HEADER)!r}", path)
            for row in reader:
                n = reader.line_num
                if not row:
                    continue
                if len(row) != 3:
                    raise DataError(f"line {n}: {len(row)} fields; expected 3 (image_name,class,rle)", path)
                name, cls, rle = row[0].strip(), row[1].strip(), row[2]
                if not name:
                    raise DataError(f"line {n}: empty image_name", path)
                c = index.get(cls)
                if c is None:
                    raise DataError(f"line {n}: {_unknown_class(cls, class_names)}", path)
                if name not in sub.rles:
                    sub.rles[name] = [None] * len(class_names)
                    sub.lines[name] = [0] * len(class_names)
                if sub.rles[name][c] is not None:
                    raise DataError(f"line {n}: second row for ({name}, {cls}); the first is "
                                    f"line {sub.lines[name][c]}", path)
                try:
                    check_order(parse_rle(rle))
                except RLEError as e:
                    raise DataError(f"line {n} ({name}, {cls}): {e}", path) from None
                sub.rles[name][c] = rle.strip()
                sub.lines[name][c] = n
        except UnicodeDecodeError as e:
            raise DataError(f"not a text CSV ({e.reason} near byte {e.start})", path) from None
        except csv.Error as e:
            raise DataError(f"line {reader.line_num}: malformed CSV ({e})", path) from None
    for name, rles in sub.rles.items():
        missing = [class_names[c] for c, r in enumerate(rles) if r is None]
        if missing:
            first = min(x for x in sub.lines[name] if x)
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise DataError(
                f"missing rows: image {name!r} (first row at line {first}) has no row for class "
                f"{missing[0]!r}{more}; every image needs all {len(class_names)} classes", path,
            )
    return sub
