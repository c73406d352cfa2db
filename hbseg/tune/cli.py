"""``hbseg-tune``: a thin click adapter over ``hbseg.tune.run_tune``."""

from __future__ import annotations

from pathlib import Path

import click

from hbseg.cli_common import debug_option, main_entry

__all__ = ["tune", "main"]


def _numbers(kind):
    def parse(ctx, param, value: str | None):
        if value is None:
            return None
        try:
            return tuple(kind(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None

    return parse


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("oof", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for thresholds.json, min_sizes.json, weights.json and "
                   "tune-report.json, .txt and .png.")
@click.option("--thresholds", "grid", callback=_numbers(float), default=None,
              help="Candidate thresholds, comma-separated [default: 0.05,0.10,...,0.95].")
@click.option("--default-threshold", default=0.5, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="The untuned baseline (always a candidate).")
@click.option("--min-sizes", "sizes", callback=_numbers(int), default=None,
              help="Candidate minimum object sizes in pixels, e.g. 0,100,500 "
                   "[default: 0 and 20 sizes from 2e-5 to 2e-2 of the image area].")
@click.option("--weight-step", default=0.1, show_default=True, type=float,
              help="Several OOF folders: per-class weights are searched in these steps.")
@click.option("--no-thresholds", is_flag=True, help="Keep --default-threshold for every class.")
@click.option("--no-min-sizes", is_flag=True, help="Do not tune minimum object sizes.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--quiet", is_flag=True, help="No progress bar.")
@debug_option
def tune(oof, out, grid, default_threshold, sizes, weight_step, no_thresholds, no_min_sizes,
         device, quiet, debug) -> None:
    """Choose per-class thresholds and minimum object sizes (and, given several OOF folders,
    per-class soft-vote weights) that maximise mean Dice on out-of-fold predictions.

    OOF is a folder written by `hbseg-kfold oof`; give one per model to tune an ensemble.
    The report shows each class's Dice before and after each step, in sample (optimistic)
    and cross-validated (chosen on the other folds, scored on the held-out one);
    tune-report.png draws it per class, with the chosen thresholds and minimum sizes.

    \b
    Then:
      hbseg-infer --checkpoint m.pt --data data/test --out sub.csv \\
          --thresholds OUT/thresholds.json --min-sizes OUT/min_sizes.json
      hbseg-ensemble --probs a/ --probs b/ --class-weights OUT/weights.json \\
          --thresholds OUT/thresholds.json --min-sizes OUT/min_sizes.json --out sub.csv
    """
    from .config import DEFAULT_THRESHOLDS, TuneConfig
    from .report import format_report
    from .tuner import run_tune

    cfg = TuneConfig(
        oof=tuple(str(p) for p in oof), out=str(out), thresholds=grid or DEFAULT_THRESHOLDS,
        default_threshold=default_threshold, min_sizes=sizes, weight_step=weight_step,
        tune_thresholds=not no_thresholds, tune_min_sizes=not no_min_sizes, device=device,
        progress=not quiet)
    report = run_tune(cfg)
    click.echo(format_report(report))
    click.echo("wrote " + ", ".join(Path(f).name for f in report["files"]) + f" in {out}")


main = main_entry(tune)
