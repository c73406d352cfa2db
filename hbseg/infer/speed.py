"""Inference throughput without data loading (an upper bound for ``hbseg-infer``).

``python -m hbseg.infer.speed CKPT [--device cuda] [--height 2048 --width 2048]`` times a
few prediction modes (plain, flip TTA, sliding window, window + flip, three scales) on a
random image already on the device: warm-up first, the device synchronised around the
timed region, per-image time and images/s reported, JSON rows written with ``--out``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import torch

from hbseg.cli_common import debug_option, main_entry

__all__ = ["measure", "DEFAULT_MODES", "benchmark"]

DEFAULT_MODES: dict[str, dict] = {
    "plain": {},
    "plain+hflip": {"tta_hflip": True},
    "window1024/512": {"window": 1024, "stride": 512},
    "window1024/512+hflip": {"window": 1024, "stride": 512, "tta_hflip": True},
    "scales0.8,1,1.5": {"scales": (0.8, 1.0, 1.5)},
}


def measure(predictor, height: int = 2048, width: int = 2048, n: int = 10, warmup: int = 2,
            full: bool = True) -> dict:
    """Time ``predict_probs`` (+ post-processing and RLE encoding with ``full``) per image."""
    from .rle import encode_masks

    x = torch.randn(1, 1, height, width, device=predictor.device)
    sync = torch.cuda.synchronize if predictor.device.type == "cuda" else (lambda: None)

    def one() -> None:
        probs = predictor.predict_probs(x)
        if full:
            encode_masks(predictor.postprocess(probs))

    for _ in range(warmup):
        one()
    sync()
    start = time.perf_counter()
    for _ in range(n):
        one()
    sync()
    seconds = time.perf_counter() - start
    return {"height": height, "width": width, "images": n, "seconds": round(seconds, 4),
            "ms_per_image": round(1000 * seconds / n, 2), "images_per_s": round(n / seconds, 3),
            "device": str(predictor.device), "postprocess_and_rle": full}


def benchmark(checkpoint: str, device: str = "auto", modes: dict[str, dict] | None = None,
              **kw) -> list[dict]:
    from .predictor import Predictor

    rows = []
    for name, opts in (modes or DEFAULT_MODES).items():
        predictor = Predictor([checkpoint], device=device, **opts)
        rows.append({"mode": name, **measure(predictor, **kw)})
    return rows


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--device", default="auto", show_default=True)
@click.option("--height", default=2048, show_default=True, type=click.IntRange(32))
@click.option("--width", default=2048, show_default=True, type=click.IntRange(32))
@click.option("--n", "n", default=10, show_default=True, type=click.IntRange(1))
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(0))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the rows as JSON here.")
@debug_option
def cli(checkpoint: str, device: str, height: int, width: int, n: int, warmup: int,
        out: Path | None, debug: bool) -> None:
    """Images/s of CHECKPOINT with and without sliding window and TTA."""
    rows = benchmark(checkpoint, device, height=height, width=width, n=n, warmup=warmup)
    for r in rows:
        click.echo(f"{r['mode']:<24} {r['ms_per_image']:>9.1f} ms/img {r['images_per_s']:>8.2f} img/s")
    if out is not None:
        from hbseg.atomic import atomic_write_text

        atomic_write_text(out, json.dumps(rows, indent=2) + "\n")


main = main_entry(cli)

if __name__ == "__main__":
    main()
