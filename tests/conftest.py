"""Shared fixtures: tiny synthetic data sets made by the library itself, and device skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _paths import REAL_HANDS_ENV, real_hands_candidates, real_hands_dir


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One intra-op thread for the whole suite: the models here are tiny, and on a shared
    2-core runner OpenMP's spinning threads made them up to ten times slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run_main(entry, args, monkeypatch) -> int:
    """Run a console-script entry point in-process; returns its exit code."""
    import sys

    monkeypatch.setattr(sys, "argv", ["prog", *map(str, args)])
    try:
        entry()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def make_dataset(root: Path, ids: int, size: int, seed: int = 0, test_ids: int = 1) -> Path:
    from hbseg.data.synth import SynthConfig, generate_dataset

    generate_dataset(root, SynthConfig(ids=ids, size=size, seed=seed, test_ids=test_ids),
                     workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """4 train patients (8 images) and 1 test patient at 256 px, with its mask cache built.

    Session-scoped and shared: tests must not modify it (copy it first).
    """
    from hbseg.data import build_cache

    root = make_dataset(tmp_path_factory.mktemp("tiny") / "data", ids=4, size=256)
    build_cache(root, workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_cache(tiny_root) -> Path:
    return tiny_root / "hbseg-cache"


@pytest.fixture
def real_hands() -> list[Path]:
    """The real radiographs' PNGs (see tests/_paths.py). Missing, they skip the test on CPU
    and fail it on a CUDA machine or when $HBSEG_REAL_HANDS is set, so that a GPU session
    cannot pass without having run them."""
    folder = real_hands_dir()
    if folder is None:
        looked = ", ".join(map(str, real_hands_candidates()))
        msg = (f"real radiographs not found (looked in {looked}); carry tests/data/real-hands "
               f"(a copy of ../shared/data/real-hands) or set {REAL_HANDS_ENV}")
        if _has_cuda() or os.environ.get(REAL_HANDS_ENV):
            pytest.fail(msg)
        pytest.skip(msg)
    return sorted(folder.glob("*.png"))
