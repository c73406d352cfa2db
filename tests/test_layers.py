"""The package's architecture, as a contract: the layers in pyproject.toml hold
(import-linter), and no two modules import each other, directly or round a circle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_layer_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    r = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_no_module_imports_round_a_circle():
    grimp = pytest.importorskip("grimp")  # import-linter's own import graph
    g = grimp.build_graph("hbseg")
    # a package's __init__ re-exporting its modules is not a circle of the code
    graph = {m: {d for d in g.find_modules_directly_imported_by(m)
                 if not m.startswith(d + ".") and not d.startswith(m + ".")}
             for m in g.modules}
    assert _cycles(graph) == []


@pytest.mark.parametrize("old, name, new", [
    ("hbseg.dali_pipes", "build_loader", "hbseg.loaders"),
    ("hbseg.dali_pipes", "LOADERS", "hbseg.loaders"),
    ("hbseg.dali_pipes", "TorchLoader", "hbseg.torch_loaders"),
    ("hbseg.dali_pipes", "BaselineLoader", "hbseg.torch_loaders"),
    ("hbseg.dali_pipes.factory", "build_loader", "hbseg.loaders"),
])
def test_moved_names_still_import_with_a_warning(old, name, new):
    import importlib

    with pytest.warns(DeprecationWarning, match=f"moved to {new}.{name}"):
        value = getattr(importlib.import_module(old), name)
    assert value is getattr(importlib.import_module(new), name)
