"""``hbseg-infer`` and ``hbseg-ensemble``: thin click adapters over the library (``hbseg-eval``,
which can also write the HTML report, is :mod:`hbseg.report.cli`)."""

from __future__ import annotations

from pathlib import Path

import click

from hbseg.cli_common import FiniteFloat, check_out_file, debug_option, main_entry

_CTX = {"help_option_names": ["-h", "--help"]}


def _floats(ctx, param, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None
    if not out or any(not (0 < v < float("inf")) for v in out):
        raise click.BadParameter(f"expected positive finite numbers, got {value!r}")
    return out


def _hw(ctx, param, value: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected HxW like 2048x2048, got {value!r}") from None
    if h < 1 or w < 1:
        raise click.BadParameter(f"expected positive sizes, got {value!r}")
    return h, w


def postprocess_options(soft_vote: str, members: str):
    """--threshold, --thresholds, --min-size, --min-sizes and --class-weights, as
    hbseg-infer and hbseg-ensemble share them. ``soft_vote`` heads the help of the options
    a hard vote ignores; ``members`` names what a class weight is given per."""
    options = [
        click.option("--threshold", default=0.5, show_default=True,
                     type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     help=f"{soft_vote}Probability threshold for every class."),
        click.option("--thresholds", "thresholds_file", default=None,
                     type=click.Path(exists=True, dir_okay=False),
                     help=f'{soft_vote}JSON {{"class": threshold}} (hbseg-tune\'s thresholds.json); '
                          "classes left out use --threshold."),
        click.option("--min-size", default=0, show_default=True, type=click.IntRange(0),
                     help="Drop connected components smaller than this many pixels, per class."),
        click.option("--min-sizes", "min_sizes_file", default=None,
                     type=click.Path(exists=True, dir_okay=False),
                     help='JSON {"class": pixels} (hbseg-tune\'s min_sizes.json); classes left '
                          "out use --min-size."),
        click.option("--class-weights", "class_weights_file", default=None,
                     type=click.Path(exists=True, dir_okay=False),
                     help=f'{soft_vote}JSON {{"class": [weight per {members}]}} (hbseg-tune\'s '
                          "weights.json); classes left out use --weights."),
    ]

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _summary_line(s: dict) -> str:
    rate = f"{s['images_per_s']:.2f} images/s" if s.get("images_per_s") else "n/a"
    return (f"wrote {s['out']}: {s['images']} images in {s['seconds']:.1f} s ({rate}, "
            f"{s['device']}, {s['loader']} loader)")


@click.command(context_settings=_CTX)
@click.option("--checkpoint", "checkpoints", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Model checkpoint; repeat for a soft-voting ensemble.")
@click.option("--weights", callback=_floats, default=None,
              help="Ensemble weights, one per --checkpoint, e.g. 2,1 [default: equal].")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="Data root (uses test/), a split folder (DCM/ID*/*.png), a folder of PNGs, or "
                   "a described data set (ROOT/hbseg-dataset.yaml: its images/).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Submission CSV to write (image_name,class,rle).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(1),
              help="Images per decode batch; windows per forward pass.")
@click.option("--loader", default="auto", show_default=True, type=click.Choice(["auto", "dali", "cv2"]),
              help="Image decoding: the DALI inference pipeline or OpenCV.")
@click.option("--window", default=None, type=click.IntRange(32),
              help="Sliding-window side in original-image pixels; windows are predicted at the model's "
                   "training scale (size/crop) [default: the whole image resized to the model's size].")
@click.option("--stride", default=None, type=click.IntRange(1), help="Window stride [default: window/2].")
@click.option("--sigma", default=0.125, show_default=True, type=FiniteFloat(0, min_open=True),
              help="Gaussian blending sigma, as a fraction of the window.")
@click.option("--tta", "tta", multiple=True, type=click.Choice(["hflip"]),
              help="Test-time augmentation: hflip averages the horizontally flipped prediction.")
@click.option("--scales", callback=_floats, default="1.0", show_default=True,
              help="TTA scales, comma-separated, e.g. 0.8,1.0,1.5.")
@postprocess_options(soft_vote="", members="--checkpoint, in the order of hbseg-tune's --oof")
@click.option("--save-probs", default=None, type=click.Path(file_okay=False),
              help="Also write float16 [C, H, W] probability maps (<stem>.npy, ~240 MB for a 2048² hand) "
                   "here, for soft voting with hbseg-ensemble --probs.")
@click.option("--overlays", default=None, type=click.Path(file_okay=False),
              help="Also write pictures of the predicted contours (and ground truth, if any) here.")
@click.option("--overlay-size", default=1024, show_default=True, type=click.IntRange(64),
              help="Longest side of each overlay panel.")
@click.option("--no-amp", is_flag=True, help="Full float32 on CUDA (mixed precision is the default).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@debug_option
def infer(checkpoints, weights, data, out, device, batch_size, loader, window, stride, sigma, tta,
          scales, threshold, thresholds_file, min_size, min_sizes_file, class_weights_file,
          save_probs, overlays, overlay_size, no_amp, quiet, debug) -> None:
    """Segment every image under --data into a submission CSV (the 29 bones, or the classes
    of the checkpoint's data set)."""
    from .config import InferConfig
    from .infer import run_inference

    check_out_file(out, [*checkpoints, thresholds_file, min_sizes_file, class_weights_file])

    cfg = InferConfig(
        checkpoints=tuple(checkpoints), data=str(data), out=str(out), weights=weights,
        device=device, batch_size=batch_size, window=window, stride=stride, sigma=sigma,
        tta_hflip="hflip" in tta, scales=scales, threshold=threshold,
        thresholds_file=thresholds_file, min_size=min_size, min_sizes_file=min_sizes_file,
        class_weights_file=class_weights_file, save_probs=save_probs,
        overlays=overlays, overlay_max_side=overlay_size, loader=loader,
        amp=False if no_amp else None, progress=not quiet,
    )
    click.echo(_summary_line(run_inference(cfg)))


@click.command(context_settings=_CTX)
@click.argument("csvs", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--probs", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A --save-probs folder; repeat to soft-vote them instead of CSVs.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Submission CSV to write.")
@click.option("--min-votes", default=None, type=click.IntRange(1),
              help="Hard vote: members that must agree on a pixel [default: a majority].")
@click.option("--weights", callback=_floats, default=None, help="Soft vote: weights, one per folder.")
@click.option("--data", default=None, type=click.Path(exists=True, file_okay=False),
              help="Hard vote: read image sizes from this folder's PNGs. A described data set "
                   "(ROOT/hbseg-dataset.yaml) also sets the classes, and both votes check them.")
@click.option("--size", "size", default="2048x2048", show_default=True, callback=_hw,
              help="Hard vote: the HxW of every image, when --data is not given.")
@postprocess_options(soft_vote="Soft vote only. ", members="--probs folder")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]),
              help="Soft vote: where to average.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@debug_option
def ensemble(csvs, probs, out, min_votes, weights, data, size, threshold, thresholds_file, min_size,
             min_sizes_file, class_weights_file, device, quiet, debug) -> None:
    """Hard-vote submission CSVs, or soft-vote --probs folders, into one submission."""
    from .config import EnsembleConfig
    from .ensemble import run_ensemble

    if csvs and probs:
        raise click.UsageError("give CSVs (hard vote) or --probs folders (soft vote), not both")
    check_out_file(out, [*csvs, thresholds_file, min_sizes_file, class_weights_file])
    cfg = EnsembleConfig(out=str(out), csvs=tuple(csvs), probs=tuple(probs), min_votes=min_votes,
                         weights=weights, data=data, size=size, threshold=threshold,
                         thresholds_file=thresholds_file, min_size=min_size,
                         min_sizes_file=min_sizes_file, class_weights_file=class_weights_file,
                         progress=not quiet)
    s = run_ensemble(cfg, device)
    click.echo(f"wrote {s['out']}: {s['images']} images, {s['mode']} vote of {s['members']} members")


infer_main = main_entry(infer)
ensemble_main = main_entry(ensemble)
