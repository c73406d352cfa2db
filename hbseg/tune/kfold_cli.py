"""``hbseg-kfold``: train every fold, summarise them, predict out-of-fold probabilities.

``train`` takes every ``hbseg-train`` option (copied from that command, so the two never
drift apart) except ``--fold``, ``--out`` and ``--resume``, which mean something else here.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.core import ParameterSource

from hbseg.cli_common import debug_option, main_entry
from hbseg.train.cli import train as _train_command

__all__ = ["cli", "main"]

_CTX = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_OWN = {"fold", "out", "resume", "overwrite", "debug"}


def _int_list(ctx, param, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated fold numbers, got {value!r}") from None
    if not out or any(v < 0 for v in out):
        raise click.BadParameter(f"expected fold numbers 0, 1, ..., got {value!r}")
    return out


@click.group(context_settings=_CTX)
def cli() -> None:
    """k-fold training and out-of-fold (OOF) predictions for tuning with hbseg-tune."""


@cli.command("train", context_settings=_CTX)
@click.option("--folds", callback=_int_list, default=None,
              help="Folds to train, e.g. 0,1,2,3,4 [default: every fold of the data].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="k-fold folder: DIR/fold-K/ per fold, DIR/kfold.json and "
                                  "DIR/kfold.png.")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Continue DIR: complete folds are skipped, partial ones "
                                  "resume from their last.pt, the others start.")
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace the fold runs already in --out.")
@debug_option
@click.pass_context
def train(ctx: click.Context, folds, out, resume, overwrite, **opts) -> None:
    """Train one model per validation fold, one fold after another, into DIR/fold-K/.

    Every hbseg-train option applies to every fold. DIR/kfold.json gets each fold's best
    validation Dice (mean and per class) and their mean; DIR/kfold.png draws each fold's
    validation Dice per epoch and each class's best Dice across folds.

    \b
    Examples:
      hbseg-kfold train --data data --out runs/kf --encoder resnet18 --size 256 --epochs 30
      hbseg-kfold train --resume runs/kf                  # after a crash or Ctrl-C
    \b
    Several GPUs: one process per fold, each seeing one GPU, all writing into one DIR:
      for k in 0 1 2 3 4; do
        CUDA_VISIBLE_DEVICES=$k hbseg-kfold train --data data --out runs/kf --folds $k ... &
      done; wait
      hbseg-kfold summary runs/kf
    """
    opts.pop("debug", None)
    from hbseg.train.cli import split_compile_option

    src = split_compile_option(opts)
    given = {k: v for k, v in opts.items()
             if ctx.get_parameter_source(src.get(k, k)) == ParameterSource.COMMANDLINE}

    from hbseg.errors import ConfigError
    from hbseg.train.cli import _resolve
    from hbseg.train.kfold import load_kfold_config, train_kfold
    from hbseg.train.resume import resume_config

    try:
        if resume is not None:
            if out is not None and out.resolve() != resume.resolve():
                raise ConfigError("--resume continues in its own folder; leave out --out")
            if opts.get("config") is not None:
                raise ConfigError("--config starts a new k-fold run; --resume continues one "
                                  "with its own settings")
            saved = load_kfold_config(resume)
            typed = _normalise(given)
            base = resume_config(saved, {**typed, "out": str(resume)})
            summary = train_kfold(base, folds, resume=True, given=typed)
        else:
            if out is None:
                raise ConfigError("--out DIR is required (or --resume DIR to continue)")
            base = _resolve({**opts, "out": out, "fold": (folds or [0])[0]}, given, None)
            summary = train_kfold(base, folds, overwrite=overwrite)
    except ConfigError as e:
        raise click.UsageError(str(e), ctx) from None
    click.echo(_summary_text(summary))


def _normalise(given: dict) -> dict:
    """Typed options as TrainConfig holds them (paths as strings, --grad-clip 0 as None)."""
    out = {}
    for k, v in given.items():
        if isinstance(v, Path):
            v = str(v)
        if k == "grad_clip" and v == 0:
            v = None
        out[k] = v
    return out


# the hbseg-train options, less the ones this command defines itself
train.params[:0] = [p for p in _train_command.params if p.name not in _OWN]


def _summary_text(s: dict) -> str:
    lines = []
    for k, f in s["folds"].items():
        d = "-" if f["best_mean_dice"] is None else f"{f['best_mean_dice']:.4f}"
        state = "finished" if f["finished"] else f"{f['epochs_done']}/{s['epochs']} epochs"
        lines.append(f"fold {k}: best mean Dice {d} (epoch {f['best_epoch']}, {state})")
    missing = s.get("folds_missing")
    if missing:
        lines.append(f"missing: fold{'s' * (len(missing) > 1)} {', '.join(map(str, missing))} "
                     f"(planned, no epoch finished); continue with: hbseg-kfold train --resume "
                     f"{s['out']}")
    if s.get("folds_not_planned"):
        lines.append(f"not planned: the data's fold{'s' * (len(s['folds_not_planned']) > 1)} "
                     f"{', '.join(map(str, s['folds_not_planned']))} (never asked for with --folds)")
    mean = "-" if s["mean_dice"] is None else f"{s['mean_dice']:.4f}"
    planned = s.get("folds_planned")
    of = f" of {len(planned)} planned" if planned and len(planned) != s["folds_scored"] else ""
    lines.append(f"mean over {s['folds_scored']}{of} folds: {mean}   "
                 f"({s['out']}/kfold.json, kfold.png)")
    return "\n".join(lines)


@cli.command("summary", context_settings=_CTX)
@click.argument("dir_", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole summary as JSON.")
@debug_option
def summary(dir_: Path, as_json: bool, debug: bool) -> None:
    """Rebuild DIR/kfold.json and DIR/kfold.png from every fold folder (after parallel
    runs) and print the summary."""
    from hbseg.train.kfold import summarize_kfold

    s = summarize_kfold(dir_)
    click.echo(json.dumps(s, indent=2) if as_json else _summary_text(s))


@cli.command("oof", context_settings=_CTX)
@click.argument("dir_", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="OOF folder [default: DIR/oof].")
@click.option("--folds", callback=_int_list, default=None,
              help="Only these folds [default: every DIR/fold-K with a best.pt].")
@click.option("--checkpoint", default="best.pt", show_default=True,
              help="Checkpoint file name inside each fold folder.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(1),
              help="Images per decode batch; windows per forward pass.")
@click.option("--loader", default="auto", show_default=True, type=click.Choice(["auto", "dali", "cv2"]))
@click.option("--window", default=None, type=click.IntRange(32),
              help="Sliding-window side in original pixels, as hbseg-infer --window.")
@click.option("--stride", default=None, type=click.IntRange(1), help="Window stride [default: window/2].")
@click.option("--sigma", default=0.125, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--tta", "tta", multiple=True, type=click.Choice(["hflip"]))
@click.option("--scales", default="1.0", show_default=True, help="TTA scales, e.g. 0.8,1.0,1.5.")
@click.option("--no-amp", is_flag=True, help="Full float32 on CUDA.")
@click.option("--overwrite", is_flag=True, help="Predict again images already in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@debug_option
def oof(dir_, out, folds, checkpoint, device, batch_size, loader, window, stride, sigma, tta,
        scales, no_amp, overwrite, quiet, debug) -> None:
    """Each fold's model predicts its own validation images (out-of-fold), at original size.

    Probabilities are stored as uint8 (p * 255, one [C, H, W] .npy per image, C the data
    set's classes) with DIR/oof/oof.csv as the index; the disk they need is printed before
    anything runs.
    Use the same inference options you will give hbseg-infer, then run hbseg-tune.
    """
    from hbseg.tune.oof import OofConfig, predict_oof

    try:
        scale_t = tuple(float(s) for s in scales.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"expected numbers, got {scales!r}", param_hint="--scales") from None
    cfg = OofConfig(kfold_dir=str(dir_), out=str(out or dir_ / "oof"),
                    folds=tuple(folds) if folds else None, checkpoint=checkpoint, device=device,
                    batch_size=batch_size, loader=loader, window=window, stride=stride,
                    sigma=sigma, tta_hflip="hflip" in tta, scales=scale_t,
                    amp=False if no_amp else None, overwrite=overwrite, progress=not quiet)
    s = predict_oof(cfg, echo=click.echo)
    click.echo(f"wrote {s['out']}: {s['images']} images ({s['predicted']} predicted, "
               f"{s['skipped']} already there) from folds {s['folds']}, {s['mb']:.1f} MB")


main = main_entry(cli)
