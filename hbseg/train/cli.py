"""``hbseg-train``: a thin adapter from command-line options to ``hbseg.train.train``.

Heavy imports (torch, smp, DALI) happen inside the command, so ``--help`` is instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from hbseg.cli_common import FiniteFloat, debug_option, main_entry
from hbseg.train.fast import COMPILE_MODES

__all__ = ["train", "main"]

# hbseg.train.losses.LOSSES and hbseg.data.split.SPLITS, kept here so --help stays light
LOSS_NAMES = ("bce", "dice", "focal", "lovasz", "tversky", "jaccard", "gdice", "bce_dice",
              "focal_dice")
SPLIT_NAMES = ("seeded", "groupkfold", "groupkfold-legacy")
LOADER_NAMES = ("dali", "dali-cache", "torch", "baseline")
# hbseg.models.registry.COMPETITION_ENCODERS (HRNet through timm, SegFormer's MiT) and
# common smp encoders; a test keeps them equal to what create_model accepts
ENCODER_LINES = (("tu-hrnet_w18_small", "tu-hrnet_w18"), ("tu-hrnet_w32", "tu-hrnet_w48"),
                 ("mit_b0", "mit_b1", "mit_b2"), ("mit_b3", "mit_b4", "mit_b5"),
                 ("resnet18", "resnet34", "resnet50"), ("efficientnet-b0", "... efficientnet-b7"))


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, metavar="FILE",
              help="YAML/JSON training settings (any of a run's config.yaml, e.g. augment: "
                   "{rotate_limit: 25}); options given here override the file.")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path),
              help="Data root (holding train/DCM, train/outputs_json).")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path),
              help="Mask cache folder [default: DATA/hbseg-cache; built if missing].")
@click.option("--spec", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Data set description (YAML/JSON) for data other than the hands "
              "[default: DATA/hbseg-dataset.yaml if present].")
@click.option("--loader", type=click.Choice(LOADER_NAMES), default="dali", show_default=True,
              help="Data pipeline back-end (dali-cache needs --device cuda).")
@click.option("--device", default=None,
              help="cuda, cuda:N or cpu [default: cuda if a GPU is visible, else cpu].")
@click.option("--arch", default="unet", show_default=True,
              help="smp architecture (unet, unetplusplus, fpn, deeplabv3plus, segformer, ...).")
@click.option("--encoder", default="resnet34", show_default=True,
              help="smp encoder, or tu-<timm model>; a wrong name lists the valid ones. "
                   "The competition's winners used HRNet and SegFormer's MiT:\n\n\b\n"
                   + "\n".join(", ".join(names) for names in ENCODER_LINES))
@click.option("--weights", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Local .pth/.safetensors encoder weights (no download ever happens).")
@click.option("--size", type=int, default=512, show_default=True,
              help="Training side in pixels (images are resized to SIZE x SIZE).")
@click.option("--crop", type=int, default=None,
              help="Random CROP x CROP window of the original image, then resized to --size.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per step per GPU/rank.")
@click.option("--val-batch-size", type=click.IntRange(min=1), default=None,
              help="Validation batch size [default: --batch-size].")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--stop-after", type=click.IntRange(min=1), default=None, metavar="EPOCH",
              help="Stop once this epoch is done, the schedule still planned for --epochs; "
                   "continue later with --resume.")
@click.option("--lr", type=FiniteFloat(0, min_open=True), default=1e-3, show_default=True, help="Peak AdamW learning rate.")
@click.option("--weight-decay", type=FiniteFloat(0), default=1e-4, show_default=True)
@click.option("--warmup-epochs", type=FiniteFloat(0), default=1.0, show_default=True,
              help="Linear warmup length, then cosine decay.")
@click.option("--loss", default="bce_dice", show_default=True, metavar="NAME[:W],...",
              help=f"Sigmoid multi-label loss, or a weighted sum such as dice:0.6,bce:0.4. "
                   f"Names: {', '.join(LOSS_NAMES)} (single terms from smp.losses; bce_dice "
                   f"and focal_dice are hbseg's own).")
@click.option("--fold", type=click.IntRange(min=-1), default=0, show_default=True,
              help="Validation fold (0-4); -1 trains on every fold without validation.")
@click.option("--split", type=click.Choice(SPLIT_NAMES), default="seeded", show_default=True,
              help="Folds: hbseg's seeded deal of patients, or the competition baseline's "
                   "GroupKFold(5) over the sorted PNGs (groupkfold: scikit-learn >= 1.9; "
                   "groupkfold-legacy: <= 1.8; equal when every patient has 2 images).")
@click.option("--pseudo", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, metavar="CSV",
              help="Submission CSV whose masks label extra training images (pseudo-labels).")
@click.option("--pseudo-data", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, metavar="FOLDER",
              help="The images --pseudo labels (ROOT/test or ROOT; for a described data set "
                   "a folder of <name>.png or <group>/<name>.png, or a described root).")
@click.option("--pseudo-weight", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True,
              help="Appearances per epoch of each pseudo-labelled image, relative to a "
                   "labelled one (fractions: a seeded share of the images is used).")
@click.option("--roi-crop", type=click.FloatRange(min=0, max=10, max_open=True), default=None,
              metavar="MARGIN",
              help="Crop each image to the hand: the labels' bounding box (training), the "
                   "bright pixels' box (inference), widened by MARGIN of its side (e.g. 0.05) "
                   "and squared, then resized to --size; saved in the model card. "
                   "[default: off]")
@click.option("--canonical-hand", type=click.Choice(("right", "left")), default=None,
              help="Mirror images of the other hand (file names ending _L.png/_R.png) so the "
                   "model sees one side; inference mirrors them and flips predictions back. "
                   "[default: off]")
@click.option("--tensorboard/--no-tensorboard", default=True, show_default=True,
              help="Write TensorBoard event files to RUN_DIR/tb (offline; wandb sync "
                   "--sync-tensorboard RUN_DIR/tb uploads them).")
@click.option("--amp", type=click.Choice(("auto", "bf16", "fp16", "off")), default="auto",
              show_default=True, help="auto: bf16 if the GPU has it, else fp16; fp32 on CPU.")
@click.option("--val-every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Validate every N epochs (and after the last).")
@click.option("--val-full-res", is_flag=True, default=False,
              help="Score Dice at each image's original size (logits upsampled on the device).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="DALI CPU threads or DataLoader workers (0: torch loads in the main process) "
                   "[default: on CUDA every core this process may use, as PNG decoding runs on "
                   "CPU threads; 2 on CPU].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--compile", "compile_", type=click.Choice(COMPILE_MODES), is_flag=False,
              flag_value="default", default="off", show_default=True,
              help="torch.compile the model: --compile alone is inductor's default mode; "
                   "max-autotune-no-cudagraphs and reduce-overhead (CUDA graphs) are the others. "
                   "The first step carries the compile time.")
@click.option("--grad-clip", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Max gradient norm; 0 turns clipping off.")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True)
@click.option("--deterministic", is_flag=True, default=False,
              help="torch.use_deterministic_algorithms (slower on GPU).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="tqdm progress bars (loss, img/s).")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="RUN_DIR", help="Continue the run in RUN_DIR exactly from its last.pt.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="RUN_DIR", help="Run folder: config, metrics.jsonl, last.pt, best.pt, curves.")
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace the run files already in --out.")
@debug_option
@click.pass_context
def train(ctx: click.Context, **opts) -> None:
    """Train a bone segmentation model; writes metrics, checkpoints and curves to --out.

    \b
    Examples:
      hbseg-train --data data --loader dali --device cpu --encoder resnet18 --size 256 --out runs/a
      torchrun --nproc_per_node=4 -m hbseg.train.cli --data data --out runs/ddp
      hbseg-train --resume runs/a --epochs 40
      hbseg-train --config runs/a/config.yaml --lr 3e-4 --out runs/b
    """
    opts.pop("debug")
    resume, overwrite = opts.pop("resume"), opts.pop("overwrite")
    src = split_compile_option(opts)
    given = {k: v for k, v in opts.items()
             if ctx.get_parameter_source(src.get(k, k)) == ParameterSource.COMMANDLINE}

    from hbseg.errors import ConfigError

    try:
        cfg = _resolve(opts, given, resume)
        from .trainer import train as run_training

        summary = run_training(cfg, resume=resume is not None, overwrite=overwrite)
    except ConfigError as e:
        raise click.UsageError(str(e), ctx) from None
    import os

    if os.environ.get("RANK", "0") == "0":
        last = summary["last"] or {}
        click.echo(json.dumps({
            "run_dir": summary["run_dir"], "epochs_done": summary["epochs_done"],
            "finished": summary["finished"], "best_mean_dice": summary["best_mean_dice"],
            "best_epoch": summary["best_epoch"], "last_loss": last.get("loss"),
            "seconds": round(summary["seconds"], 1),
        }))


def split_compile_option(opts: dict) -> dict:
    """``--compile [MODE]`` → the config's ``compile`` flag and ``compile_mode``; returns the
    map from those keys to the option's parameter name (for "given on the command line")."""
    mode = opts.pop("compile_")
    opts["compile"] = mode != "off"
    if opts["compile"]:
        opts["compile_mode"] = mode
    return {"compile": "compile_", "compile_mode": "compile_"}


def _resolve(opts: dict, given: dict, resume: Path | None):
    import torch

    from hbseg.errors import ConfigError
    from hbseg.models import list_models

    from .config import TrainConfig

    config = opts.pop("config", None)
    given.pop("config", None)
    for name in ("data", "cache", "spec", "out", "weights", "pseudo", "pseudo_data"):
        if opts.get(name) is not None:
            opts[name] = str(opts[name])
            if name in given:
                given[name] = opts[name]
    if config is not None:
        if resume is not None:
            raise ConfigError("--config starts a new run; --resume continues one with its own "
                              "settings (give the options to change instead)")
        from .config import read_train_settings

        opts.update({k: v for k, v in read_train_settings(config).items() if k not in given})
    device = opts["device"]
    if device is not None and not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
        raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if device and device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} but no CUDA GPU is visible; use --device cpu")
    if opts["grad_clip"] == 0:
        opts["grad_clip"] = None
        if "grad_clip" in given:
            given["grad_clip"] = None
    if resume is not None:
        from hbseg.models import read_checkpoint

        from .resume import check_resumable, resume_config

        if opts["out"] is not None and Path(opts["out"]).resolve() != resume.resolve():
            raise ConfigError("--resume continues in its own folder; leave out --out "
                              "(or give the same folder)")
        last = check_resumable(resume)
        ckpt = read_checkpoint(last)
        if not isinstance(ckpt.get("config"), dict) or "optimizer" not in ckpt:
            raise ConfigError("not a resumable checkpoint (no training config or optimizer state; "
                              "best.pt and exported models hold only the model)", last)
        saved = TrainConfig.from_dict(ckpt["config"])
        if "device" in given:
            given["device"] = device
        return resume_config(saved, {**given, "out": str(resume)})
    if opts["out"] is None:
        raise ConfigError("--out RUN_DIR is required (or --resume RUN_DIR to continue a run)")
    if opts["data"] is None:
        raise ConfigError("--data ROOT is required")
    if opts["arch"].lower() not in list_models():
        import difflib

        close = difflib.get_close_matches(opts["arch"].lower(), list_models(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown --arch {opts['arch']!r}{hint} Valid: {', '.join(list_models())}")
    opts["arch"] = opts["arch"].lower()
    opts["device"] = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return TrainConfig.from_dict(opts)
    except (TypeError, ValueError) as e:  # a settings file's value of the wrong kind
        raise ConfigError(f"invalid training settings ({e})", config) from None


main = main_entry(train)

if __name__ == "__main__":  # torchrun -m hbseg.train.cli ...
    sys.exit(main())
