"""One name → loader back-end mapping, so the CLIs and the benchmark pick back-ends by name.

It sits above both families of back-ends (``hbseg.dali_pipes`` and ``hbseg.torch_loaders``),
so that the DALI package, which other projects import, does not depend on its alternative.
Back-end modules are imported inside ``build_loader``: DALI is an optional dependency, and
choosing the torch back-end must work (and ``--help`` stay fast) without it.
"""

from __future__ import annotations

import difflib

import pandas as pd

from hbseg.dali_pipes.config import LoaderConfig
from hbseg.dali_pipes.loader_base import Loader
from hbseg.errors import ConfigError

__all__ = ["LOADERS", "build_loader"]

LOADERS: tuple[str, ...] = ("dali", "dali-cache", "torch", "baseline")


def _unknown(kind: str) -> ConfigError:
    close = difflib.get_close_matches(str(kind), LOADERS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown loader {kind!r}; choose one of {', '.join(LOADERS)}{hint}")


def build_loader(kind: str, index: pd.DataFrame, cfg: LoaderConfig, mode: str = "train",
                 device: str = "cpu") -> Loader:
    """Build the ``kind`` back-end over the samples of ``index`` (``load_cache_index``)."""
    if kind not in LOADERS:
        raise _unknown(kind)
    if kind == "dali":
        from hbseg.dali_pipes.dali_loader import DaliLoader

        return DaliLoader(index, cfg, mode, device)
    if kind == "dali-cache":
        if not str(device).startswith("cuda"):
            raise ConfigError("dali-cache keeps the data set in GPU memory and needs --device cuda")
        from hbseg.dali_pipes.cache_loader import DaliCacheLoader

        return DaliCacheLoader(index, cfg, mode, device)
    if kind == "torch":
        from hbseg.torch_loaders.torch_loader import TorchLoader

        return TorchLoader(index, cfg, mode, device)
    from hbseg.torch_loaders.baseline_loader import BaselineLoader

    return BaselineLoader(index, cfg, mode, device)
