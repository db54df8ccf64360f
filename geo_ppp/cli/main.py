"""The ``geo-ppp`` group: logging set-up, and every command registered from its module."""

from __future__ import annotations

import logging

import click

from geo_ppp.cli.evaluate import cooccurrence, evaluate
from geo_ppp.cli.generate import digits_demo, generate, prior_check
from geo_ppp.cli.options import ProgressGroup, verbosity_options
from geo_ppp.cli.segment import demo, run_job_command, segment
from geo_ppp.cli.train import export_onnx, train_classifier, train_prior
from geo_ppp.cli.tsp import tsp

__all__ = ["main"]


@click.group(cls=ProgressGroup, context_settings={"help_option_names": ["-h", "--help"]})
@verbosity_options
@click.version_option(package_name="geo_ppp")
def main(verbose: int, quiet: bool) -> None:
    """geo_ppp: diffusion models as plug-and-play priors."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("geo_ppp").setLevel(level)


for command in (
    train_prior,
    train_classifier,
    generate,
    prior_check,
    segment,
    run_job_command,
    demo,
    digits_demo,
    cooccurrence,
    evaluate,
    export_onnx,
    tsp,
):
    main.add_command(command)
