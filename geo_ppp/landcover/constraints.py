"""Constraints on the land-cover latent, each obeying the core contract ((B, K, H, W) in, (B,) out).

The latent ``x`` lives in the prior's space (one-hot maps scaled to [-1, 1]). A relaxation turns it
into a soft segmentation ``s`` (B, K, H, W) that sums to 1 over classes:

- ``interval`` (the paper's): per channel, P(N(x, sigma^2) lies in the "on" interval), L1-normalised;
  in our [-1, 1] space the interval is [0, 2] (the paper's [0.5, 1.5] on {0, 1} maps). ``sigma``
  anneals from ``sigma_start`` to ``sigma_end`` over the run (0.4 -> 0.04 here: the paper's
  0.2 -> 0.02 doubled with the value range).
- ``softmax``: softmax(x / tau), tau annealed the same way; smooth everywhere, so its gradient
  never vanishes far from the interval (the default; see benchmarks/landcover_accuracy.py).

Both constraints take their evidence per sample at construction time, so a batch of windows
carries its own weak labels and clusters.
"""

from __future__ import annotations

import math

import torch

from geo_ppp.core.constraints import Constraint
from geo_ppp.errors import ConstraintError, ShapeError
from geo_ppp.landcover.clustering import box_mean

__all__ = ["LocalKL", "LocalMutualInformation", "PixelEvidence", "Relaxation"]

_EPS = 1e-6


class Relaxation(torch.nn.Module):
    """Latent (B, K, H, W) in [-1, 1] space -> soft segmentation summing to 1 over K."""

    kinds = ("softmax", "interval")

    def __init__(self, kind: str = "softmax", start: float = 0.4, end: float = 0.04) -> None:
        super().__init__()
        if kind not in self.kinds:
            raise ConstraintError(f"relaxation {kind!r} is unknown; use one of {list(self.kinds)}")
        if not (start > 0 and end > 0):
            raise ConstraintError("relaxation temperatures must be > 0")
        self.kind, self.start, self.end = kind, start, end
        self.scale = start

    def on_step(self, progress: float) -> None:
        """Anneal geometrically from ``start`` to ``end``."""
        self.scale = self.start * (self.end / self.start) ** min(max(progress, 0.0), 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Relax ``x``."""
        if self.kind == "softmax":
            return torch.softmax(x / self.scale, 1)
        z = math.sqrt(2.0) * self.scale
        on = 0.5 * (torch.erf((2.0 - x) / z) - torch.erf((0.0 - x) / z))
        on = on + _EPS
        return on / on.sum(1, keepdim=True)


def _check(x: torch.Tensor, evidence: torch.Tensor, what: str, channels: bool = False) -> None:
    if (
        x.dim() != 4
        or x.shape[0] != evidence.shape[0]
        or x.shape[-2:] != evidence.shape[-2:]
        or (channels and x.shape[1] != evidence.shape[1])
    ):
        raise ShapeError(
            f"{what}: latent {tuple(x.shape)} does not match its evidence {tuple(evidence.shape)} "
            "(batch and spatial size must agree" + (", and the number of classes)" if channels else ")")
        )


class LocalKL(Constraint):
    """KL(weak || box-pooled soft segmentation), averaged over valid pixels.

    Args:
        weak: (B, K, H, W) weak class distribution on the latent's grid.
        relaxation: latent -> soft segmentation.
        radius: box radius of the pooling (the paper: 15, a 31-pixel window at 4 m).
        valid: optional (B, 1, H, W) mask of pixels to score.
    """

    def __init__(
        self, weak: torch.Tensor, relaxation: Relaxation, radius: int = 15, valid: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.register_buffer("weak", weak.float().clamp_min(_EPS))
        self.register_buffer("valid", torch.ones_like(weak[:, :1]) if valid is None else valid.float())
        self.relaxation, self.radius = relaxation, radius

    def on_step(self, progress: float) -> None:
        """Anneal the relaxation."""
        self.relaxation.on_step(progress)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One loss per sample."""
        _check(x, self.weak, "LocalKL", channels=True)
        s = box_mean(self.relaxation(x), self.radius).clamp_min(_EPS)
        kl = (self.weak * (self.weak.log() - s.log())).sum(1, keepdim=True)
        return (kl * self.valid).sum((1, 2, 3)) / self.valid.sum((1, 2, 3)).clamp_min(1.0)


class LocalMutualInformation(Constraint):
    """Minus the local mutual information between the soft segmentation and colour clusters.

    In a box window around each pixel, the joint p(l, c) is the window mean of s_l * c_c; the MI
    is normalised by H(L) + H(C) of the window (so it lies in [0, 0.5]) and averaged over pixels.
    The loss is ``-NMI`` (lower is better, as for every constraint).

    Args:
        clusters: (B, J, H, W) soft colour clusters on the latent's grid.
        relaxation: latent -> soft segmentation.
        radius: box radius (the paper: 15 at 4 m).
        valid: optional (B, 1, H, W) mask.
    """

    def __init__(
        self,
        clusters: torch.Tensor,
        relaxation: Relaxation,
        radius: int = 15,
        valid: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("clusters", clusters.float())
        self.register_buffer("valid", torch.ones_like(clusters[:, :1]) if valid is None else valid.float())
        self.relaxation, self.radius = relaxation, radius

    def on_step(self, progress: float) -> None:
        """Anneal the relaxation."""
        self.relaxation.on_step(progress)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One loss per sample."""
        _check(x, self.clusters, "LocalMutualInformation")
        s = self.relaxation(x) * self.valid
        c = self.clusters * self.valid
        b, k, h, w = s.shape
        j = c.shape[1]
        joint = box_mean((s[:, :, None] * c[:, None]).reshape(b, k * j, h, w), self.radius)
        joint = joint.view(b, k, j, h, w).clamp_min(_EPS)
        mass = joint.sum((1, 2), keepdim=True)
        joint = joint / mass
        pl = joint.sum(2, keepdim=True)
        pc = joint.sum(1, keepdim=True)
        mi = (joint * (joint.log() - pl.log() - pc.log())).sum((1, 2))
        h_l = -(pl * pl.log()).sum((1, 2))
        h_c = -(pc * pc.log()).sum((1, 2))
        nmi = mi / (h_l + h_c).clamp_min(_EPS)
        v = self.valid[:, 0]
        return -(nmi * v).sum((1, 2)) / v.sum((1, 2)).clamp_min(1.0)


class PixelEvidence(Constraint):
    """KL(posterior || soft segmentation) per cell, averaged over valid cells.

    Pulls each cell towards a per-cell class posterior, for example the region appearance model's
    (:mod:`geo_ppp.landcover.appearance`): unlike :class:`LocalKL` it is not pooled, so it can place a
    field inside a 30 m forest block where the image shows one.

    Args:
        posterior: (B, K, H, W) class distribution on the latent's grid.
        relaxation: latent -> soft segmentation.
        valid: optional (B, 1, H, W) mask of cells to score.
    """

    def __init__(
        self, posterior: torch.Tensor, relaxation: Relaxation, valid: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.register_buffer("posterior", posterior.float().clamp_min(_EPS))
        self.register_buffer(
            "valid", torch.ones_like(posterior[:, :1]) if valid is None else valid.float()
        )
        self.relaxation = relaxation

    def on_step(self, progress: float) -> None:
        """Anneal the relaxation."""
        self.relaxation.on_step(progress)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One loss per sample."""
        _check(x, self.posterior, "PixelEvidence", channels=True)
        s = self.relaxation(x).clamp_min(_EPS)
        kl = (self.posterior * (self.posterior.log() - s.log())).sum(1, keepdim=True)
        return (kl * self.valid).sum((1, 2, 3)) / self.valid.sum((1, 2, 3)).clamp_min(1.0)
