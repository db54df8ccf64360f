"""The ``geo-ppp`` command line: thin click commands over the Python API.

Each command parses its options, imports what it needs lazily, and calls one library function.
Errors from geo_ppp become a one-line message and exit status 1.
"""

from __future__ import annotations

import functools
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from geo_ppp.errors import GeoPPPError

log = logging.getLogger("geo_ppp")


def _handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GeoPPPError as err:
            raise click.ClickException(str(err)) from err

    return wrapper


def _command_line() -> str:
    """The current command as a shell line, rerunnable as recorded.

    Rebuilt from the parsed options (defaults left out), then the positional arguments (after ``--``
    when one of them starts with a dash).
    """
    ctx = click.get_current_context()
    parts = [ctx.command_path]
    arguments: list[str] = []
    for param in ctx.command.params:
        if isinstance(param, click.Argument) and param.name is not None:
            value = ctx.params.get(param.name)
            values = value if isinstance(value, (list, tuple)) else [] if value is None else [value]
            arguments += [shlex.quote(str(v)) for v in values]
            continue
        if not isinstance(param, click.Option) or param.name is None:
            continue
        value = ctx.params.get(param.name)
        if value is None or value == param.default or param.name in ("help", "version"):
            continue
        if param.is_flag:
            opts = param.opts if value else param.secondary_opts
            parts.extend(opts[:1])
            continue
        for item in value if param.multiple else [value]:
            parts += [param.opts[0], shlex.quote(str(item))]
    if any(a.lstrip("'").startswith("-") for a in arguments):
        arguments.insert(0, "--")
    return " ".join(parts + arguments)


overwrite_option = click.option("--overwrite", is_flag=True, help="Replace outputs that already exist.")
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
device_option = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where to run; auto picks CUDA when available.",
)


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise click.ClickException("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return name


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="geo_ppp")
def main(verbose: int, quiet: bool) -> None:
    """geo_ppp: diffusion models as plug-and-play priors."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("geo_ppp").setLevel(level)


@main.command("train-prior")
@click.option(
    "--dataset",
    type=click.Choice(["digits", "landcover"]),
    default="digits",
    show_default=True,
    help="Training data: sklearn digits, or land-cover label rasters given with --labels.",
)
@click.option(
    "--labels",
    "label_specs",
    multiple=True,
    help="Land-cover label rasters: PATH[,PATH...][@WEIGHT] (files or folders of GeoTIFFs of one CRS); "
    "repeat for several sources.",
)
@click.option("--legend", default="chesapeake", show_default=True, help="Legend name or JSON (landcover).")
@click.option("--windows", type=int, default=2000, show_default=True, help="Windows drawn per label source.")
@click.option("--batch-size", type=int, default=None, help="Batch size (default: the shipped prior's).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output prior folder.")
@click.option("--steps", type=int, default=None, help="Training steps (default: the shipped prior's).")
@click.option("--base-channels", type=int, default=None, help="U-Net width (default: the shipped prior's).")
@click.option(
    "--schedule", type=click.Choice(["linear", "cosine"]), default=None,
    help="Noise schedule (landcover; default: the shipped prior's, cosine).",
)
@click.option(
    "--prediction", type=click.Choice(["eps", "v"]), default=None,
    help="What the U-Net predicts (landcover; default: the shipped prior's, v).",
)
@click.option(
    "--crop", type=int, default=None,
    help="Train on random crops of this many cells (landcover; default: the shipped prior's, 32).",
)
@click.option(
    "--loss-weighting", type=click.Choice(["uniform", "min_snr"]), default=None,
    help="Per-timestep loss weights (landcover; default: the shipped prior's, min_snr).",
)
@click.option("--bf16", is_flag=True, help="bfloat16 autocast on CUDA (landcover; ignored on the CPU).")
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=None, help="Checkpoint folder (default OUT/.train)."
)
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue from a checkpoint.")
@seed_option
@device_option
@overwrite_option
@_handle_errors
def train_prior(
    dataset: str,
    label_specs: tuple[str, ...],
    legend: str,
    windows: int,
    batch_size: int | None,
    out: Path,
    steps: int | None,
    base_channels: int | None,
    schedule: str | None,
    prediction: str | None,
    crop: int | None,
    loss_weighting: str | None,
    bf16: bool,
    workdir: Path | None,
    resume: bool,
    seed: int,
    device: str,
    overwrite: bool,
) -> None:
    """Train a DDPM prior and save it as safetensors + config.json."""
    from geo_ppp.generation.digits import train_digits_prior
    from geo_ppp.outputs import check_outputs

    if (out / "config.json").exists() and not overwrite and not (resume and _unfinished_prior(out)):
        raise click.ClickException(f"{out} already holds a prior; pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    check_outputs([out / "model.safetensors"], overwrite=True)
    unet = {"base_channels": base_channels} if base_channels else None
    progress = not log.isEnabledFor(logging.DEBUG) and sys.stderr.isatty()
    if dataset == "landcover":
        from geo_ppp.landcover.prior import LabelSource, train_landcover_prior

        if not label_specs:
            raise click.UsageError("--dataset landcover needs --labels PATH[,PATH...][@WEIGHT]")
    common = {
        "steps": steps, "seed": seed, "workdir": workdir, "resume": resume, "device": _device(device),
        "progress": progress, "unet": unet, "command": _command_line(),
    }
    if dataset == "landcover":
        sources = [LabelSource.parse(s, windows) for s in label_specs]
        prior = train_landcover_prior(
            out, sources, legend, batch_size=batch_size, schedule=schedule, prediction=prediction, crop=crop,
            train_overrides={"loss_weighting": loss_weighting} if loss_weighting else None, bf16=bf16,
            **common,
        )
    else:
        prior = train_digits_prior(out, **common)
    click.echo(f"wrote prior to {out} (final loss {prior.meta['final_loss']:.4f})")


def _unfinished_prior(folder: Path) -> bool:
    """Whether ``folder`` holds a prior published at a checkpoint of a run that has not finished."""
    import json

    try:
        meta = json.loads((folder / "config.json").read_text()).get("meta", {})
        return int(meta["trained_steps"]) < int(meta["train"]["steps"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


@main.command("train-classifier")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--epochs", type=int, default=40, show_default=True)
@seed_option
@overwrite_option
@_handle_errors
def train_classifier(out: Path, epochs: int, seed: int, overwrite: bool) -> None:
    """Train the digits classifier used by the class=K constraint."""
    from geo_ppp.generation.digits import save_digit_classifier, train_digit_classifier
    from geo_ppp.outputs import check_outputs

    out.mkdir(parents=True, exist_ok=True)
    check_outputs([out / "model.safetensors"], overwrite)
    model, stats = train_digit_classifier(epochs=epochs, seed=seed)
    save_digit_classifier(model, out, {**stats, "command": _command_line(), "seed": seed, "epochs": epochs})
    click.echo(f"wrote classifier to {out} (accuracy on the judge split {stats['judge_accuracy']:.3f})")


@main.command()
@click.option(
    "--prior",
    default="digits",
    show_default=True,
    help="Shipped prior name or prior folder (geo_ppp or diffusers).",
)
@click.option(
    "--constraint",
    "constraints",
    multiple=True,
    metavar="NAME[=ARG][:WEIGHT]",
    help="Constraint, repeatable: class=3, symmetric, thick, thin, thick=0.45, symmetric:2.",
)
@click.option("--num", type=int, default=64, show_default=True, help="Number of samples.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Output grid PNG; OUT.npy and OUT.json go beside it.",
)
@click.option("--sampler", type=click.Choice(["pnp", "ddpm", "ddim"]), default="pnp", show_default=True)
@click.option("--steps", type=int, default=None, help="Optimiser steps (pnp) or reverse steps (ddpm/ddim).")
@click.option("--lr", type=float, default=None, help="Learning rate (pnp).")
@click.option("--weight", type=float, default=None, help="Initial constraint weight (pnp).")
@click.option(
    "--finish", type=click.Choice(["none", "ddpm", "ddim"]), default=None, help="Finishing pass (pnp)."
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any PnPConfig field, e.g. --set t_max=600.",
)
@click.option(
    "--classifier", type=click.Path(path_type=Path), default=None, help="Classifier folder for class=K."
)
@seed_option
@device_option
@overwrite_option
@_handle_errors
def generate(
    prior: str,
    constraints: tuple[str, ...],
    num: int,
    out: Path,
    sampler: str,
    steps: int | None,
    lr: float | None,
    weight: float | None,
    finish: str | None,
    overrides: tuple[str, ...],
    classifier: Path | None,
    seed: int,
    device: str,
    overwrite: bool,
) -> None:
    """Generate samples from a prior, under constraints (plug-and-play)."""
    from geo_ppp.core.constraints import build_constraint
    from geo_ppp.core.weights import load_prior
    from geo_ppp.generation import constraint_context, pnp_config, progress_callback
    from geo_ppp.generation import generate as run
    from geo_ppp.io.pictures import save_samples
    from geo_ppp.outputs import check_outputs

    if num < 1:
        raise click.BadParameter("must be >= 1", param_hint="--num")
    check_outputs([out, out.with_suffix(".npy"), out.with_suffix(".json")], overwrite)
    loaded = load_prior(prior, device=_device(device))
    # Build (and so validate) the constraints before any work; the classifier is loaded once.
    built = build_constraint(list(constraints), **constraint_context(loaded, classifier))
    config = None
    if sampler == "pnp":
        config = pnp_config(loaded, steps=steps, lr=lr, weight=weight, finish=finish, overrides=overrides)
    show = config is not None and config.steps > 0 and log.isEnabledFor(logging.INFO)
    x = run(
        loaded,
        [built] if built is not None else [],
        num=num,
        seed=seed,
        sampler=sampler,
        config=config,
        steps=steps if sampler != "pnp" else None,
        classifier=classifier,
        callback=progress_callback(config.steps) if show else None,
    )
    record = {
        "command": _command_line(),
        "prior": prior,
        "prior_meta": {k: v for k, v in loaded.meta.items() if k != "train"},
        "constraints": list(constraints),
        "num": num,
        "seed": seed,
        "sampler": sampler,
        "pnp": config.to_dict() if config else None,
        "steps": steps,
        "shape": list(x.shape),
    }
    palette = None
    if loaded.meta.get("kind") == "landcover" and loaded.meta.get("legend"):
        from geo_ppp.geo.legend import load_legend

        palette = load_legend(str(loaded.meta["legend"])).colors
    paths = save_samples(x, out, record, overwrite, palette=palette)
    click.echo("wrote " + ", ".join(str(p) for p in paths))


@main.command("prior-check")
@click.argument("prior")
@click.option(
    "--labels",
    multiple=True,
    help="Real label rasters to compare with (files or folders of GeoTIFFs of one CRS, repeatable); "
    "default: the prior's own held-out windows.",
)
@click.option("--num", type=int, default=256, show_default=True, help="Samples (and real windows) to draw.")
@click.option("--sampler", type=click.Choice(["ddim", "ddpm"]), default="ddim", show_default=True)
@click.option("--steps", type=int, default=50, show_default=True, help="Reverse steps (0: every timestep).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("prior_check"),
    show_default=True,
    help="Folder for prior_check.json and prior_check.png.",
)
@seed_option
@device_option
@overwrite_option
@_handle_errors
def prior_check(
    prior: str,
    labels: tuple[str, ...],
    num: int,
    sampler: str,
    steps: int,
    out: Path,
    seed: int,
    device: str,
    overwrite: bool,
) -> None:
    """Compare a land-cover prior's unconditional samples with real label windows.

    Exit status 0 when every check passes, 3 when one fails (the report is written either way).
    """
    from geo_ppp.core.weights import load_prior
    from geo_ppp.landcover.prior_check import check_prior, write_report
    from geo_ppp.outputs import check_outputs

    if num < 1:
        raise click.BadParameter(f"must be >= 1 (got {num}); e.g. --num 256", param_hint="--num")
    # the folder (and missing parents) is made only once the report exists
    check_outputs([out / "prior_check.json", out / "prior_check.png"], overwrite, create_folders=True)
    loaded = load_prior(prior, device=_device(device))
    report = check_prior(
        loaded, labels=list(labels) or None, num=num, sampler=sampler, steps=steps or None, seed=seed
    )
    report.settings["command"] = _command_line()
    paths = write_report(report, out, overwrite)
    floor = report.training_checks or {}
    if floor:
        click.echo(f"{'':6}{'check':<40} {'prior':>9}  {'training data':>13}  limit")
    for name, check in report.checks.items():
        value = check["value"]
        shown = "n/a" if value is None else f"{value:.4f}"
        other = floor.get(name, {}).get("value")
        train = "" if not floor else f"  {'n/a' if other is None else f'{other:.4f}':>13}"
        click.echo(f"{'PASS' if check['passed'] else 'FAIL'}  {name:<40} {shown:>9}{train}  {check['limit']}")
    if floor:
        failing = [n for n, c in floor.items() if not c["passed"]]
        click.echo(
            "'training data': the same check for the prior's own training windows against the held-out ones"
            + (f"; they fail {', '.join(failing)} too (the held-out area differs there)" if failing else "")
        )
    click.echo("wrote " + ", ".join(str(p) for p in paths))
    if not report.passed:
        raise SystemExit(3)


def _set_verbosity(verbose: int, quiet: bool) -> None:
    """Per-command -v/-q (added to the group's): warnings only by default, -v per-tile info, -vv debug."""
    parent = click.get_current_context().find_root().params
    verbose += parent.get("verbose") or 0
    quiet = quiet or bool(parent.get("quiet"))
    level = logging.WARNING if quiet or not verbose else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.getLogger("geo_ppp").setLevel(level)


def _tile_progress(total_hint: int, enabled: bool) -> Any:
    """A tqdm bar driven by the pipeline's progress callback (tiles/s and ETA)."""
    from tqdm import tqdm

    bar = tqdm(total=total_hint, unit="tile", disable=not enabled, dynamic_ncols=True, leave=True)
    counts = {"ran": 0, "skipped": 0, "resumed": 0}

    def progress(done: int, total: int, tile: Any, status: str) -> None:
        if bar.total != total:
            bar.reset(total=total)
        counts[status] += 1
        bar.set_postfix(counts, refresh=False)
        bar.update(1)

    progress.close = bar.close  # type: ignore[attr-defined]
    return progress


@main.command()
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
    type=click.Choice(["tuned", "paper"]),
    default="tuned",
    show_default=True,
    help="Inference schedule: the prior's tuned one, or the paper's (200 steps + 100 ancestral).",
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
@click.option(
    "--scheduler",
    default=None,
    help="Run tiles on Dask: local, local:N (N worker processes) or a scheduler address (tcp://HOST:8786).",
)
@seed_option
@device_option
@overwrite_option
@click.option("-v", "--verbose", count=True, help="Log which tiles ran or were skipped, and why.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar; only warnings and errors.")
@_handle_errors
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
    verbose: int,
    quiet: bool,
) -> None:
    """Infer a land-cover map of IMAGE (one or more files) from weak labels under the diffusion prior."""
    from geo_ppp.pipeline import segment as run_segment

    _set_verbosity(verbose, quiet)
    try:
        band_list = tuple(int(b) for b in bands.split(",")) if bands else None
    except ValueError:
        msg = f"{bands!r} is not a list of band numbers like 1,2,3,4"
        raise click.BadParameter(msg, param_hint="--bands") from None
    progress = _tile_progress(0, not quiet)
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
            device=_device(device),
            progress=progress,
            scheduler=scheduler,
            command=_command_line(),
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


@main.command("run")
@click.argument("job", type=click.Path(path_type=Path))
@click.option(
    "--scheduler",
    default=None,
    help="local, local:N or a scheduler address (tcp://HOST:8786); overrides the spec's [job] scheduler.",
)
@click.option("--resume/--no-resume", default=None, help="Reuse finished tiles (default: the spec's; yes).")
@click.option("--check", is_flag=True, help="Only validate the spec and plan every region; run nothing.")
@device_option
@overwrite_option
@click.option("-v", "--verbose", count=True, help="Log which tiles ran or were skipped, and why.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar; only warnings and errors.")
@_handle_errors
def run_job_command(
    job: Path,
    scheduler: str | None,
    resume: bool | None,
    check: bool,
    device: str,
    overwrite: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Run a batch job (TOML spec of regions): every tile as a Dask task, each region mosaicked when done."""
    from geo_ppp.pipeline.jobs import load_job, run_job

    _set_verbosity(verbose, quiet)
    spec = load_job(job)
    if check:
        from geo_ppp.pipeline.jobs import prepare_job_region

        for region in spec.regions:
            prep = prepare_job_region(
                spec, region, overwrite or spec.overwrite, True, _device(device), setup=False, lock=False
            )
            click.echo(f"region {region.name}: {len(prep.job.tiles)} tiles -> {region.out}")
        click.echo(f"{spec.path}: {len(spec.regions)} region(s) valid")
        return
    progress = _tile_progress(0, not quiet)
    try:
        run_job(
            spec, scheduler=scheduler, overwrite=overwrite or None, resume=resume, device=_device(device),
            progress=progress, echo=click.echo,
        )
    finally:
        progress.close()


@main.command()
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
@_handle_errors
def demo(out: Path, data: Path | None, steps: int | None, seed: int, device: str, overwrite: bool) -> None:
    """Segment the real sample tiles end to end with the shipped prior and score the map."""
    from geo_ppp.demos.landcover import run_landcover_demo

    _set_verbosity(0, False)
    progress = _tile_progress(0, True)
    try:
        report = run_landcover_demo(
            out, data=data, seed=seed, steps=steps, overwrite=overwrite,
            device=_device(device), progress=progress, echo=click.echo, command=_command_line(),
        )
    finally:
        progress.close()
    click.echo(report)


@main.command("digits-demo")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("demo_out"),
    show_default=True,
    help="Output folder.",
)
@click.option("--num", type=int, default=16, show_default=True, help="Samples per grid.")
@seed_option
@overwrite_option
@_handle_errors
def digits_demo(out: Path, num: int, seed: int, overwrite: bool) -> None:
    """Run the digits demonstration: constrained generation with the shipped prior."""
    from geo_ppp.demos.digits import run_digits_demo

    out.mkdir(parents=True, exist_ok=True)
    report = run_digits_demo(out, num=num, seed=seed, overwrite=overwrite, echo=click.echo)
    click.echo(report)


@main.command()
@click.option(
    "--truth",
    "truth_paths",
    type=click.Path(path_type=Path),
    multiple=True,
    required=True,
    help="High-resolution label raster; repeat for several (paired in order with --weak).",
)
@click.option(
    "--weak",
    "weak_paths",
    type=click.Path(path_type=Path),
    multiple=True,
    required=True,
    help="Weak-label raster (e.g. NLCD) covering the matching --truth; reprojected onto its grid.",
)
@click.option(
    "--legend", required=True, help="Target legend: chesapeake, enviroatlas, nlcd or a legend JSON."
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output co-occurrence JSON.")
@click.option(
    "--smoothing", type=float, default=1.0, show_default=True, help="Pseudo-count added to every cell."
)
@click.option(
    "--site",
    "sites",
    multiple=True,
    help="Site of the matching --truth (e.g. its NAIP tile); repeat once per --truth. Each site then "
    "weighs the same, however many pixels it has. Default: every pixel counts once.",
)
@overwrite_option
@_handle_errors
def cooccurrence(
    truth_paths: tuple[Path, ...],
    weak_paths: tuple[Path, ...],
    legend: str,
    out: Path,
    smoothing: float,
    sites: tuple[str, ...],
    overwrite: bool,
) -> None:
    """Estimate a co-occurrence matrix P(legend class | weak-label code) from truth/weak raster pairs."""
    import dataclasses

    from geo_ppp.outputs import check_outputs
    from geo_ppp.pipeline.evaluate import estimate_cooccurrence_from_files

    check_outputs([out], overwrite)
    co = estimate_cooccurrence_from_files(
        truth_paths, weak_paths, legend, smoothing=smoothing, sites=list(sites) or None
    )
    co = dataclasses.replace(co, description=f"{co.description}. Made by: {_command_line()}")
    co.save(out)
    click.echo(
        f"wrote {out}: {len(co.target_codes)} classes ({co.legend}) x weak codes {list(co.source_codes)}"
    )


@main.command()
@click.argument("pred", type=click.Path(path_type=Path))
@click.argument("truth", type=click.Path(path_type=Path))
@click.option(
    "--legend",
    default=None,
    help="Legend name or JSON (remaps truth codes); default: the one PRED records, else chesapeake. "
    "A legend that contradicts PRED's is refused.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
@_handle_errors
def evaluate(pred: Path, truth: Path, legend: str | None, as_json: bool) -> None:
    """Score a predicted class map PRED against a truth raster TRUTH (accuracy, IoU, confusion)."""
    import json

    from geo_ppp.pipeline.evaluate import evaluate_files, format_scores, map_legend

    loaded = map_legend(pred, legend)
    scores = evaluate_files(pred, truth, loaded)
    if as_json:
        record = {"prediction": str(pred), "truth": str(truth), "legend": loaded.name}
        record.update(scores.to_dict(loaded))
        click.echo(json.dumps(record, indent=2))
        return
    click.echo(f"prediction: {pred}\ntruth:      {truth}\nlegend:     {loaded.name}")
    click.echo(format_scores(scores, loaded))


if __name__ == "__main__":  # pragma: no cover
    main()
