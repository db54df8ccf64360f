"""Solving the instances read from files: grouped by size, timed, summarised (``geo-ppp tsp solve``).

Example:
    >>> from geo_ppp.tsp.files import Problem
    >>> import numpy as np
    >>> c = np.random.default_rng(0).random((10, 2))
    >>> tours, summary = solve_problems([Problem(c, c, "euclid", None, "x:1")], prior=None)
    >>> summary["instances"]
    1
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from geo_ppp.core.weights import Prior
from geo_ppp.tsp.files import Problem
from geo_ppp.tsp.instances import check_tour
from geo_ppp.tsp.solve import SolveConfig, solve_tsp

__all__ = ["solve_problems"]


def solve_problems(
    problems: list[Problem],
    prior: Prior | None,
    config: SolveConfig | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> tuple[list[np.ndarray], dict[str, object]]:
    """Solve every problem (each size in its own batches); tours in input order, and a summary.

    Instance i (in input order) uses the seed ``seed + i``, whatever the batching.

    Returns:
        0-based tours, and a summary: instances, sizes, mean length, the gap against the reference
        tours (sum of lengths / sum of reference lengths - 1) where the input has them, seconds per
        instance, and every instance's length.
    """
    config = config or SolveConfig()
    tours: list[np.ndarray | None] = [None] * len(problems)
    start = time.perf_counter()
    for n in sorted({p.n for p in problems}):
        idx = [i for i, p in enumerate(problems) if p.n == n]
        coords = np.stack([problems[i].coords for i in idx])
        found = solve_tsp(coords, prior, config, [seed + i for i in idx], device, progress)
        for i, t in zip(idx, found, strict=True):
            tours[i] = check_tour(t, n, f"the tour found for {problems[i].where}")
    seconds = time.perf_counter() - start
    done = [t for t in tours if t is not None]
    lengths = [p.length(t) for p, t in zip(problems, done, strict=True)]
    summary: dict[str, object] = {
        "instances": len(problems),
        "sizes": sorted({p.n for p in problems}),
        "mean_length": float(np.mean(lengths)) if lengths else float("nan"),
        "seconds_per_instance": seconds / max(len(problems), 1),
        "prior": None if prior is None else prior.meta.get("name", "prior"),
        "steps": 0 if prior is None else config.steps,
        "lengths": lengths,
    }
    with_ref = [(p, t) for p, t in zip(problems, done, strict=True) if p.reference is not None]
    if with_ref:
        found_sum = sum(p.length(t) for p, t in with_ref)
        ref_sum = sum(p.length(p.reference) for p, _ in with_ref)  # type: ignore[arg-type]
        summary["gap"] = found_sum / ref_sum - 1
        summary["with_reference"] = len(with_ref)
    return done, summary
