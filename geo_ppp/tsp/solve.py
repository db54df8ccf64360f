"""Solving TSP instances with a diffusion prior: the paper's relaxation through the generic core.

Each instance's latent is a logit per candidate edge (n nodes x k nearest neighbours; k = n - 1 is
every edge, the paper's N x N matrix). A row softmax (or Sinkhorn normalisation) turns the logits
into a soft adjacency ``A``; the image is ``sum_ij A_ij E_ij`` over the candidate edges' line images
with the node dots fixed (:class:`~geo_ppp.tsp.render.EdgeImages`), and
:func:`~geo_ppp.core.pnp.plug_and_play` minimises the prior's diffusion loss of that image through
its ``decode`` hook. The tour is read out of ``A`` by :func:`~geo_ppp.tsp.decode.greedy_tours` and
improved by :func:`~geo_ppp.tsp.decode.two_opt`. Without a prior, ``A`` is constant: the same decoder
from no information (the ``--no-prior`` ablation).

Example:
    >>> import numpy as np
    >>> coords = np.random.default_rng(0).random((2, 20, 2))
    >>> solve_tsp(coords, prior=None).shape
    (2, 20)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from geo_ppp.core.config import config_from_mapping, config_to_dict
from geo_ppp.core.pnp import PnPConfig, plug_and_play
from geo_ppp.core.weights import Prior
from geo_ppp.errors import ConfigError
from geo_ppp.tsp.decode import greedy_tours, two_opt
from geo_ppp.tsp.render import edge_images

__all__ = ["RELAXATIONS", "TSP_PNP", "SolveConfig", "relax", "solve_tsp"]

log = logging.getLogger(__name__)

#: The paper's optimiser for TSP: t from T down to about 5 along a linear ramp with a slow cosine
#: swell (amplitude 1/3, period 100 pi steps: 0.815 periods over the paper's 256 steps; the same
#: shape at any step count), Adam with betas (0, 0.9) and lr 1 decaying linearly (to 0.77 at 256 steps).
TSP_PNP = {
    "steps": 256,
    "lr": 1.0,
    "lr_schedule": "linear",
    "lr_final": 0.77,
    "t_schedule": "cosine",
    "t_amplitude": 1 / 3,
    "t_cycles": 256 / (100 * 3.141592653589793),
    "t_min": 1,
    "adam_beta1": 0.0,
    "adam_beta2": 0.9,
    "grad_clip": None,
    "clip": None,
    "amp": False,
}


def _softmax(logits: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
    return logits.softmax(-1)


def _sinkhorn(logits: torch.Tensor, nbr: torch.Tensor, iters: int = 10) -> torch.Tensor:
    """Alternate row and column normalisation of the candidate logits, in log space."""
    b, n, k = logits.shape
    dense = torch.full((b, n, n), -torch.inf, device=logits.device, dtype=logits.dtype)
    dense = dense.scatter(2, nbr, logits)
    for _ in range(iters):
        dense = dense - dense.logsumexp(2, keepdim=True)
        dense = dense - dense.logsumexp(1, keepdim=True)
    dense = dense - dense.logsumexp(2, keepdim=True)
    return torch.gather(dense.exp(), 2, nbr)


#: latent logits (B, n, k) and neighbours (B, n, k) -> soft adjacency rows (B, n, k)
RELAXATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "softmax": _softmax,
    "sinkhorn": _sinkhorn,
}


@dataclass(frozen=True)
class SolveConfig:
    """Settings of :func:`solve_tsp`.

    Attributes:
        steps: plug-and-play steps (the paper: 256; 32 did as well as 128 on validation instances
            with the shipped prior, at a quarter of the cost).
        relaxation: ``sinkhorn`` (rows and columns normalised: every node's in- and out-weight 1,
            as in a tour) or ``softmax`` (the paper's row softmax). On validation instances (TSP50
            seeds 998 and 999, not the benchmark's) Sinkhorn was as good or better at 32 steps.
        knn: candidate edges per node (its nearest neighbours); 0 means every edge (the paper's
            N x N latent). 10 drew cleaner relaxed images than every edge on validation instances
            and costs a fifth of the rendering.
        logit_scale: the relaxation sees ``logit_scale * latent`` (the paper: 0.1, an entropy
            regulariser): with Adam's unit-size steps at lr 1, the adjacency then sharpens over tens
            of steps instead of jumping to one-hot rows at the first.
        init_scale: standard deviation of the initial latent (the paper: 1).
        two_opt: improve the decoded tours with 2-opt.
        batch_size: instances optimised together.
        pnp: overrides of the optimiser settings (:data:`TSP_PNP`).
    """

    steps: int = 32
    relaxation: str = "sinkhorn"
    knn: int = 10
    logit_scale: float = 0.1
    init_scale: float = 1.0
    two_opt: bool = True
    batch_size: int = 64
    pnp: dict | None = None

    def __post_init__(self) -> None:
        if self.relaxation not in RELAXATIONS:
            raise ConfigError(f"relaxation {self.relaxation!r} is unknown; use one of {sorted(RELAXATIONS)}")
        if self.steps < 0 or self.knn < 0 or self.batch_size < 1:
            raise ConfigError("steps and knn must be >= 0 and batch_size >= 1")

    def to_dict(self) -> dict[str, object]:
        """JSON-able form."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SolveConfig:
        """Strict parse."""
        return config_from_mapping(cls, data, "the TSP solve config")


def neighbours(coords: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` nearest other nodes of every node, nearest first: (B, n, 2) -> (B, n, k) long."""
    d = torch.cdist(coords, coords)
    d = d + torch.eye(coords.shape[1], device=coords.device) * 1e9
    return d.topk(k, dim=-1, largest=False).indices


def relax(logits: torch.Tensor, nbr: torch.Tensor, relaxation: str = "softmax") -> torch.Tensor:
    """The soft adjacency (B, n, n) of candidate logits (B, n, k) (zero off the candidates)."""
    rows = RELAXATIONS[relaxation](logits, nbr)
    b, n, _ = logits.shape
    return torch.zeros(b, n, n, device=logits.device, dtype=rows.dtype).scatter(2, nbr, rows)


def _optimise(
    coords: np.ndarray, prior: Prior, config: SolveConfig, seeds: list[int], device: torch.device
) -> np.ndarray:
    c = torch.as_tensor(coords, dtype=torch.float32, device=device)
    b, n, _ = c.shape
    k = min(config.knn or n - 1, n - 1)
    nbr = neighbours(c, k)
    src = torch.arange(n, device=device)[None, :, None].expand(b, n, k)
    images = edge_images(c, torch.stack([src, nbr], dim=-1).reshape(b, n * k, 2))
    relaxation = RELAXATIONS[config.relaxation]

    def decode(z: torch.Tensor) -> torch.Tensor:
        return images.render(relaxation(z * config.logit_scale, nbr).reshape(b, n * k))

    z0 = torch.stack([torch.randn(n, k, generator=torch.Generator().manual_seed(s)) for s in seeds])
    z0 = (z0 * config.init_scale).to(device)
    pnp = PnPConfig.from_dict({**TSP_PNP, **prior.meta.get("tsp_pnp", {}), **(config.pnp or {})})
    pnp = replace(pnp, steps=config.steps)
    z = plug_and_play(
        prior.denoiser, prior.schedule, x_init=z0, decode=decode, config=pnp, seed=seeds, device=device
    )
    return relax(z * config.logit_scale, nbr, config.relaxation).cpu().double().numpy()


def solve_tsp(
    coords: np.ndarray,
    prior: Prior | None,
    config: SolveConfig | None = None,
    seed: int | Sequence[int] = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Solve instances of one size: coords (B, n, 2) in the unit square -> tours (B, n), 0-based.

    Instances are optimised ``config.batch_size`` at a time; instance i draws its noise from
    ``seed + i`` (or ``seed[i]`` when given one seed per instance), so its tour does not depend on
    the batching. Every returned tour is a permutation.

    Args:
        coords: instances of one size.
        prior: the TSP prior; ``None`` decodes a constant adjacency (the ablation).
        config: solver settings.
        seed: base seed, or one seed per instance.
        device: where to run.
        progress: called with the number of instances done after each batch.
    """
    config = config or SolveConfig()
    coords = np.asarray(coords, np.float64)
    if coords.ndim != 3 or coords.shape[2] != 2:
        raise ConfigError(f"coords must be (B, n, 2), got {coords.shape}")
    seeds = list(range(seed, seed + len(coords))) if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != len(coords):
        raise ConfigError(f"give one seed per instance: {len(seeds)} seeds for {len(coords)} instances")
    device = torch.device(device)
    if prior is not None:
        prior.to(device)
    tours = []
    for start in range(0, len(coords), config.batch_size):
        chunk = coords[start : start + config.batch_size]
        if prior is None or config.steps == 0:
            adjacency = np.ones((len(chunk), chunk.shape[1], chunk.shape[1]))
        else:
            adjacency = _optimise(chunk, prior, config, seeds[start : start + len(chunk)], device)
        t = greedy_tours(chunk, adjacency)
        if config.two_opt:
            t = two_opt(chunk, t, device=device)
        tours.append(t)
        if progress is not None:
            progress(len(chunk))
    return np.concatenate(tours) if tours else np.zeros((0, coords.shape[1]), np.int64)
