"""``hbseg-eval``: Dice of submissions against the ground truth and, with ``--report``, the HTML
report beside it; a thin click adapter over :mod:`hbseg.infer.evaluate` and
:mod:`hbseg.report`."""

from __future__ import annotations

from pathlib import Path

import click

from hbseg.cli_common import check_out_file, debug_option, main_entry

_CTX = {"help_option_names": ["-h", "--help"]}


@click.command(context_settings=_CTX)
@click.option("--pred", "preds", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help="Submission CSV; repeat to score several models (side by side in --report).")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="Data root (uses train/), a labelled split folder, or a described data set "
                   "(ROOT/hbseg-dataset.yaml; scored against its mask cache).")
@click.option("--ids", default=None, help="Only these patient IDs, comma-separated (ID001,ID002).")
@click.option("--fold", default=None, type=click.IntRange(0), help="Only this fold's images.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Result file, .json or .csv, with one --pred [default: <pred>.eval.json].")
@click.option("--report", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Also write an HTML report here: images sorted by Dice, ground truth and "
                   "predictions overlaid, per-bone toggles; open DIR/index.html in a browser.")
@click.option("--report-size", default=1024, show_default=True, type=click.IntRange(64),
              help="Longest side of the report's radiographs before zooming to full resolution.")
@click.option("--workers", default=None, type=click.IntRange(1), help="Processes [default: every core].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@debug_option
def evaluate(preds, data, ids, fold, out, report, report_size, workers, quiet, debug) -> None:
    """Per-class and mean Dice of --pred against the JSON ground truth, at original size."""
    from hbseg.infer.config import EvalConfig
    from hbseg.infer.evaluate import evaluate as run_eval
    from hbseg.infer.evaluate import format_table, write_result

    if out and len(preds) > 1:
        raise click.UsageError("--out takes one --pred; with several, each writes <pred>.eval.json")
    check_out_file(out, preds)
    id_list = tuple(i.strip() for i in ids.split(",") if i.strip()) if ids else None
    for pred in preds:
        cfg = EvalConfig(pred=str(pred), data=str(data), out=out, ids=id_list, fold=fold,
                         workers=workers, progress=not quiet)
        result = run_eval(cfg)
        if len(preds) > 1:
            click.echo(f"{pred}:")
        click.echo(format_table(result))
        path = write_result(result, cfg.out_path)
        click.echo(f"wrote {path}")
    if report is not None:
        from . import ReportConfig, build_report

        s = build_report(ReportConfig(preds=tuple(map(str, preds)), data=str(data), out=str(report),
                                      ids=id_list, fold=fold, display_size=report_size,
                                      workers=workers, progress=not quiet))
        click.echo(f"wrote {s['out']}/index.html: {s['images']} images, {len(s['models'])} "
                   f"model(s), {s['bytes'] / 1e6:.1f} MB")


eval_main = main_entry(evaluate)
