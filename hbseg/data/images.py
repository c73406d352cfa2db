"""Reading and checking the radiographs: 8-bit grey PNGs."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from hbseg.errors import DataError
from hbseg.regular_files import open_regular, read_bytes_regular

__all__ = ["png_header", "read_gray_png", "read_any_png"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = b"IEND\xaeB`\x82"
_COLOUR_TYPES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 passes: (first row, first column, row step, column step)
_ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))


def png_header(path: str | Path) -> dict:
    """Width, height, bit depth and colour type from the IHDR chunk, without decoding.

    Raises DataError for files that are not PNGs or that are truncated (no IEND chunk).
    """
    path = Path(path)
    try:
        with open_regular(path, "rb", "a PNG image") as f:
            head = f.read(33)
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 12))
            tail = f.read()
    except FileNotFoundError:
        raise DataError("image file not found", path) from None
    except OSError as e:
        raise DataError(f"cannot read image ({e.strerror})", path) from None
    if size == 0:
        raise DataError("empty file (0 bytes), expected a PNG", path)
    if not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise DataError("not a PNG file (bad signature)", path)
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if not tail.endswith(_IEND):
        raise DataError("truncated PNG (no IEND chunk at the end of the file)", path)
    return {
        "width": width,
        "height": height,
        "bit_depth": depth,
        "colour": _COLOUR_TYPES.get(colour, f"colour type {colour}"),
        "interlaced": len(head) > 28 and head[28] == 1,
    }


def _check_chunks(data: bytes, path: Path, verify: bool = False) -> None:
    """Walk the PNG's chunks and verify each CRC, so damage is reported here, in one line,
    rather than by libpng (which prints its own messages to stderr). With ``verify`` the
    image data is also inflated and its size and row filters checked, which catches
    garbage written with valid CRCs (the check and cache commands do this)."""
    pos, end = len(_PNG_SIGNATURE), len(data)
    idat: list[bytes] = []
    while pos < end:
        if pos + 12 > end:
            raise DataError("truncated PNG (a chunk is cut off)", path)
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if pos + 12 + length > end:
            raise DataError(f"truncated PNG (chunk {kind.decode('latin-1')!r} is cut off)", path)
        crc = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        if zlib.crc32(data[pos + 4:pos + 8 + length]) != crc:
            raise DataError(f"corrupt PNG (chunk {kind.decode('latin-1')!r} fails its CRC check)", path)
        if kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + length])
        pos += 12 + length
        if kind == b"IEND":
            if verify:
                _check_image_data(data, b"".join(idat), path)
            return


def _check_image_data(data: bytes, compressed: bytes, path: Path) -> None:
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if colour not in _CHANNELS or width == 0 or height == 0:
        raise DataError(f"corrupt PNG (colour type {colour}, {width}x{height} in its header)", path)
    bits = _CHANNELS[colour] * depth
    try:
        raw = zlib.decompress(compressed)
    except zlib.error as e:
        raise DataError(f"corrupt PNG (image data does not inflate: {e})", path) from None
    passes = [(height, width)] if interlace == 0 else [
        (-(-(height - y0) // dy), -(-(width - x0) // dx)) for y0, x0, dy, dx in _ADAM7]
    expected, starts = 0, []
    for h, w in passes:
        if h > 0 and w > 0:
            row = 1 + -(-(w * bits) // 8)
            starts += range(expected, expected + h * row, row)
            expected += h * row
    if len(raw) != expected:
        raise DataError(f"corrupt PNG (image data holds {len(raw)} bytes; its "
                        f"{width}x{height} header needs {expected})", path)
    filters = np.frombuffer(raw, np.uint8)[np.asarray(starts, dtype=np.int64)]
    if (filters > 4).any():
        raise DataError("corrupt PNG (invalid row filter in the image data)", path)


def read_any_png(path: str | Path, verify: bool = False) -> np.ndarray:
    """Decode a PNG as stored (any depth and channels), with a clear error if it fails.

    ``verify`` also inflates the image data before decoding (see ``_check_chunks``)."""
    path = Path(path)
    png_header(path)
    try:
        data = read_bytes_regular(path, "a PNG image")
    except OSError as e:
        raise DataError(f"cannot read image ({e.strerror})", path) from None
    _check_chunks(data, path, verify)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError("corrupt PNG (the decoder could not read it)", path)
    return img


def read_gray_png(path: str | Path, verify: bool = False) -> np.ndarray:
    """Decode an 8-bit grey PNG to [H, W] uint8.

    A 3-channel PNG whose channels are all equal is accepted as grey (some exporters
    write grey radiographs as RGB), and so is a palette PNG whose palette is grey (its
    pixels are the palette's values; OpenCV and DALI's GRAY decoding agree on them,
    tested). Real colour is rejected, as are alpha channels and 16-bit PNGs, whose
    windowing hbseg cannot guess (see ``check_depth``). Interlaced PNGs are read like any
    other. ``verify``: see ``read_any_png``.
    """
    path = Path(path)
    info = png_header(path)
    check_depth(info, path, 1)
    if info["colour"] in _ALPHA:
        raise DataError(f"{info['colour']} PNG with an alpha channel; expected 8-bit grey", path)
    img = read_any_png(path, verify)
    if img.ndim == 3:
        if img.shape[2] == 4:
            raise DataError(f"{info['colour']} PNG with an alpha channel; expected 8-bit grey", path)
        if not (np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])):
            raise DataError(f"{info['colour']} PNG with real colour (channels differ); expected 8-bit grey",
                            path)
        img = np.ascontiguousarray(img[..., 0])
    return img


_ALPHA = ("grey+alpha", "RGBA")


def check_depth(info: dict, path: Path, channels: int = 1) -> None:
    """The one depth rule of every image reader, training and inference alike: 8 bits per
    channel (palette indices of any depth too, for colour). A 16-bit image is refused, not
    scaled: radiographs often hold 12 bits in 16, and no fixed scaling is right for all of
    them (divided by 257, a 12-bit image turns nearly black). The message gives the range
    the pixels use, so the conversion can be chosen."""
    depth, expected = info["bit_depth"], "8-bit grey" if channels == 1 else "8-bit colour"
    if depth == 8 or (info["colour"] == "palette" and channels == 3):
        return
    hint = "convert it, choosing the intensity window yourself"
    if depth == 16:
        try:
            top = int(read_any_png(path).max())
        except (DataError, ValueError):
            top = None
        if top is not None:
            bits = max(1, top.bit_length())
            hint = (f"its largest value is {top}, so {bits} of its 16 bits are used; convert it, "
                    f"choosing the intensity window yourself, e.g. value * 255 / {2 ** bits - 1}")
    raise DataError(f"{depth}-bit {info['colour']} PNG; expected {expected} ({hint})", path)
