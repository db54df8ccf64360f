"""``geo-ppp tsp``: the travelling salesman problem with a diffusion prior (solve, render)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from geo_ppp.cli.options import (
    RegistryChoice,
    command_line,
    device_option,
    handle_errors,
    overwrite_option,
    resolve_device,
    seed_option,
)

log = logging.getLogger("geo_ppp")


def _relaxations() -> list[str]:
    from geo_ppp.tsp.solve import RELAXATIONS

    return list(RELAXATIONS)


@click.group("tsp")
def tsp() -> None:
    """Travelling salesman: solve instances under a diffusion prior, draw instances and tours."""


@tsp.command("solve")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Tour file: one 1-based closed tour per line.",
)
@click.option("--prior", default="tsp50", show_default=True, help="Shipped prior name or prior folder.")
@click.option(
    "--steps", type=click.IntRange(min=0), default=None, help="Optimiser steps (default 32; paper: 256)."
)
@click.option(
    "--no-prior", is_flag=True, help="Decode a constant adjacency (greedy edge + 2-opt): the ablation."
)
@click.option(
    "--relaxation",
    type=RegistryChoice(_relaxations),
    default=None,
    help="Latent -> adjacency (default sinkhorn; softmax is the paper's).",
)
@click.option("--no-two-opt", is_flag=True, help="Skip the 2-opt improvement of the decoded tours.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Instances optimised together (default 64).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@seed_option
@device_option
@overwrite_option
@handle_errors
def solve(
    files: tuple[Path, ...],
    out: Path,
    prior: str,
    steps: int | None,
    no_prior: bool,
    relaxation: str | None,
    no_two_opt: bool,
    batch_size: int | None,
    as_json: bool,
    seed: int,
    device: str,
    overwrite: bool,
) -> None:
    """Solve the instances in FILES (text format or TSPLIB .tsp) and write their tours to --out."""
    from geo_ppp.core.weights import load_prior
    from geo_ppp.outputs import claim_outputs
    from geo_ppp.tsp.files import read_problems, write_tours
    from geo_ppp.tsp.run import solve_problems
    from geo_ppp.tsp.solve import SolveConfig

    # checked and locked before any work; written atomically
    with claim_outputs({"--out": out}, overwrite, command_line()):
        problems = read_problems(list(files))
        dev = resolve_device(device)
        loaded = None if no_prior else load_prior(prior, device=dev)
        given = {"steps": steps, "relaxation": relaxation, "batch_size": batch_size}
        config = SolveConfig(two_opt=not no_two_opt, **{k: v for k, v in given.items() if v is not None})
        tours, summary = solve_problems(problems, loaded, config, seed=seed, device=dev)
        write_tours(out, tours)
    summary = {"command": command_line(), "out": str(out), "device": dev, **summary}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    gap = (
        f", gap {100 * summary['gap']:.2f} % over {summary['with_reference']} reference tours"
        if "gap" in summary
        else ""
    )
    click.echo(
        f"solved {summary['instances']} instance(s) of {', '.join(map(str, summary['sizes']))} nodes "
        f"({'no prior' if loaded is None else f'prior {prior}, {config.steps} steps'}): mean length "
        f"{summary['mean_length']:.4f}{gap}, {summary['seconds_per_instance']:.3f} s per instance; "
        f"tours in {out}"
    )


@tsp.command("render")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Output PNG (a grid of instances)."
)
@click.option(
    "--tours",
    type=click.Path(path_type=Path),
    default=None,
    help="Tour file to draw (default: the reference tours).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=16, show_default=True, help="Instances drawn at most."
)
@click.option(
    "--size", type=click.IntRange(min=16), default=192, show_default=True, help="Pixels per instance."
)
@overwrite_option
@handle_errors
def render(
    files: tuple[Path, ...], out: Path, tours: Path | None, limit: int, size: int, overwrite: bool
) -> None:
    """Draw the instances in FILES and their tours as a PNG grid (nodes white, tour edges grey)."""
    from geo_ppp.io.pictures import grid_image, write_png
    from geo_ppp.outputs import claim_outputs
    from geo_ppp.tsp.draw import draw_problems
    from geo_ppp.tsp.files import read_problems, read_tours

    if out.suffix.lower() != ".png":
        raise click.BadParameter(
            f"{out} must end in .png (e.g. {out.with_suffix('.png')})", param_hint="--out"
        )
    # checked and locked before any work; written atomically
    with claim_outputs({"--out": out}, overwrite, command_line()):
        problems = read_problems(list(files))
        drawn = (
            read_tours(tours, [p.n for p in problems])
            if tours is not None
            else [p.reference for p in problems]
        )
        images = draw_problems(problems[:limit], drawn[:limit], size)
        write_png(out, grid_image(images, scale=1, pad=2))
    click.echo(f"drew {min(limit, len(problems))} of {len(problems)} instance(s) to {out}")
