"""``hbseg-data``: make synthetic hands, build the mask cache, check and summarise a data set."""

from __future__ import annotations

from pathlib import Path

import click

from hbseg.cli_common import debug_option, main_entry


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Data-set tools: the hand-bone layout (DCM/ID*/*.png, outputs_json/ID*/*.json), or any
    data set a description (ROOT/hbseg-dataset.yaml, or --spec) explains."""


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--ids", default=20, show_default=True, type=click.IntRange(1), help="Train patients (2 hands each).")
@click.option("--test-ids", default=0, show_default=True, type=click.IntRange(0), help="Unlabelled test patients.")
@click.option("--size", default=2048, show_default=True, type=click.IntRange(64), help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--workers", default=None, type=click.IntRange(1), help="Processes [default: every core].")
@click.option("--overwrite", is_flag=True, help="Delete an existing data set in OUT (its DCM/ and outputs_json/ folders) first.")
@debug_option
def synth(out: Path, ids: int, test_ids: int, size: int, seed: int, workers: int | None,
          overwrite: bool, debug: bool) -> None:
    """Generate synthetic hand radiographs with polygon labels into OUT."""
    from hbseg.data.synth import SynthConfig, generate_dataset

    cfg = SynthConfig(ids=ids, size=size, seed=seed, test_ids=test_ids)
    summary = generate_dataset(out, cfg, workers=workers, overwrite=overwrite)
    click.echo(f"wrote {summary['images']} images to {out} in {summary['seconds']:.1f} s")


@cli.command()
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--out", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Cache folder [default: ROOT/hbseg-cache].")
@click.option("--exclude", "exclude_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="Text file of patient IDs or image names to drop, one per line.")
@click.option("--no-default-exclude", is_flag=True,
              help="Keep the competition's known mislabelled patients (ID058 ID089 ID325 ID363 ID547).")
@click.option("--workers", default=None, type=click.IntRange(1), help="Processes [default: every core].")
@click.option("--force", is_flag=True, help="Rebuild even when no source changed.")
@click.option("--spec", "spec_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="Data set description (YAML/JSON) for data other than the hands "
              "[default: ROOT/hbseg-dataset.yaml if present].")
@debug_option
def cache(root: Path, cache_dir: Path | None, exclude_file: Path | None, no_default_exclude: bool,
          workers: int | None, force: bool, spec_file: Path | None, debug: bool) -> None:
    """Validate ROOT/train and rasterise its polygons into bit-packed mask PNGs."""
    from hbseg.data.cache import build_cache
    from hbseg.data.layout import DEFAULT_EXCLUDE
    from hbseg.errors import DataError
    from hbseg.settings_file import read_text

    exclude = [] if no_default_exclude else list(DEFAULT_EXCLUDE)
    if exclude_file is not None:  # UTF-8, or UTF-16 with its byte-order mark (Windows)
        lines = read_text(exclude_file, "exclude list", DataError).splitlines()
        exclude += [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    s = build_cache(root, cache_dir, exclude=exclude, workers=workers, force=force, spec=spec_file)
    if s["up_to_date"]:
        click.echo(f"{s['cache_dir']}: up to date ({s['images']} images)")
    else:
        click.echo(f"{s['cache_dir']}: {s['images']} images, {s['rasterised']} masks rasterised")


@cli.command()
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True)
@click.option("--fold-split", type=click.Choice(["seeded", "groupkfold", "groupkfold-legacy"]),
              default="seeded", show_default=True,
              help="Folds to count, as hbseg-train --split deals them.")
@debug_option
def check(root: Path, split: str, fold_split: str, debug: bool) -> None:
    """Validate every image (and JSON, for train) without writing anything."""
    from tqdm.auto import tqdm

    from hbseg.data import read_gray_png, read_polygons, resolve_split, scan_split
    from hbseg.data.spec import resolve_spec
    from hbseg.progress import bar_disabled

    spec = resolve_spec(root)
    if spec is not None:  # a described data set (ROOT/hbseg-dataset.yaml)
        from hbseg.data.formats import read_image, read_masks, scan_dataset
        from hbseg.data.split import apply_split

        df, sources = scan_dataset(spec, root)
        for row, src in tqdm(zip(df.itertuples(), sources, strict=True), total=len(df),
                             desc="checking", unit="img", disable=bar_disabled()):
            img = read_image(row.image_path, spec.channels)
            read_masks(spec, src, img.shape[0], img.shape[1], row.image_name, row.json_path)
        df = apply_split(df, fold_split, root, described=True)
        click.echo(f"{len(df)} images of {spec.name!r} ({spec.num_classes} classes, "
                   f"{spec.format}) in {df['id'].nunique()} groups are valid; images per fold: "
                   f"{df.groupby('fold').size().to_dict()}")
        return
    df = scan_split(resolve_split(root, split), labelled=split == "train", exclude=())
    for row in tqdm(df.itertuples(), total=len(df), desc="checking", unit="img", disable=bar_disabled()):
        img = read_gray_png(row.image_path, verify=True)
        if split == "train":
            read_polygons(row.json_path, img.shape[1], img.shape[0])
    if split == "train":
        from hbseg.data.split import apply_split

        df = apply_split(df, fold_split, resolve_split(root, split))
    per_fold = df.groupby("fold").size().to_dict()
    click.echo(f"{len(df)} images from {df['id'].nunique()} patients are valid; images per fold: {per_fold}")


@cli.command()
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--spec", "spec_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="Data set description (YAML/JSON) for data other than the hands "
              "[default: ROOT/hbseg-dataset.yaml if present].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for stats.json and stats.png [default: ROOT/hbseg-stats].")
@click.option("--workers", default=None, type=click.IntRange(1), help="Processes [default: every core].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@debug_option
def stats(root: Path, spec_file: Path | None, out: Path | None, workers: int | None, quiet: bool,
          debug: bool) -> None:
    """Summarise the labels before training: class balance, object sizes, image sizes.

    Reads the mask cache (built or updated first, as `cache` does).
    """
    from hbseg.data.stats import dataset_stats, format_stats_table, stats_out_dir, write_stats

    out = stats_out_dir(root, out, spec_file)
    s = dataset_stats(root, spec_file, workers=workers, progress=not quiet)
    if s["rasterised"]:
        click.echo(f"{s['cache_dir']}: {s['rasterised']} masks rasterised", err=True)
    click.echo(format_stats_table(s))
    js, png = write_stats(s, out)
    click.echo(f"wrote {js} and {png}")


main = main_entry(cli)
