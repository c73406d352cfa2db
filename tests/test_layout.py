import pandas as pd
import pytest

from hbseg.data import assign_folds, load_cache_index, scan_split


def test_folds_group_patients(tiny_root):
    df = scan_split(tiny_root / "train")
    assert (df.groupby("id")["fold"].nunique() == 1).all()
    assert df.groupby("id").size().eq(2).all()


def test_folds_deterministic_and_balanced():
    ids = [f"ID{i:03d}" for i in range(23)]
    a, b = assign_folds(ids), assign_folds(reversed(ids))
    assert a == b
    sizes = pd.Series(a).value_counts()
    assert set(sizes.index) == set(range(5)) and sizes.max() - sizes.min() <= 1


def test_default_exclusion_drops_named_patients(tmp_path, tiny_root):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(tiny_root / "train", root / "train")
    first = sorted(p.name for p in (root / "train" / "DCM").iterdir())[0]
    assert first not in scan_split(root / "train", exclude=[first])["id"].values
    assert first in scan_split(root / "train", exclude=())["id"].values


def test_cache_index_paths_resolve(tiny_cache):
    df = load_cache_index(tiny_cache)
    for col in ("image_path", "json_path", "mask_path"):
        assert all(pd.Series(df[col]).map(lambda p: __import__("os").path.isfile(p)))
    assert {"id", "image_name", "height", "width", "fold"} <= set(df.columns)


@pytest.mark.parametrize("split", ["train", "test"])
def test_resolve_split_accepts_root_or_split(tiny_root, split):
    from hbseg.data import resolve_split

    assert resolve_split(tiny_root, split) == tiny_root / split
    assert resolve_split(tiny_root / split, split) == tiny_root / split
