"""A data set description: what hbseg needs to know about a data set that is not the hands.

No description means the hand-bone competition (its layout, its 29 classes, grey images),
exactly as before. Any other 2D multi-label data set is described by a small YAML or JSON
file, given with ``--spec FILE`` or found as ``ROOT/hbseg-dataset.yaml``::

    name: spine
    classes: [L1, L2, L3, L4, L5, S1]     # 1-32 names, in output order
    channels: 1                           # 1 (grey) or 3 (colour, RGB)
    images: images                        # folder under ROOT: <name>.png or ID/<name>.png
    labels: labels                        # folder (or, for coco, a file) under ROOT
    format: index-png                     # polygon-json | coco | index-png | class-png
    values: {1: L1, 2: L2, 3: L3, 4: L4, 5: L5, 6: S1}   # index-png only
    ignore: [255]                         # index-png only: values that are background

The description is saved in the mask cache's ``meta.json`` (key ``dataset``) and, through
the model card, in every checkpoint, so a model trained on one class list cannot silently
be used on another.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

from hbseg.errors import CheckpointError, ConfigError

__all__ = ["DatasetSpec", "FORMATS", "SPEC_NAMES", "MAX_CLASSES", "load_spec", "find_spec",
           "resolve_spec", "cache_spec", "check_cache_spec", "check_same_classes"]

FORMATS = ("polygon-json", "coco", "index-png", "class-png")
SPEC_NAMES = ("hbseg-dataset.yaml", "hbseg-dataset.yml", "hbseg-dataset.json")
MAX_CLASSES = 32  # a packed mask pixel holds 32 bits


@dataclass(frozen=True)
class DatasetSpec:
    """One data set: its classes in order, image channels, and where its labels are.

    ``values`` (index-png): pixel value → class name; by default value ``k`` is class
    ``k - 1`` and 0 is background. ``ignore``: pixel values read as background.
    """

    name: str
    classes: tuple[str, ...]
    format: str
    channels: int = 1
    images: str = "images"
    labels: str = "labels"
    values: tuple[tuple[int, str], ...] | None = None
    ignore: tuple[int, ...] = ()
    source: str | None = field(default=None, compare=False)  # the file it was read from

    def __post_init__(self) -> None:
        where = self.source

        def bad(msg: str) -> None:
            raise ConfigError(f"data set description: {msg}", where)

        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "ignore", tuple(int(v) for v in self.ignore))
        if not str(self.name).strip():
            bad("name must not be empty")
        if not 1 <= len(self.classes) <= MAX_CLASSES:
            bad(f"{len(self.classes)} classes; give 1 to {MAX_CLASSES} (a packed mask holds 32 bits)")
        for c in self.classes:
            if not c.strip() or any(ch in c for ch in ',"\n'):
                bad(f"class name {c!r} must be non-empty without commas, quotes or newlines "
                    "(it becomes a CSV field)")
        dup = [c for c in self.classes if self.classes.count(c) > 1]
        if dup:
            bad(f"class {dup[0]!r} is listed twice")
        if self.format not in FORMATS:
            close = difflib.get_close_matches(str(self.format), FORMATS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            bad(f"unknown format {self.format!r}{hint}; choose one of {', '.join(FORMATS)}")
        if self.channels not in (1, 3):
            bad(f"channels must be 1 (grey) or 3 (colour), got {self.channels}")
        if self.values is not None:
            if self.format != "index-png":
                bad("values (a pixel value → class table) is for format index-png only")
            pairs = tuple((int(v), str(c)) for v, c in self.values)
            object.__setattr__(self, "values", pairs)
            for v, c in pairs:
                if c not in self.classes:
                    bad(f"values: {v} maps to {c!r}, which is not in classes")
                if not 0 <= v <= 65535:
                    bad(f"values: pixel value {v} is outside 0..65535")
            if len({v for v, _ in pairs}) != len(pairs):
                bad("values: a pixel value is listed twice")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def value_table(self) -> dict[int, int]:
        """index-png: pixel value → class index (background values absent)."""
        if self.values is None:
            return {k + 1: k for k in range(self.num_classes)}
        index = {c: i for i, c in enumerate(self.classes)}
        return {v: index[c] for v, c in self.values}

    def to_dict(self) -> dict:
        d = {"name": self.name, "classes": list(self.classes), "format": self.format,
             "channels": self.channels, "images": self.images, "labels": self.labels}
        if self.values is not None:
            d["values"] = {int(v): c for v, c in self.values}
        if self.ignore:
            d["ignore"] = list(self.ignore)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str | Path | None = None) -> DatasetSpec:
        src = None if source is None else str(source)
        if not isinstance(d, dict):
            raise ConfigError("data set description is not a mapping", src)
        known = {"name", "classes", "format", "channels", "images", "labels", "values", "ignore"}
        unknown = sorted(set(d) - known)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"data set description: unknown key {unknown[0]!r}{hint}", src)
        for key in ("name", "classes", "format"):
            if key not in d:
                raise ConfigError(f"data set description: {key!r} is required", src)
        d = dict(d)
        if not isinstance(d["classes"], (list, tuple)):
            raise ConfigError("data set description: classes must be a list of names", src)
        values = d.pop("values", None)
        if values is not None:
            if not isinstance(values, dict):
                raise ConfigError("data set description: values must map pixel values to "
                                  "class names", src)
            try:
                values = tuple((int(v), c) for v, c in values.items())
            except (TypeError, ValueError):
                raise ConfigError("data set description: values keys must be integers", src) from None
        try:
            return cls(**d, values=values, source=src)
        except TypeError as e:
            raise ConfigError(f"data set description: {e}", src) from None


def load_spec(path: str | Path) -> DatasetSpec:
    """Read a description from YAML (``.yaml``/``.yml``) or JSON."""
    from hbseg.settings_file import read_mapping

    return DatasetSpec.from_dict(read_mapping(path, "data set description"), source=path)


def find_spec(root: str | Path) -> Path | None:
    """``ROOT/hbseg-dataset.yaml`` (or ``.yml``/``.json``) if there is one."""
    root = Path(root)
    for name in SPEC_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def resolve_spec(root: str | Path, spec: str | Path | DatasetSpec | None = None) -> DatasetSpec | None:
    """The description for data root ``root``: ``spec`` (a file or an object) if given,
    else the one found in ``root``; ``None`` means the hand competition."""
    if isinstance(spec, DatasetSpec):
        return spec
    if spec is not None:
        return load_spec(spec)
    found = find_spec(root) if Path(root).is_dir() else None
    return None if found is None else load_spec(found)


def cache_spec(cache_dir: str | Path) -> DatasetSpec | None:
    """The description a mask cache was built from (its ``meta.json``); ``None`` for the hands."""
    meta_path = Path(cache_dir) / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    d = meta.get("dataset") if isinstance(meta, dict) else None
    return None if d is None else DatasetSpec.from_dict(d, source=meta_path)


def check_cache_spec(cache_dir: str | Path, spec: DatasetSpec | None) -> None:
    """A cache built from another description than ``spec`` is an error, not rebuilt in
    passing: another run may rely on its masks."""
    if spec is not None and (Path(cache_dir) / "index.csv").is_file() and cache_spec(cache_dir) != spec:
        raise ConfigError("this mask cache was built from another data set description; rebuild "
                          "it with `hbseg-data cache ROOT --spec FILE --force`", cache_dir)


def check_same_classes(have, want, path: str | Path | None, what: str = "checkpoint") -> None:
    """A clear error when a model's class list is not the data set's."""
    have, want = tuple(have), tuple(want)
    if have == want:
        return

    def show(names: tuple) -> str:
        return ", ".join(names[:6]) + (f", … ({len(names)} in all)" if len(names) > 6 else "")

    raise CheckpointError(
        f"the {what} predicts {len(have)} classes ({show(have)}) but this data set has "
        f"{len(want)} ({show(want)}); use a model trained on this data set's class list", path)
