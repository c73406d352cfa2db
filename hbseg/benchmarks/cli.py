"""``hbseg-bench``: loader and per-operation benchmarks (a thin adapter over the library)."""

from __future__ import annotations

import functools
import shlex
import sys
from pathlib import Path

import click

from hbseg.cli_common import debug_option, main_entry
from hbseg.train.fast import COMPILE_MODES

PREFERRED_ORDER = ("baseline", "torch", "dali", "dali-cache")  # baseline first: the reference


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _parse_loaders(value: str | None, device: str) -> tuple[str, ...]:
    import difflib

    from hbseg.loaders import LOADERS

    names_known = [k for k in PREFERRED_ORDER if k in LOADERS] + [k for k in LOADERS if k not in PREFERRED_ORDER]
    if not value:
        # every loader this device can run; dali-cache keeps decoded images on the GPU
        return tuple(k for k in names_known if device.startswith("cuda") or k != "dali-cache")
    names = _csv(value)
    for n in names:
        if n not in names_known:
            close = difflib.get_close_matches(n, names_known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise click.BadParameter(f"unknown loader {n!r}{hint} Valid: {', '.join(names_known)}",
                                     param_hint="--loaders")
    return tuple(dict.fromkeys(names))


def _parse_pairs(value: str | None, cast, option: str) -> tuple[tuple[str, object], ...]:
    """``baseline=20,dali=60`` as ``(("baseline", 20), ("dali", 60))``."""
    pairs = []
    for item in _csv(value):
        name, sep, v = item.partition("=")
        try:
            pairs.append((name.strip(), cast(v)))
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise click.BadParameter(f"expected LOADER=VALUE pairs like baseline=20, got {item!r}",
                                     param_hint=option)
    return tuple(pairs)


def _parse_cpus(value: str | None) -> tuple[int | None, ...]:
    if not value:
        return (None,)
    try:
        cpus = [int(v) for v in _csv(value)]
    except ValueError:
        raise click.BadParameter(f"expected core counts like 4,8,16, got {value!r}",
                                 param_hint="--cpus") from None
    if not cpus or min(cpus) < 1:
        raise click.BadParameter("core counts must be at least 1", param_hint="--cpus")
    from .sysinfo import allowed_cpus

    allowed = len(allowed_cpus())
    if max(cpus) > allowed:
        raise click.BadParameter(f"{max(cpus)} cores asked for, this process may use {allowed}",
                                 param_hint="--cpus")
    return tuple(sorted(set(cpus)))


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _check_model(arch: str, encoder: str) -> None:
    """Unknown names fail here, once, rather than in every measurement subprocess."""
    import difflib

    from hbseg.models import list_encoders, list_models

    for name, valid, opt in ((arch, list_models(), "--arch"), (encoder, list_encoders(), "--encoder")):
        if name.lower() not in valid and name not in valid:
            close = difflib.get_close_matches(name.lower(), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise click.BadParameter(f"unknown name {name!r}{hint}", param_hint=opt)


_HANDS_DATA_HELP = ("Data root (train/DCM/ID*/*.png with outputs_json); the mask cache is "
                    "built if missing.")
_ANY_DATA_HELP = ("Data root: the hands (train/DCM/ID*/*.png with outputs_json) or any data set "
                  "described by ROOT/hbseg-dataset.yaml (its cache in ROOT/hbseg-cache, as "
                  "hbseg-train keeps it); the mask cache is built or refreshed if needed.")


def _data_options(f, data_help: str = _HANDS_DATA_HELP):
    f = click.option("--workers-prep", "prep_workers", type=click.IntRange(1), default=None,
                     help="Processes for generating data and the mask cache [default: every core].")(f)
    f = click.option("--synth-size", type=click.IntRange(64), default=2048, show_default=True,
                     help="Side of the synthetic images made by --synth.")(f)
    f = click.option("--synth", "synth_ids", type=click.IntRange(1), default=None,
                     help="If ROOT holds no data set, generate N synthetic hand patients (2N images) "
                          "there; ignored when ROOT holds one.")(f)
    f = click.option("--data", "data", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help=data_help)(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def bench() -> None:
    """Benchmarks: data loaders side by side (`loaders`), per-operation costs (`ops`),
    merging several `loaders` runs (`report`)."""


@bench.command()
@functools.partial(_data_options, data_help=_ANY_DATA_HELP)
@click.option("--loaders", "loaders", default=None,
              help="Comma-separated back-ends [default: baseline,torch,dali (+dali-cache on CUDA); "
                   "baseline reads the hands only and is left out for a described data set].")
@click.option("--size", default=1024, show_default=True, type=click.IntRange(16), help="Training image side.")
@click.option("--arch", default="unet", show_default=True)
@click.option("--encoder", default="efficientnet-b2", show_default=True)
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@click.option("--workers", default=None, type=click.IntRange(0),
              help="DataLoader workers for torch/baseline (capped at the cores) [default: one per core].")
@click.option("--cpus", default=None,
              help="Core counts to pin each run to, e.g. 4,8,16 (one run per value) [default: all].")
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(1),
              help="Timed epochs per phase; medians are reported.")
@click.option("--warmup-epochs", default=1, show_default=True, type=click.IntRange(0),
              help="Untimed loader-only epochs first.")
@click.option("--warmup-steps", default=3, show_default=True, type=click.IntRange(0),
              help="Untimed training steps before the timed training epochs.")
@click.option("--steps-limit", default=None, type=click.IntRange(1),
              help="Cap batches per epoch (quick runs).")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default="auto", show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--timeout", "timeout_s", default=3600.0, show_default=True, type=click.FloatRange(1),
              help="Seconds before one (loader, cores) run is stopped and reported as failed.")
@click.option("--run-timeout", "run_timeouts", default=None,
              help="Per-run limits replacing --timeout, e.g. bound=90,baseline=200 (seconds).")
@click.option("--loader-steps", "loader_steps", default=None,
              help="Per-loader batches per epoch replacing --steps-limit, e.g. baseline=10 "
                   "(the table notes it).")
@click.option("--no-bound", "no_bound", is_flag=True, default=False,
              help="Leave the no-loading bound out (merged later from a run that has it).")
@click.option("--compile", "compile_mode", type=click.Choice(COMPILE_MODES), is_flag=False,
              flag_value="default", default="off", show_default=True,
              help="torch.compile the model of the bound and of every loader, as "
                   "hbseg-train --compile does; the compile time is reported apart.")
@click.option("--note", "notes", multiple=True, help="A note to store in results.json (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-loaders"),
              show_default=True, help="Folder for results.json, table.md, loaders.png and logs/.")
@debug_option
def loaders(data: Path, synth_ids: int | None, synth_size: int, prep_workers: int | None,
            loaders: str | None, size: int, arch: str, encoder: str, batch_size: int,
            workers: int | None, cpus: str | None, epochs: int, warmup_epochs: int,
            warmup_steps: int, steps_limit: int | None, amp: str, device: str, seed: int,
            timeout_s: float, run_timeouts: str | None, loader_steps: str | None,
            no_bound: bool, compile_mode: str, notes: tuple[str, ...], out: Path,
            debug: bool) -> None:
    """Epoch time, throughput, CPU cost and data wait of every loader, side by side,
    against the baseline and the no-loading bound."""
    from hbseg.data.spec import resolve_spec

    from .config import BenchConfig
    from .loaders_bench import loaders_for_data, prepare_data, run_loaders_bench

    def log(msg: str) -> None:
        click.echo(msg, err=True)

    device = _resolve_device(device)
    # baseline on a described data set: dropped from the default list, an error when named
    kinds = loaders_for_data(_parse_loaders(loaders, device), resolve_spec(data),
                             explicit=loaders is not None, log=log)
    cfg = BenchConfig(
        data=str(data), loaders=kinds, size=size, arch=arch,
        encoder=encoder, batch_size=batch_size, workers=workers, cpus=_parse_cpus(cpus),
        epochs=epochs, warmup_epochs=warmup_epochs, warmup_steps=warmup_steps,
        steps_limit=steps_limit, amp=amp, device=device, seed=seed, timeout_s=timeout_s,
        loader_timeouts=_parse_pairs(run_timeouts, float, "--run-timeout"),
        loader_steps=_parse_pairs(loader_steps, int, "--loader-steps"), bound=not no_bound,
        compile=compile_mode,
    )
    _check_model(arch, encoder)
    prepare_data(data, synth_ids, synth_size, seed, prep_workers, log=log)
    command = "hbseg-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    results = run_loaders_bench(cfg, out, log=log, command=command, notes=list(notes))
    click.echo(results["table_markdown"])
    log(f"wrote {out / 'results.json'}, {out / 'table.md'} and {out / 'loaders.png'}")


@bench.command()
@_data_options
@click.option("--size", default=1024, show_default=True, type=click.IntRange(16),
              help="Output side of warps; normalise and unpack run at this size.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@click.option("--threads", default=None, type=click.IntRange(1),
              help="CPU threads (OpenCV pool, torch, DALI num_threads) [default: every core].")
@click.option("--iters", default=10, show_default=True, type=click.IntRange(1), help="Timed batches per repeat.")
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(0))
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1))
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="cuda adds GPU rows; cpu leaves them out.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-ops"),
              show_default=True, help="Folder for ops.json and ops.md.")
@debug_option
def ops(data: Path, synth_ids: int | None, synth_size: int, prep_workers: int | None, size: int,
        batch_size: int, threads: int | None, iters: int, warmup: int, repeats: int, device: str,
        out: Path, debug: bool) -> None:
    """Per-operation cost (decode, CLAHE, warp, normalise, mask unpack) on CPU and GPU."""
    from .loaders_bench import prepare_data
    from .ops_bench import run_ops_bench
    from .sysinfo import allowed_cpus

    def log(msg: str) -> None:
        click.echo(msg, err=True)

    from hbseg.data.spec import resolve_spec

    spec = resolve_spec(data) if data.is_dir() else None
    if spec is not None:  # its rows are the hands' (grey PNGs, 29 planes); checked before any work
        raise click.UsageError(f"{data}: hbseg-bench ops times the hands' operations (grey PNGs, "
                               f"29 mask planes), not data set {spec.name!r}; hbseg-bench "
                               "loaders measures any data set")
    prepare_data(data, synth_ids, synth_size, 0, prep_workers, log=log)
    results = run_ops_bench(data, out, size=size, batch_size=batch_size,
                            threads=threads or len(allowed_cpus()), iters=iters, warmup=warmup,
                            repeats=repeats, device=device, log=log)
    click.echo(results["table_markdown"])
    log(f"wrote {out / 'ops.json'} and {out / 'ops.md'}")


@bench.command()
@click.argument("results", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the merged results.json, table.md and loaders.png.")
@debug_option
def report(results: tuple[Path, ...], out: Path, debug: bool) -> None:
    """Merge `loaders` results (folders or results.json files, e.g. one per --cpus value)
    into one table and plot, ratios recomputed."""
    from .loaders_bench import merge_results, write_outputs
    from .report import read_results

    for p in results:  # a file of another shape: one line naming it, before any merging
        read_results(p)
    merged = merge_results(list(results))
    write_outputs(merged, out, log=lambda m: click.echo(m, err=True))
    click.echo(merged["table_markdown"])


@bench.command()
@click.argument("step", type=click.Choice(("env", "test", "ops", "bench", "quality")))
@click.argument("args", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Writes OUT/<step>/ [default: $OUT, else ./kit-out].")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Machine-local data, runs and bench parts [default: $HBSEG_KIT_WORK or /tmp/hbseg-kit].")
@click.option("--dry", is_flag=True, default=False,
              help="Tiny sizes on CPU, every code path in seconds (also HBSEG_GPU_DRY=1).")
@click.option("--budget", "budget_s", type=click.FloatRange(10), default=None,
              help="Seconds the step may take [default: 540, one 10-minute device command].")
@click.option("--epochs", type=click.IntRange(1), default=None, help="quality: epochs planned [default: 40].")
@click.option("--slice-epochs", type=click.IntRange(1), default=None,
              help="quality: at most N more epochs in this command.")
@click.option("--steps", type=click.IntRange(1), default=None,
              help="bench: batches per epoch [default: 50; fewer when the baseline times out].")
@click.option("--loaders", "bench_loaders", default=None,
              help="bench: the loaders to run, e.g. torch,baseline (the bound too unless an "
                   "earlier part on this machine has it) [default: every one].")
@click.option("-k", "keyword", default=None,
              help="test: pytest -k EXPR, e.g. to rerun the failing tests alone.")
@click.option("--marker", default=None,
              help='test: pytest -m EXPR [default: gpu; "" runs every selected test].')
@click.option("--test-timeout", type=click.FloatRange(0), default=None,
              help="test: seconds per test (pytest-timeout; 0: none) [default: 120].")
@click.option("--test-workers", type=click.IntRange(1), default=None,
              help="test: pytest-xdist processes, where it is installed [default: 3].")
@debug_option
def kit(step: str, args: tuple[str, ...], out: Path | None, work: Path | None, dry: bool,
        budget_s: float | None, epochs: int | None, slice_epochs: int | None, steps: int | None,
        bench_loaders: str | None, keyword: str | None, marker: str | None,
        test_timeout: float | None, test_workers: int | None, debug: bool) -> None:
    """One step of a GPU session: env, test [NODEID…], ops, bench CPUS, quality (see
    benchmarks/README.md, "GPU session runbook"). Prints one line `kit STEP: ok|FAILED ...`;
    exits 1 on FAILED."""
    from .kit import KitConfig, default_out, default_work, dry_requested, run_step

    cpus, tests = _kit_args(step, args)
    dry = dry or dry_requested()
    cfg = KitConfig.make(out or default_out(), work or default_work(dry), dry, budget_s=budget_s,
                         quality_epochs=epochs, quality_slice_epochs=slice_epochs, bench_steps=steps,
                         test_keyword=keyword, test_marker=marker, test_timeout_s=test_timeout,
                         test_workers=test_workers, test_paths=tests or None,
                         bench_loaders=tuple(_csv(bench_loaders)) or None)
    result = run_step(step, cfg, cpus)
    click.echo(result.line)
    if not result.ok:
        sys.exit(1)


def _kit_args(step: str, args: tuple[str, ...]) -> tuple[int | None, tuple[str, ...]]:
    """``bench`` takes one core count, ``test`` node ids or paths, the others nothing."""
    from hbseg.errors import ConfigError

    if step == "bench":
        if len(args) != 1 or not args[0].isdigit() or int(args[0]) < 1:
            raise ConfigError("bench needs one core count: hbseg-bench kit bench 16")
        return int(args[0]), ()
    if step == "test":
        return None, args
    if args:
        raise ConfigError(f"kit {step} takes no arguments, got {' '.join(args)}")
    return None, ()


main = main_entry(bench)

if __name__ == "__main__":
    main()
