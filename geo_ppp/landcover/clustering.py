"""Colour clustering: a local Gaussian mixture fitted by EM ("overlap clustering"), in torch.

Every statistic of the mixture (class prior, mean, variance) is a box-window average around each
pixel, so each pixel has its own mixture fitted to its neighbourhood (Graikos et al. 2022, after
Malkin et al.). The whole batch runs at once, on the GPU when the tensors are there.

Numerical guards (the research code meant to clamp a division by zero and did not): window masses
are clamped, a cluster that is empty in a window falls back to its global statistics (a pseudo-
count of ``eps``), variances are floored, and responsibilities are normalised in log space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from geo_ppp.core.config import config_from_mapping, config_to_dict

__all__ = ["ClusterConfig", "box_mean", "image_features", "local_gmm"]


@dataclass(frozen=True)
class ClusterConfig:
    """Settings of :func:`local_gmm` (defaults: the paper's, at 4 m).

    Attributes:
        clusters: mixture components.
        radius: box-window radius of the statistics, in pixels.
        iterations: EM iterations at ``radius``.
        warmup_radius: radius of the warm-up iterations (wider windows first, coarse to fine).
        warmup_iterations: EM iterations at ``warmup_radius``.
        var_floor: smallest variance per feature.
        eps: pseudo-mass of the global statistics in every window.
    """

    clusters: int = 5
    radius: int = 7
    iterations: int = 30
    warmup_radius: int = 15
    warmup_iterations: int = 5
    var_floor: float = 1e-3
    eps: float = 1e-3

    def to_dict(self) -> dict[str, object]:
        """JSON-able form."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ClusterConfig:
        """Strict parse."""
        return config_from_mapping(cls, data, "the clustering config")


def _box_sum(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Sum over the (2r+1)^2 window around each pixel (zero outside), by integral images: O(1) in r."""
    h, w = x.shape[-2:]
    c = F.pad(x, (radius + 1, radius, radius + 1, radius)).cumsum(-1).cumsum(-2)
    k = 2 * radius + 1
    return c[..., k:, k:] - c[..., :h, k:] - c[..., k:, :w] + c[..., :h, :w]


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window around each pixel of (B, C, H, W); windows are cut at the edges.

    Integral images make the cost independent of the radius (an average pool with a 31-pixel
    kernel is about 50x slower on CPU). Cumulative sums over more than 128 x 128 pixels run in
    float64 so they stay exact enough; smaller ones (the 64 x 64 cells of a tile at 4 m) in the
    input's precision, which is twice as fast.
    """
    if radius <= 0:
        return x
    h, w = x.shape[-2:]
    dtype = torch.float64 if h * w > 128 * 128 else x.dtype
    ones = torch.ones(1, 1, h, w, dtype=dtype, device=x.device)
    count = _box_sum(ones, radius)
    return (_box_sum(x.to(dtype), radius) / count).to(x.dtype)


def image_features(image: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) imagery in 0-255 -> features: bands in [0, 1], plus NDVI when there is NIR (C >= 4)."""
    x = image.float() / 255.0
    if x.shape[1] >= 4:
        red, nir = x[:, 0:1], x[:, 3:4]
        ndvi = (nir - red) / (nir + red).clamp_min(1e-3)
        x = torch.cat([x, ndvi], 1)
    return x


def _init_responsibilities(feat: torch.Tensor, k: int) -> torch.Tensor:
    """Deterministic start: split each image's brightness into k quantile bins (soft)."""
    b = feat.shape[0]
    bright = feat.mean(1)  # (B, H, W)
    flat = bright.flatten(1)
    qs = torch.linspace(0, 1, k + 2, device=feat.device, dtype=feat.dtype)[1:-1]
    centres = torch.quantile(flat, qs, dim=1).T  # (B, k)
    spread = flat.std(1).clamp_min(1e-3).view(b, 1, 1, 1)
    d = (bright[:, None] - centres.view(b, k, 1, 1)) / spread
    return torch.softmax(-8.0 * d.pow(2), 1)


def local_gmm(
    features: torch.Tensor, config: ClusterConfig | None = None, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Fit the local Gaussian mixture by EM; returns soft clusters (B, K, H, W) summing to 1.

    Args:
        features: (B, D, H, W) pixel features.
        config: settings.
        valid: optional (B, 1, H, W) mask; invalid pixels do not feed any statistic.
    """
    config = config or ClusterConfig()
    feat = features.float()
    b, d, h, w = feat.shape
    k = config.clusters
    m = torch.ones(b, 1, h, w, device=feat.device) if valid is None else valid.float()
    r = _init_responsibilities(feat, k) * m
    eps = config.eps
    radii = [config.warmup_radius] * config.warmup_iterations + [config.radius] * config.iterations
    f1 = feat[:, None]  # (B, 1, D, H, W)
    f2 = f1.pow(2)
    for radius in radii:
        rw = r * m  # (B, K, H, W)
        tot = rw.sum((2, 3), keepdim=True).clamp_min(eps)  # global per-cluster mass
        g_mean = (rw[:, :, None] * f1).sum((3, 4), keepdim=True) / tot[:, :, None]
        g_sq = (rw[:, :, None] * f2).sum((3, 4), keepdim=True) / tot[:, :, None]
        weighted = rw[:, :, None] * torch.cat([f1.expand(b, 1, d, h, w), f2], 2)  # (B, K, 2D, H, W)
        stats = box_mean(torch.cat([rw, weighted.flatten(1, 2)], 1), radius)  # one pass for all sums
        mass = stats[:, :k]  # (B, K, H, W)
        s1, s2 = stats[:, k:].view(b, k, 2 * d, h, w).split(d, 2)
        denom = mass[:, :, None] + eps
        mean = (s1 + eps * g_mean) / denom
        var = ((s2 + eps * g_sq) / denom - mean.pow(2)).clamp_min(config.var_floor)
        prior = (mass + eps / k) / (mass.sum(1, keepdim=True) + eps)
        loglik = -0.5 * ((f1 - mean).pow(2) / var + var.log()).sum(2)
        r = torch.softmax(loglik + prior.log(), 1) * m
    return r + (1 - m) / k  # invalid pixels: uniform
