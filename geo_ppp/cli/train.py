"""``geo-ppp train-prior`` and ``geo-ppp train-classifier``: train the priors and the digits classifier."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from geo_ppp.cli.options import (
    FiniteFloatRange,
    RegistryChoice,
    checked_seed_option,
    command_line,
    device_option,
    handle_errors,
    overwrite_option,
    resolve_device,
)

log = logging.getLogger("geo_ppp")


def _schedules() -> list[str]:
    from geo_ppp.core.schedules import NOISE_SCHEDULES

    return list(NOISE_SCHEDULES)


def _predictions() -> tuple[str, ...]:
    from geo_ppp.core.denoisers import UNetDenoiser

    return UNetDenoiser.PREDICTIONS


def _loss_weightings() -> tuple[str, ...]:
    from geo_ppp.core.training import LOSS_WEIGHTINGS

    return LOSS_WEIGHTINGS


@click.command("train-prior")
@click.option(
    "--dataset",
    type=click.Choice(["digits", "landcover", "tsp"]),
    default="digits",
    show_default=True,
    help="Training data: sklearn digits, land-cover label rasters given with --labels, or uniform TSP "
    "instances labelled with fast-tsp (--nodes, --instances).",
)
@click.option(
    "--nodes", type=click.IntRange(4, 200), default=50, show_default=True, help="Nodes per instance (tsp)."
)
@click.option(
    "--instances", type=click.IntRange(min=1), default=None,
    help="Labelled instances, cached in the workdir (tsp; default: the shipped prior's, 20000).",
)
@click.option(
    "--labels",
    "label_specs",
    multiple=True,
    help="Land-cover label rasters: PATH[,PATH...][@WEIGHT] (files or folders of GeoTIFFs of one CRS); "
    "repeat for several sources.",
)
@click.option("--legend", default="chesapeake", show_default=True, help="Legend name or JSON (landcover).")
@click.option(
    "--windows", type=click.IntRange(min=1), default=2000, show_default=True,
    help="Windows drawn per label source (at most what half the memory holds).",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=None,
    help="Batch size (default: the shipped prior's).",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output prior folder.")
@click.option(
    "--steps", type=click.IntRange(min=1), default=None, help="Training steps (default: the shipped prior's)."
)
@click.option(
    "--base-channels", type=click.IntRange(min=1, max=512), default=None,
    help="U-Net width (default: the shipped prior's).",
)
@click.option(
    "--schedule", type=RegistryChoice(_schedules), default=None,
    help="Noise schedule (landcover; default: the shipped prior's, cosine).",
)
@click.option(
    "--prediction", type=RegistryChoice(_predictions), default=None,
    help="What the U-Net predicts (landcover; default: the shipped prior's, v).",
)
@click.option(
    "--crop", type=click.IntRange(min=8), default=None,
    help="Train on random crops of this many cells (landcover; default: the shipped prior's, 32).",
)
@click.option(
    "--loss-weighting", type=RegistryChoice(_loss_weightings), default=None,
    help="Per-timestep loss weights (landcover; default: the shipped prior's, min_snr).",
)
@click.option(
    "--balance", type=FiniteFloatRange(min=0.0, max=10.0), default=0.0, show_default=True,
    help="Class-aware window sampling (landcover): draw windows holding rare classes more often; "
    "0 draws uniformly, 1 about balances the classes.",
)
@click.option(
    "--ema-decay", type=FiniteFloatRange(min=0.0, max=1.0, max_open=True), default=None,
    help="Decay of the weights' moving average that the prior ships (landcover; default: the shipped "
    "prior's, 0.999; 0 ships the optimised weights). A resumed run may change it.",
)
@click.option(
    "--cooldown", type=click.IntRange(min=0), default=None,
    help="Decay the learning rate linearly to 0 over the last N steps (landcover; default 0). A resumed "
    "run may add one: --steps (checkpoint step + N) --cooldown N cools a trained prior down.",
)
@click.option("--bf16", is_flag=True, help="bfloat16 autocast on CUDA (landcover; ignored on the CPU).")
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=None, help="Checkpoint folder (default OUT/.train)."
)
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue from a checkpoint.")
@checked_seed_option
@device_option
@overwrite_option
@handle_errors
def train_prior(
    dataset: str,
    label_specs: tuple[str, ...],
    nodes: int,
    instances: int | None,
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
    balance: float,
    ema_decay: float | None,
    cooldown: int | None,
    bf16: bool,
    workdir: Path | None,
    resume: bool,
    seed: int,
    device: str,
    overwrite: bool,
) -> None:
    """Train a DDPM prior and save it as safetensors + config.json."""
    from geo_ppp.generation.digits import train_digits_prior
    from geo_ppp.outputs import RunLock

    workdir = workdir if workdir is not None else out / ".train"
    if dataset == "landcover" and not label_specs:
        raise click.UsageError("--dataset landcover needs --labels PATH[,PATH...][@WEIGHT]")
    _check_folder_out(out, overwrite, "prior", resume_ok=resume and _unfinished_prior(out), workdir=workdir)
    unet = {"base_channels": base_channels} if base_channels is not None else None
    progress = not log.isEnabledFor(logging.DEBUG) and sys.stderr.isatty()
    common = {
        "steps": steps, "seed": seed, "workdir": workdir, "resume": resume, "device": resolve_device(device),
        "progress": progress, "unet": unet, "command": command_line(),
    }
    locked = [out] if _inside(workdir, out) else [out, workdir]
    with RunLock(locked, common["command"]):  # type: ignore[arg-type]
        if dataset == "landcover":
            from geo_ppp.landcover.prior import LabelSource, train_landcover_prior

            sources = [LabelSource.parse(s, windows) for s in label_specs]
            prior = train_landcover_prior(
                out, sources, legend, batch_size=batch_size, schedule=schedule, prediction=prediction,
                crop=crop,
                train_overrides=_given(loss_weighting=loss_weighting, ema_decay=ema_decay, cooldown=cooldown),
                bf16=bf16, balance=balance, restart_on_mismatch=overwrite, **common,
            )
        elif dataset == "tsp":
            from geo_ppp.tsp.prior import train_tsp_prior

            prior = train_tsp_prior(out, nodes=nodes, instances=instances, batch_size=batch_size, **common)
        else:
            prior = train_digits_prior(out, restart_on_mismatch=overwrite, **common)
    click.echo(
        f"wrote prior {out} ({out / 'model.safetensors'}, {out / 'config.json'}; checkpoint "
        f"{workdir / 'checkpoint.safetensors'}; final loss {prior.meta['final_loss']:.4f})"
    )


def _inside(path: Path, folder: Path) -> bool:
    from geo_ppp.core.checkpoints import inside

    return inside(path, folder)


def _check_folder_out(
    out: Path, overwrite: bool, holds: str, resume_ok: bool = False, workdir: Path | None = None
) -> None:
    """Before any work: ``out`` may become a folder output holding a ``holds`` (published whole).

    Raises:
        OutputError / OutputExistsError: a file in the way, a folder that holds a finished output or
            other things (without --overwrite), a parent that cannot be written.
    """
    import os

    from geo_ppp.errors import OutputExistsError
    from geo_ppp.outputs import OutputError

    if out.exists() and not out.is_dir():
        raise OutputError(
            f"--out {out} is a file; this command writes a {holds} folder there: give a folder path "
            "(a new one, or one holding a previous run's output with --overwrite)"
        )
    if out.is_dir() and not overwrite and not resume_ok:
        if (out / "config.json").exists() or (out / "model.safetensors").exists():
            raise OutputExistsError(f"{out} already holds a {holds}; pass --overwrite to replace it")
        others = [p for p in out.iterdir() if workdir is None or not _inside(p, workdir)]
        if others:
            raise OutputExistsError(
                f"{out} exists and holds other files ({others[0].name}, ...); pass --overwrite to write the "
                f"{holds} into it anyway, or choose another --out"
            )
    if workdir is not None and workdir.exists() and not workdir.is_dir():
        raise OutputError(f"--workdir {workdir} is a file; give a folder for the checkpoints")
    parent = out.absolute().parent
    ancestor = next((a for a in (parent, *parent.parents) if a.exists()), None)
    if ancestor is None or not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
        raise OutputError(
            f"--out {out} cannot be written: {ancestor} is not a writable folder; choose another --out"
        )


def _given(**settings: object) -> dict[str, object]:
    """The settings that were given (not None)."""
    return {k: v for k, v in settings.items() if v is not None}


def _unfinished_prior(folder: Path) -> bool:
    """Whether ``folder`` holds a prior published at a checkpoint of a run that has not finished."""
    import json

    try:
        meta = json.loads((folder / "config.json").read_text()).get("meta", {})
        return int(meta["trained_steps"]) < int(meta["train"]["steps"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


@click.command("train-classifier")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--epochs", type=click.IntRange(min=1, max=10000), default=40, show_default=True)
@checked_seed_option
@overwrite_option
@handle_errors
def train_classifier(out: Path, epochs: int, seed: int, overwrite: bool) -> None:
    """Train the digits classifier used by the class=K constraint."""
    from geo_ppp.core.atomic import atomic_folder
    from geo_ppp.core.checkpoints import carry
    from geo_ppp.generation.digits import save_digit_classifier, train_digit_classifier
    from geo_ppp.outputs import RunLock

    _check_folder_out(out, overwrite, "classifier")
    command = command_line()
    with RunLock([out], command):
        model, stats = train_digit_classifier(epochs=epochs, seed=seed)
        with atomic_folder(out) as tmp:
            carry(out, tmp, skip=("model.safetensors",))  # other files in the folder stay
            save_digit_classifier(model, tmp, {**stats, "command": command, "seed": seed, "epochs": epochs})
    click.echo(
        f"wrote classifier {out / 'model.safetensors'} "
        f"(accuracy on the judge split {stats['judge_accuracy']:.3f})"
    )


@click.command("export-onnx")
@click.argument("segmenter", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--tile-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Input tile size, pixels: a multiple of the segmenter's cell (4); the largest the memory "
                   "allows is checked before any work.")
@click.option("--overlap", type=click.IntRange(min=0), default=None,
              help="Tile overlap for Deepness, pixels: below half the tile, and a whole percent of it "
                   "(Deepness stores a percent). Default: a quarter of the tile (64 px = 25 % of 256).")
@overwrite_option
@handle_errors
def export_onnx(segmenter: Path, out: Path, tile_size: int, overlap: int | None, overwrite: bool) -> None:
    """Export a saved segmenter (--save-segmenter) to ONNX for the QGIS Deepness plugin."""
    from geo_ppp.landcover.export import export_onnx as export

    report = export(segmenter, out, overwrite=overwrite, tile_size=tile_size, overlap=overlap,
                    command=command_line())
    meta = report["metadata"]
    click.echo(
        f"wrote {report['out']} (Deepness segmentor, ONNX opset {meta['geo_ppp']['opset']}: "
        f"{', '.join(meta['class_names'].values())}; {meta['resolution']:g} cm/px, {tile_size} px tiles, "
        f"{meta['geo_ppp']['overlap_px']} px overlap ({meta['tiles_overlap']} %); onnxruntime matches "
        f"torch within {report['max_abs_difference']:.1e}). In Deepness, click \"Load default "
        "parameters\" after loading it"
    )
