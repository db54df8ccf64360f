"""``geo-ppp cooccurrence`` and ``geo-ppp evaluate``: weak-label statistics and map scores."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from geo_ppp.cli.options import (
    command_line,
    handle_errors,
    overwrite_option,
)

log = logging.getLogger("geo_ppp")


@click.command()
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
@handle_errors
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

    from geo_ppp.outputs import claim_outputs
    from geo_ppp.pipeline.evaluate import estimate_cooccurrence_from_files

    # checked and locked before any work; written atomically
    with claim_outputs({"--out": out}, overwrite, command_line()):
        co = estimate_cooccurrence_from_files(
            truth_paths, weak_paths, legend, smoothing=smoothing, sites=list(sites) or None
        )
        co = dataclasses.replace(co, description=f"{co.description}. Made by: {command_line()}")
        co.save(out)
    click.echo(
        f"wrote {out}: {len(co.target_codes)} classes ({co.legend}) x weak codes {list(co.source_codes)}"
    )


@click.command()
@click.argument("pred", type=click.Path(path_type=Path))
@click.argument("truth", type=click.Path(path_type=Path))
@click.option(
    "--legend",
    default=None,
    help="Legend name or JSON (remaps truth codes); default: the one PRED records, else chesapeake. "
    "A legend that contradicts PRED's is refused.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
@handle_errors
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
