"""``geo-ppp segment``, ``geo-ppp run`` and ``geo-ppp demo``: land-cover maps of regions."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from geo_ppp.cli.options import (
    ProgressCommand,
    RegistryChoice,
    command_line,
    device_option,
    handle_errors,
    overwrite_option,
    progress_option,
    resolve_device,
    scheduler_option,
    seed_option,
    set_verbosity,
    verbosity_options,
)

log = logging.getLogger("geo_ppp")


def _methods() -> tuple[str, ...]:
    from geo_ppp.pipeline.region import METHODS

    return METHODS


def _presets() -> tuple[str, ...]:
    from geo_ppp.landcover.infer import PRESET_NAMES

    return PRESET_NAMES


@click.command(cls=ProgressCommand)
@click.argument("image", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--weak-labels",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Weak labels: NLCD-coded raster(s), any CRS, or a vector file (--label-attribute). Repeatable.",
)
@click.option(
    "--label-attribute", default=None, help="Class attribute of vector weak labels (integer codes)."
)
@click.option("--legend", default="chesapeake", show_default=True, help="Legend name or legend JSON file.")
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Output map: a COG of uint8 codes."
)
@click.option("--prior", default=None, help="Prior name or folder (default: the legend's shipped prior).")
@click.option("--cooccurrence", default=None, help="Co-occurrence name or JSON (default: the legend's).")
@click.option(
    "--steps", type=int, default=None, help="Plug-and-play steps (default: the prior's tuned ones)."
)
@click.option(
    "--preset",
    type=RegistryChoice(_presets),
    default="tuned",
    show_default=True,
    help="Inference schedule: the prior's tuned one, or the paper's (200 steps + 100 ancestral).",
)
@click.option(
    "--method",
    type=RegistryChoice(_methods),
    default="pnp",
    show_default=True,
    help="pnp: plug-and-play per tile under the diffusion prior; distill: plug-and-play on a sample of "
    "tiles, then a small segmenter trained on its maps maps the whole region (one forward pass per "
    "tile); qr: a segmenter trained on the region from the weak labels alone (Rolf et al.'s "
    "implicit posterior).",
)
@click.option(
    "--train-steps",
    type=int,
    default=1000,
    show_default=True,
    help="Training steps of the distill or qr segmenter.",
)
@click.option(
    "--distill-tiles",
    type=int,
    default=None,
    help="Tiles the distill/qr segmenter learns from, sampled with --seed (default: 64, or all if fewer).",
)
@click.option(
    "--segmenter",
    "segmenter_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Map with a segmenter saved by --save-segmenter (no plug-and-play, no training: the fast path).",
)
@click.option(
    "--save-segmenter",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the trained distill/qr segmenter in this folder (safetensors + JSON config).",
)
@click.option(
    "--calibrate/--no-calibrate",
    default=True,
    show_default=True,
    help="Fit a region appearance model first (how each class looks here, how far to trust the weak "
    "labels), so the map follows the imagery where it plainly disagrees with a 30 m block; "
    "--no-calibrate maps with the per-window model alone.",
)
@click.option("--tile-size", type=int, default=256, show_default=True, help="Tile size, working-grid pixels.")
@click.option("--overlap", type=int, default=32, show_default=True, help="Tile overlap, pixels (blended).")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Tiles per inference batch.")
@click.option("--aoi", default=None, help="Area of interest: a vector file, or minx,miny,maxx,maxy[@CRS].")
@click.option(
    "--bands", default=None, help="Image bands to use, 1-based, in order R,G,B[,NIR] (e.g. 1,2,3,4)."
)
@click.option(
    "--probabilities", type=click.Path(path_type=Path), default=None, help="Also write class probabilities."
)
@click.option(
    "--vector", type=click.Path(path_type=Path), default=None, help="Also write class polygons (GeoPackage)."
)
@click.option("--quicklook", type=click.Path(path_type=Path), default=None, help="Also write a PNG overview.")
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep tile results here (default: OUT.work, removed after success).",
)
@click.option(
    "--resume/--no-resume", default=True, show_default=True, help="Reuse finished tiles in the work dir."
)
@scheduler_option
@seed_option
@device_option
@overwrite_option
@progress_option
@verbosity_options
@handle_errors
def segment(
    image: tuple[Path, ...],
    weak_labels: tuple[Path, ...],
    label_attribute: str | None,
    legend: str,
    out: Path,
    prior: str | None,
    cooccurrence: str | None,
    steps: int | None,
    preset: str,
    method: str,
    train_steps: int,
    distill_tiles: int | None,
    segmenter_dir: Path | None,
    save_segmenter: Path | None,
    calibrate: bool,
    tile_size: int,
    overlap: int,
    batch_size: int,
    aoi: str | None,
    bands: str | None,
    probabilities: Path | None,
    vector: Path | None,
    quicklook: Path | None,
    workdir: Path | None,
    resume: bool,
    scheduler: str | None,
    seed: int,
    device: str,
    overwrite: bool,
    progress_mode: str,
    verbose: int,
    quiet: bool,
) -> None:
    """Infer a land-cover map of IMAGE (one or more files) from weak labels under the diffusion prior."""
    from geo_ppp.cli.progress import observer_for
    from geo_ppp.pipeline import segment as run_segment

    quiet = set_verbosity(verbose, quiet)
    try:
        band_list = tuple(int(b) for b in bands.split(",")) if bands else None
    except ValueError:
        msg = f"{bands!r} is not a list of band numbers like 1,2,3,4"
        raise click.BadParameter(msg, param_hint="--bands") from None
    progress = observer_for(progress_mode, quiet)
    try:
        result = run_segment(
            list(image),
            list(weak_labels),
            legend,
            out,
            prior=prior,
            cooccurrence=cooccurrence,
            steps=steps,
            preset=preset,
            method=method,
            train_steps=train_steps,
            distill_tiles=distill_tiles,
            segmenter=segmenter_dir,
            save_segmenter=save_segmenter,
            calibrate=calibrate,
            tile_size=tile_size,
            overlap=overlap,
            batch_size=batch_size,
            seed=seed,
            bands=band_list,
            aoi=aoi,
            label_attribute=label_attribute,
            probabilities=probabilities,
            vector=vector,
            quicklook=quicklook,
            workdir=workdir,
            resume=resume,
            overwrite=overwrite,
            device=resolve_device(device),
            progress=progress,
            scheduler=scheduler,
            command=command_line(),
        )
    finally:
        progress.close()
    stats = result.stats
    click.echo(
        f"wrote {result.out} ({result.grid.width} x {result.grid.height}; {stats['ran']} tiles ran, "
        f"{stats['skipped']} skipped, {stats['resumed']} resumed in {stats['seconds']['total']:.1f} s)"
    )
    for kind, path in result.outputs.items():
        if kind != "map":
            click.echo(f"  {kind}: {path}")
    calibration = result.config.get("calibration")
    if calibration:
        click.echo(f"  calibration: {describe_calibration(calibration)}")


def describe_calibration(record: dict) -> str:
    """One line on what the region calibration did (the summary of ``segment`` and ``run``)."""
    if record.get("status") != "fitted":
        return f"{record.get('status', 'not run')} ({record.get('reason', '')}): per-window model only"
    summary = record.get("summary", {})
    return (
        f"fitted on {record.get('pixels')} pixels of {record.get('tiles')} tiles "
        f"in {record.get('seconds')} s; "
        f"classes modelled: {', '.join(summary.get('modelled', []))}; "
        f"evidence weight {summary.get('evidence_weight')}"
    )


@click.command("run", cls=ProgressCommand)
@click.argument("job", type=click.Path(path_type=Path))
@scheduler_option
@click.option("--resume/--no-resume", default=None, help="Reuse finished tiles (default: the spec's; yes).")
@click.option("--check", is_flag=True, help="Only validate the spec and plan every region; run nothing.")
@device_option
@overwrite_option
@progress_option
@verbosity_options
@handle_errors
def run_job_command(
    job: Path,
    scheduler: str | None,
    resume: bool | None,
    check: bool,
    device: str,
    overwrite: bool,
    progress_mode: str,
    verbose: int,
    quiet: bool,
) -> None:
    """Run a batch job (TOML spec of regions): every tile as a Dask task, each region mosaicked when done."""
    from geo_ppp.cli.progress import observer_for
    from geo_ppp.pipeline.jobs import load_job, run_job

    quiet = set_verbosity(verbose, quiet)
    spec = load_job(job)
    if check:
        from geo_ppp.pipeline.jobs import prepare_job_region

        for region in spec.regions:
            prep = prepare_job_region(
                spec,
                region,
                overwrite or spec.overwrite,
                True,
                resolve_device(device),
                setup=False,
                lock=False,
            )
            click.echo(f"region {region.name}: {len(prep.job.tiles)} tiles -> {region.out}")
        click.echo(f"{spec.path}: {len(spec.regions)} region(s) valid")
        return
    progress = observer_for(progress_mode, quiet)
    try:
        run_job(
            spec,
            scheduler=scheduler,
            overwrite=overwrite or None,
            resume=resume,
            device=resolve_device(device),
            progress=progress,
            echo=click.echo,
        )
    finally:
        progress.close()


@click.command(cls=ProgressCommand)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("demo_out"),
    show_default=True,
    help="Output folder.",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="A sample_tiles folder (naip/, nlcd/, truth/); default: the repository's sample_tiles/.",
)
@click.option("--steps", type=int, default=None, help="Plug-and-play steps (default: tuned).")
@seed_option
@device_option
@overwrite_option
@progress_option
@handle_errors
def demo(
    out: Path,
    data: Path | None,
    steps: int | None,
    seed: int,
    device: str,
    overwrite: bool,
    progress_mode: str,
) -> None:
    """Segment the real sample tiles end to end with the shipped prior and score the map."""
    from geo_ppp.cli.progress import observer_for
    from geo_ppp.demos.landcover import run_landcover_demo

    quiet = set_verbosity(0, False)
    progress = observer_for(progress_mode, quiet)
    try:
        report = run_landcover_demo(
            out,
            data=data,
            seed=seed,
            steps=steps,
            overwrite=overwrite,
            device=resolve_device(device),
            progress=progress,
            echo=click.echo,
            command=command_line(),
        )
    finally:
        progress.close()
    click.echo(report)
