"""``geo-ppp demo``: the digits demonstration, end to end, with the shipped prior on the CPU."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from geo_ppp.core.constraints import ink_density
from geo_ppp.core.weights import load_prior
from geo_ppp.generation import check_sample_memory, default_pnp_config, generate
from geo_ppp.io.pictures import save_samples
from geo_ppp.outputs import check_outputs

__all__ = ["DEMO_RUNS", "asymmetry", "run_digits_demo"]

#: (output name, constraints) of each demo grid.
DEMO_RUNS: list[tuple[str, list[str]]] = [
    ("unconstrained", []),
    ("class3", ["class=3"]),
    ("symmetric", ["symmetric"]),
    ("thick", ["thick"]),
    ("thin", ["thin"]),
    ("class7_thick", ["class=7", "thick"]),
]


def asymmetry(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between each sample and its left-right mirror, (B,)."""
    return (x - x.flip(-1)).abs().flatten(1).mean(1)


def run_digits_demo(
    out: str | os.PathLike[str],
    num: int = 16,
    seed: int = 0,
    overwrite: bool = False,
    echo: Callable[[str], object] = print,
    shown: str | os.PathLike[str] | None = None,
) -> str:
    """Generate one grid per entry of :data:`DEMO_RUNS` into ``out`` and summarise them.

    ``shown`` is the folder the summary names (the CLI writes into a temporary folder that becomes it).

    Returns:
        A small text table: per run, the share of samples the independent judge classifies as the
        wanted class, the mean asymmetry and the mean ink density.
    """
    from geo_ppp.generation.digits import judge_classifier

    out = Path(out)
    pngs = [out / f"{name}.png" for name, _ in DEMO_RUNS]
    check_outputs([p.with_suffix(s) for p in pngs for s in (".png", ".npy", ".json")], overwrite)
    prior = load_prior("digits")
    check_sample_memory(prior, num)
    config = default_pnp_config(prior)
    judge = judge_classifier()
    rows = ["run              judge-class  asymmetry  ink", "---------------  -----------  ---------  -----"]
    for (name, constraints), png in zip(DEMO_RUNS, pngs, strict=True):
        echo(f"generating {name} ({', '.join(constraints) or 'no constraint'}) ...")
        x = generate(prior, constraints, num=num, seed=seed, config=config)
        record = {
            "prior": "digits",
            "constraints": constraints,
            "num": num,
            "seed": seed,
            "pnp": config.to_dict(),
        }
        save_samples(x, png, record, overwrite)
        pred = judge.predict(x.flatten(1).numpy())
        target = next((int(c.split("=")[1]) for c in constraints if c.startswith("class=")), None)
        hit = "-" if target is None else f"{(pred == target).mean():.0%} ({target})"
        rows.append(
            f"{name:<15}  {hit:>11}  {float(asymmetry(x).mean()):9.3f}  {float(ink_density(x).mean()):.3f}"
        )
    rows.append(f"grids written to {shown or out}/: " + ", ".join(f"{p.stem}.png/.npy/.json" for p in pngs))
    return "\n".join(rows)
