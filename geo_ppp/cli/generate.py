"""``geo-ppp generate``, ``geo-ppp prior-check`` and ``geo-ppp digits-demo``: sample a prior, check it."""

from __future__ import annotations

import logging
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


def _samplers() -> list[str]:
    from geo_ppp.core.sampling import SAMPLERS

    return sorted(SAMPLERS)


@click.command()
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
@click.option(
    "--num", type=click.IntRange(min=1), default=64, show_default=True,
    help="Number of samples (all made at once: at most what half the memory holds).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Output grid PNG; OUT.npy and OUT.json go beside it.",
)
@click.option("--sampler", type=RegistryChoice(_samplers, extra=["pnp"]), default="pnp", show_default=True)
@click.option(
    "--steps", type=click.IntRange(min=1), default=None,
    help="Optimiser steps (pnp) or reverse steps (ddpm/ddim, at most the prior's timesteps).",
)
@click.option(
    "--lr", type=FiniteFloatRange(min=0, min_open=True), default=None, help="Learning rate (pnp)."
)
@click.option(
    "--weight", type=FiniteFloatRange(min=0), default=None, help="Initial constraint weight (pnp)."
)
@click.option(
    "--finish", type=RegistryChoice(_samplers, extra=["none"]), default=None, help="Finishing pass (pnp)."
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
@checked_seed_option
@device_option
@overwrite_option
@handle_errors
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
    from geo_ppp.generation import check_sample_memory, constraint_context, pnp_config, progress_callback
    from geo_ppp.generation import generate as run
    from geo_ppp.io.pictures import save_samples
    from geo_ppp.outputs import claim_outputs

    if out.suffix.lower() != ".png":
        raise click.BadParameter(
            f"must end in .png (got {out.name}); e.g. --out samples.png", param_hint="--out"
        )
    files = {"--out": out, "its samples": out.with_suffix(".npy"), "its settings": out.with_suffix(".json")}
    with claim_outputs(files, overwrite, command_line()):
        loaded = load_prior(prior, device=resolve_device(device))
        check_sample_memory(loaded, num)
        if sampler != "pnp" and steps is not None and steps > loaded.schedule.num_steps:
            raise click.BadParameter(
                f"{steps} is more than the prior's {loaded.schedule.num_steps} timesteps; give at most "
                f"{loaded.schedule.num_steps}",
                param_hint="--steps",
            )
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
            "command": command_line(),
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


def _claim_folder(out: Path, names: list[str], overwrite: bool):  # noqa: ANN202 - a context manager
    """Check and lock the files ``names`` inside folder ``out`` before any work (the folder may not exist).

    The lock is on ``out`` itself (beside it), so it holds whether or not the folder exists yet.
    """
    from geo_ppp.outputs import RunLock, check_outputs

    if out.exists() and not out.is_dir():
        from geo_ppp.outputs import OutputError

        raise OutputError(f"--out {out} is a file; give a folder for {', '.join(names)}")
    check_outputs([out / n for n in names], overwrite, create_folders=True)
    return RunLock([out], command_line())


def _write_into(out: Path, write):  # noqa: ANN001, ANN202
    """``write(folder)`` into ``out``, returning what it wrote.

    A new folder appears whole (atomic_folder); an existing one gets each file atomically (the run
    holds the lock on it).
    """
    from geo_ppp.core.atomic import atomic_folder

    if out.is_dir():
        return write(out)
    with atomic_folder(out) as tmp:
        written = write(tmp)
    return [out / Path(p).name for p in written]


@click.command("prior-check")
@click.argument("prior")
@click.option(
    "--labels",
    multiple=True,
    help="Real label rasters to compare with (files or folders of GeoTIFFs of one CRS, repeatable); "
    "default: the prior's own held-out windows.",
)
@click.option(
    "--num", type=click.IntRange(min=1), default=256, show_default=True,
    help="Samples (and real windows) to draw (at most what half the memory holds).",
)
@click.option("--sampler", type=RegistryChoice(_samplers), default="ddim", show_default=True)
@click.option(
    "--steps", type=click.IntRange(min=0), default=50, show_default=True,
    help="Reverse steps (0: every timestep; at most the prior's timesteps).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("prior_check"),
    show_default=True,
    help="Folder for prior_check.json and prior_check.png.",
)
@checked_seed_option
@device_option
@overwrite_option
@handle_errors
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

    # the folder (and missing parents) is made only once the report exists, whole
    with _claim_folder(out, ["prior_check.json", "prior_check.png"], overwrite):
        loaded = load_prior(prior, device=resolve_device(device))
        report = check_prior(
            loaded, labels=list(labels) or None, num=num, sampler=sampler, steps=steps or None, seed=seed
        )
        report.settings["command"] = command_line()
        paths = _write_into(out, lambda folder: write_report(report, folder, overwrite=True))
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


@click.command("digits-demo")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("demo_out"),
    show_default=True,
    help="Output folder.",
)
@click.option(
    "--num", type=click.IntRange(min=1), default=16, show_default=True,
    help="Samples per grid (at most what half the memory holds).",
)
@checked_seed_option
@overwrite_option
@handle_errors
def digits_demo(out: Path, num: int, seed: int, overwrite: bool) -> None:
    """Run the digits demonstration: constrained generation with the shipped prior."""
    from geo_ppp.demos.digits import DEMO_RUNS, run_digits_demo

    names = [f"{name}{ext}" for name, _ in DEMO_RUNS for ext in (".png", ".npy", ".json")]
    with _claim_folder(out, names, overwrite):
        reports: list[str] = []

        def write(folder: Path) -> list[Path]:
            report = run_digits_demo(folder, num=num, seed=seed, overwrite=True, echo=click.echo, shown=out)
            reports.append(report)
            return [folder / n for n in names]

        _write_into(out, write)
    click.echo(reports[0])
