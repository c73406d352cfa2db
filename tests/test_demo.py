"""``make demo`` stays out of ``make test``; its steps run here at the tiniest size so the
demo cannot rot: data, training, test and validation pictures, benchmark, summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hbseg.demo import DemoConfig, loader_figures, run_demo, summary_block
from hbseg.errors import ConfigError

# two loaders, not three: each one is a fresh benchmark process (torch and DALI imports)
TINY = DemoConfig(patients=2, data_size=64, size=64, epochs=1, batch_size=2, val_every=1,
                  workers=1, bench_loaders=("baseline", "dali"), bench_steps=2, progress=False)


@pytest.mark.slow
def test_demo_steps_end_to_end(tmp_path):
    lines: list[str] = []
    s = run_demo(tmp_path / "demo", TINY, log=lines.append)

    for key in ("run_dir", "curves", "checkpoint", "submission", "overlays", "val_overlays",
                "val_overlay"):
        assert s[key] and Path(s[key]).exists(), key
    assert s["test_images"] == 2 and s["val_images"] == 2
    assert 0.0 <= s["mean_dice"] <= 1.0
    bench = s["bench"]
    assert bench is not None
    assert Path(bench["plot"]).is_file() and Path(bench["table"]).is_file()
    assert set(bench["loaders"]) == {"baseline", "dali"}

    text = (tmp_path / "demo" / "summary.txt").read_text()
    assert "mean Dice" in text and "validation fold 0" in text
    assert "loader alone" in text and "CPU s/image" in text and "loader ratio" in text
    if all("error" not in f for f in bench["loaders"].values()):
        assert "dali" in text and "x baseline" in text
    assert text.strip() in "\n".join(lines)  # the block is what the user saw last
    saved = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert saved["mean_dice"] == s["mean_dice"]
    assert json.loads((tmp_path / "demo" / "demo-config.json").read_text())["patients"] == 2
    assert [st["step"].split(":")[0] for st in s["steps"]][-2:] == ["loader benchmark", "summary"]


def test_summary_block_reports_a_failed_loader():
    results = {"runs": [
        {"loader": "bound", "status": "ok"},
        {"loader": "baseline", "status": "ok", "load_images_per_s": 20.0,
         "cpu_s_per_sample_load": 0.05},
        {"loader": "dali", "status": "error", "error": "boom"},
    ]}
    figures = loader_figures(results)
    assert figures["ratios"] == {}
    s = {"out_dir": "d", "wall_s": 1.0, "cpu_s": 2.0, "cores": 2, "run_dir": "d/run",
         "curves": "d/run/curves.png", "submission": "d/s.csv", "test_images": 2,
         "overlays": "d/o", "val_overlay": None, "val_overlays": "d/v", "mean_dice": 0.5,
         "val_dice_original": None, "val_images": 2, "size": 64, "best_epoch": 1, "epochs": 1,
         "data_size": 64, "bench": {"plot": "p", "table": "t", **figures}}
    text = summary_block(s)
    assert "dali FAILED" in text and "baseline 20 img/s" in text and "loader ratio n/a" in text


def test_ratios_from_loader_alone_speed():
    runs = [{"loader": k, "status": "ok", "load_images_per_s": v, "cpu_s_per_sample_load": 0.01}
            for k, v in (("baseline", 10.0), ("torch", 20.0), ("dali", 60.0))]
    assert loader_figures({"runs": runs})["ratios"] == {"dali_vs_baseline": 6.0,
                                                        "dali_vs_torch": 3.0}


@pytest.mark.parametrize("bad", [dict(patients=1), dict(size=512), dict(epochs=0),
                                 dict(bench_loaders=())])
def test_bad_demo_config_names_the_problem(bad):
    with pytest.raises(ConfigError):
        DemoConfig(**bad)
