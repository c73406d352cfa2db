"""Names a package exports but imports on first use (PEP 562), so that importing the
package stays cheap: torch, DALI and matplotlib load only when a name that needs them is
asked for."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, where: Mapping[str, str],
                 on_missing: Callable[[str, ModuleNotFoundError], None] | None = None):
    """``(__getattr__, __dir__)`` for ``package``: ``where`` maps each lazy name to the
    module holding it (``"config"`` or ``".config"``, relative to the package, or an
    absolute ``"hbseg.…"``). ``on_missing(name, error)`` may turn a missing dependency into a
    clearer error; if it returns, the original error is raised."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str):
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            target = module if module.startswith(("hbseg.", ".")) else f".{module}"
            mod = importlib.import_module(target, package)
        except ModuleNotFoundError as e:
            if on_missing is not None:
                on_missing(name, e)
            raise
        value = getattr(mod, name)
        namespace[name] = value  # once found, a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace.get("__all__", ())) | set(where)
                      | {k for k in namespace if not k.startswith("_")})

    return __getattr__, __dir__
