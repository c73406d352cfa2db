"""Per-class ensemble weights: ``{"class name": [weight per member], …}`` (hbseg-tune's
weights.json), shared by ``hbseg-infer``'s in-memory ensemble and ``hbseg-ensemble``'s
soft vote so both blend the same way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hbseg.errors import ConfigError

from .postprocess import _check_classes, _read_class_json

__all__ = ["load_class_weights", "class_weight_table"]


def _check_member_weights(doc: Mapping, members: int, path: Path | None) -> None:
    for k, v in doc.items():
        ok = (isinstance(v, (list, tuple)) and len(v) == members
              and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in v)
              and sum(v) > 0)
        if not ok:
            raise ConfigError(f"weights for {k!r} are {v!r}; expected {members} numbers >= 0, "
                              "not all 0 (one per ensemble member, in order)", path)


def load_class_weights(path: str | Path, class_names, members: int) -> dict[str, list[float]]:
    """Read ``{"class name": [weight per member], …}``. A weight may be 0 (that member sits
    the class out); each class's weights must sum above 0."""
    path = Path(path)
    doc = _read_class_json(path, "weights")
    _check_classes(doc, class_names, path, "weights")
    _check_member_weights(doc, members, path)
    return {k: [float(x) for x in v] for k, v in doc.items()}


def class_weight_table(weights: Sequence[float], class_names: Sequence[str],
                       per_class: Mapping[str, Sequence[float]] | None = None,
                       path: str | Path | None = None) -> np.ndarray:
    """``[members, classes]`` float64 blending weights, each column summing to 1.

    ``weights``: one per member, for every class; ``per_class`` replaces them for the
    classes it names (``path``, where it was read from, names it in errors).
    """
    w = np.asarray(weights, dtype=np.float64)
    table = np.repeat(w[:, None], len(class_names), axis=1)
    if per_class:
        src = None if path is None else Path(path)
        _check_classes(per_class, class_names, src, "weights")
        _check_member_weights(per_class, len(w), src)
        for c, name in enumerate(class_names):
            if name in per_class:
                table[:, c] = per_class[name]
    return table / table.sum(0, keepdims=True)
