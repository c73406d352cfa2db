"""Hand ROI crop and handedness: per-image geometry folded into the one affine matrix.

Teams of the competition cropped each radiograph to the hand and mirrored left hands into
right ones. Both are options here (off by default) and neither adds a graph operator: the
ROI window and the mirror go into the 2x3 matrix of :func:`hbseg.dali_pipes.draw.sample_matrix`
that DALI's ``fn.warp_affine`` (or OpenCV in the torch back-end) already applies.

* **Handedness.** :func:`hand_side` reads the competition's ``_L``/``_R`` suffix; with a
  canonical hand, images of the other side are flipped (XOR-ed with the random flip). An
  image whose side is unknown is left as it is.
* **ROI.** Training and eval take the label bounding box (every class's pixels, from the
  packed mask), inference an intensity bounding box (Otsu on a quarter-resolution read):
  both are widened by ``margin`` (a fraction of the box's longer side, on each side) and
  made square, centred on the box (:func:`square_window`). The window may reach past the
  image: outside is black, as for any warp.

Label boxes are computed once per mask file and memoised in ``ROI_MEMO`` beside the mask
cache (keyed by path, size and modification time), so a run re-reads no mask it has seen.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from hbseg.errors import ConfigError, DataError

from .draw import SampleDraw, sample_matrix

__all__ = ["HANDS", "ROI_MEMO", "hand_side", "needs_flip", "mask_bbox", "intensity_bbox",
           "square_window", "label_windows", "SampleGeometry", "sample_geometry",
           "infer_matrix", "check_geometry", "loader_geometry"]

HANDS = ("left", "right")
ROI_MEMO = "roi-bbox.json"
_SIDE = re.compile(r"_([LR])\.png$", re.IGNORECASE)


def check_geometry(roi_margin: float | None, canonical_hand: str | None) -> None:
    """A ConfigError for a margin that is not a finite number >= 0 or an unknown hand."""
    if roi_margin is not None and not 0.0 <= float(roi_margin) < 10.0:
        raise ConfigError(f"--roi-crop must be a margin in [0, 10) (a fraction of the hand's "
                          f"box, e.g. 0.05), got {roi_margin}")
    if canonical_hand is not None and canonical_hand not in HANDS:
        raise ConfigError(f"--canonical-hand must be one of {', '.join(HANDS)}, "
                          f"got {canonical_hand!r}")


def hand_side(name: str | Path) -> str | None:
    """``"left"``/``"right"`` from a name ending in ``_L.png``/``_R.png``; else None."""
    m = _SIDE.search(Path(str(name)).name)
    return None if m is None else ("left" if m.group(1).upper() == "L" else "right")


def needs_flip(name: str | Path, canonical_hand: str | None) -> bool:
    """Whether the image must be mirrored to show the canonical hand (unknown side: no)."""
    side = hand_side(name)
    return canonical_hand is not None and side is not None and side != canonical_hand


def _box(nonzero: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` (x1, y1 exclusive) of the True pixels of a 2-D array."""
    rows, cols = np.flatnonzero(nonzero.any(axis=1)), np.flatnonzero(nonzero.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def mask_bbox(packed: np.ndarray) -> tuple[int, int, int, int] | None:
    """Box of every labelled pixel of a packed ``[H, W, 4]`` mask (any class); None if empty."""
    return _box(np.asarray(packed.reshape(packed.shape[0], packed.shape[1], -1).any(axis=2)))


def intensity_bbox(path: str | Path) -> tuple[int, int, int, int] | None:
    """Box of the bright (Otsu) pixels of an image, from a quarter-resolution grey read,
    in full-resolution pixels; None for a blank image."""
    import cv2

    small = cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_4)
    if small is None:
        raise DataError("cannot read the image to find the hand", path)
    if int(small.max()) == int(small.min()):
        return None
    _, fg = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    box = _box(fg > 0)
    if box is None:
        return None
    from hbseg.data.images import png_header

    info = png_header(path)
    h, w = int(info["height"]), int(info["width"])
    fy, fx = h / small.shape[0], w / small.shape[1]
    x0, y0, x1, y1 = box
    return (int(np.floor(x0 * fx)), int(np.floor(y0 * fy)),
            min(w, int(np.ceil(x1 * fx))), min(h, int(np.ceil(y1 * fy))))


def square_window(box, margin: float, shape_hw) -> tuple[float, float, float, float]:
    """``(x0, y0, side, side)``: the square about ``box``'s centre whose side is the box's
    longer side plus ``margin`` of it on each side. No box (empty mask, blank image): the
    square about the image's centre on its longer side."""
    h, w = float(shape_hw[0]), float(shape_hw[1])
    if box is None:
        box = (0, 0, w, h)
        margin = 0.0
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0, 1.0) * (1.0 + 2.0 * float(margin))
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    return cx - 0.5 * side, cy - 0.5 * side, side, side


def _memo_key(path: str) -> str:
    st = os.stat(path)
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


def _cache_dir(mask: Path) -> Path:
    """The mask cache holding ``mask`` (the folder with ``index.csv``), else its folder."""
    for parent in list(mask.parents)[:3]:
        if (parent / "index.csv").is_file():
            return parent
    return mask.parent


def label_windows(mask_paths, shapes_hw, margin: float, memo_dir: str | Path | None = None
                  ) -> np.ndarray:
    """``[N, 4]`` ROI windows from the packed masks' label boxes (see ``square_window``).

    Boxes are memoised in ``memo_dir/ROI_MEMO`` (default: the mask cache holding the first
    mask); a memo that cannot be written is skipped silently (read-only caches)."""
    from hbseg.data.masks import read_packed_png

    paths = [str(p) for p in mask_paths]
    if memo_dir is None and paths:
        memo_dir = _cache_dir(Path(paths[0]))
    memo_file = Path(memo_dir) / ROI_MEMO if memo_dir is not None else None
    memo: dict = {}
    if memo_file is not None and memo_file.is_file():
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, ValueError):
            memo = {}
    changed = False
    out = np.zeros((len(paths), 4), np.float64)
    for i, (p, hw) in enumerate(zip(paths, np.asarray(shapes_hw).reshape(-1, 2), strict=True)):
        key = _memo_key(p)
        if key not in memo:
            for old in [k for k in memo if k.startswith(f"{p}|")]:
                del memo[old]  # the mask was rebuilt: its old box goes
            box = mask_bbox(read_packed_png(p))
            memo[key] = None if box is None else list(box)
            changed = True
        out[i] = square_window(memo[key], margin, hw)
    if changed and memo_file is not None:
        from hbseg.atomic import atomic_write_text

        try:
            atomic_write_text(memo_file, json.dumps(memo) + "\n")
        except OSError:
            pass  # a read-only cache: the boxes are recomputed next time
    return out


class SampleGeometry:
    """Per-row ROI windows and handedness flips of a loader's index (None: off)."""

    def __init__(self, rois: np.ndarray | None = None, flips: np.ndarray | None = None):
        self.rois, self.flips = rois, flips

    @property
    def active(self) -> bool:
        return self.rois is not None or self.flips is not None

    def draw(self, d: SampleDraw, i: int) -> SampleDraw:
        """``d`` with the row's handedness flip XOR-ed into its random flip."""
        if self.flips is not None and self.flips[i]:
            return replace(d, flip=not d.flip)
        return d

    def roi(self, i: int):
        return None if self.rois is None else tuple(self.rois[i])


def sample_geometry(index, roi_margin: float | None, canonical_hand: str | None,
                    shapes_hw=None) -> SampleGeometry:
    """The geometry of every row of a mask-cache ``index`` (``image_name``/``image_path``,
    ``mask_path``; ``shapes_hw`` [N, 2] default to the index's height/width)."""
    check_geometry(roi_margin, canonical_hand)
    flips = rois = None
    if canonical_hand is not None:
        names = index["image_name"] if "image_name" in index.columns else index["image_path"]
        flips = np.array([needs_flip(n, canonical_hand) for n in names], bool)
    if roi_margin is not None:
        if shapes_hw is None and {"height", "width"} <= set(index.columns):
            shapes_hw = index[["height", "width"]].to_numpy(np.float64)
        elif shapes_hw is None:
            from hbseg.data.images import png_header

            hw = [png_header(p) for p in index["image_path"]]
            shapes_hw = np.array([[d["height"], d["width"]] for d in hw], np.float64)
        rois = label_windows(index["mask_path"], shapes_hw, roi_margin)
    return SampleGeometry(rois, flips)


def loader_geometry(cfg, index, shapes_hw=None) -> SampleGeometry:
    """The geometry a loader with ``LoaderConfig`` ``cfg`` applies to the rows of ``index``."""
    if cfg.roi_margin is None and cfg.canonical_hand is None:
        return SampleGeometry()
    if cfg.full_res_mask:
        raise ConfigError("full-resolution eval masks cannot be scored against ROI-cropped or "
                          "mirrored predictions; leave out --val-full-res")
    return sample_geometry(index, cfg.roi_margin, cfg.canonical_hand, shapes_hw)


@lru_cache(maxsize=4096)
def infer_matrix(path: str, size: int, roi_margin: float | None,
                 canonical_hand: str | None) -> np.ndarray | None:
    """The inference matrix of one image (DALI convention, source → ``size²``): the
    intensity ROI and the handedness flip; None when both are off. Memoised, so the
    loader that warps the image and the predictor that maps back share one computation."""
    if roi_margin is None and canonical_hand is None:
        return None
    from hbseg.data.images import png_header

    info = png_header(path)
    hw = (int(info["height"]), int(info["width"]))
    roi = None
    if roi_margin is not None:
        roi = square_window(intensity_bbox(path), roi_margin, hw)
    d = SampleDraw(flip=needs_flip(path, canonical_hand))
    return sample_matrix(d, hw, int(size), None, roi)
