"""The range of every training setting, in one table: checked on every ``TrainConfig``
(``__post_init__``) and, naming the file and the key, on a ``--config`` file
(``config.read_train_settings``) before anything is built from it.

Types come from the dataclass annotations (``config._fits``); this table says which
values of the right type make sense. The augmentation and normalisation settings are
checked by their own classes (``AugmentConfig``, ``NormalizeConfig``); ``nested_problem``
finds which key of such a mapping they refuse.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

__all__ = ["FIELD_RULES", "field_problem", "nested_problem", "option_name"]

Rule = tuple[Callable[[Any], bool], str]


def _int(lo: int, hi: int | None = None) -> Callable[[Any], bool]:
    return lambda v: (isinstance(v, numbers.Integral) and not isinstance(v, bool)
                      and int(v) >= lo and (hi is None or int(v) <= hi))


def _real(lo: float, hi: float = math.inf, lo_open: bool = False,
          hi_open: bool = False) -> Callable[[Any], bool]:
    def ok(v) -> bool:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            return False
        x = float(v)
        return (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)
    return ok


def _optional(rule: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or rule(v)


def _one_of(*names) -> Callable[[Any], bool]:
    return lambda v: v in names


def _device(v) -> bool:
    if not isinstance(v, str):
        return False
    return v in ("cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())


# field → (check, what a valid value is); fields absent here take any value of their type
FIELD_RULES: dict[str, Rule] = {
    "size": (_int(16), "an integer of at least 16"),
    "crop": (_optional(_int(16)), "null or an integer of at least 16"),
    "batch_size": (_int(1), "an integer of at least 1"),
    "val_batch_size": (_optional(_int(1)), "null or an integer of at least 1"),
    "epochs": (_int(1), "an integer of at least 1"),
    "stop_after": (_optional(_int(1)), "null or an integer of at least 1"),
    "val_every": (_int(1), "an integer of at least 1"),
    "log_every": (_int(1), "an integer of at least 1"),
    "workers": (_optional(_int(0)), "null or an integer of at least 0"),
    "seed": (_int(0, 2**32 - 1), "an integer from 0 to 2**32 - 1 (numpy's seed range)"),
    "lr": (_real(0, lo_open=True), "a positive finite number"),
    "weight_decay": (_real(0), "a finite number of at least 0"),
    "warmup_epochs": (_real(0), "a finite number of at least 0"),
    "min_lr_ratio": (_real(0, 1), "a number from 0 to 1"),
    "fold": (_int(-1), "a fold number, or -1 (no validation)"),
    "grad_clip": (_optional(_real(0)), "null or a finite number of at least 0 (0: no clipping)"),
    "pseudo_weight": (_real(0, lo_open=True), "a positive finite number"),
    "roi_crop": (_optional(_real(0, 10, hi_open=True)), "null or a margin from 0 to below 10"),
    "canonical_hand": (_one_of(None, "left", "right"), "null, 'left' or 'right'"),
    "device": (_device, "'cpu', 'cuda' or 'cuda:N'"),
}


def field_problem(name: str, value) -> str | None:
    """``expected …`` when ``value`` is out of ``name``'s range, else None."""
    rule = FIELD_RULES.get(name)
    if rule is None or rule[0](value):
        return None
    return f"expected {rule[1]}"


def option_name(name: str) -> str:
    """The command-line spelling of a field, for messages about options."""
    return f"--{name.replace('_', '-')}"


def nested_problem(cls, values: dict) -> tuple[str | None, str] | None:
    """Build ``cls(**values)`` (``AugmentConfig``, ``NormalizeConfig``); when it refuses,
    ``(key, message)``: the first key it refuses on its own (the others at their defaults),
    or ``None`` when only the combination fails. None when it builds."""
    try:
        cls(**values)
        return None
    except (ValueError, TypeError) as e:
        whole = str(e)
    for key, value in values.items():
        try:
            cls(**{key: value})
        except (ValueError, TypeError) as e:
            return key, str(e)
    return None, whole
