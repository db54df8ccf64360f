"""The 1 m refinement of a coarse posterior: a per-window class-conditional colour model (EM)."""

from __future__ import annotations

from typing import Any

import torch

from geo_ppp.landcover.clustering import box_mean, image_features

__all__ = ["refine_full_resolution"]


def _texture(image: torch.Tensor, radius: int) -> torch.Tensor:
    bright = image.float().mean(1, keepdim=True) / 255.0
    mean = box_mean(bright, radius)
    return (box_mean(bright.pow(2), radius) - mean.pow(2)).clamp_min(0).sqrt()


def refine_full_resolution(
    image: torch.Tensor,
    coarse_up: torch.Tensor,
    weak: torch.Tensor,
    valid: torch.Tensor,
    config: Any,
    evidence: torch.Tensor | None = None,
    iterations: int | None = None,
) -> torch.Tensor:
    """Refine an upsampled coarse posterior with the 1 m image: per-window class-conditional EM.

    Each class gets a full-covariance Gaussian over the pixel features of the window, weighted by
    the current posterior; the new posterior is ``coarse^a * weak^b * N(feature | class)``, times
    ``exp(c * evidence)`` when the region appearance model's log-likelihood ratios (B, K, H, W) are
    given (``c``: ``refine_appearance_power``), so that confident evidence of the region model can
    overrule a 30 m block. ``config`` is an :class:`~geo_ppp.landcover.infer.InferConfig` (its
    ``texture_radius`` and ``refine_*`` settings). ``iterations`` overrides
    ``config.refine_iterations`` (0: no per-window colour model, only the product of the terms above).
    """
    feats = torch.cat([image_features(image), 4.0 * _texture(image, config.texture_radius)], 1)
    b, d, h, w = feats.shape
    k = coarse_up.shape[1]
    f = feats.flatten(2).transpose(1, 2)  # (B, N, D)
    v = valid.float().flatten(1)  # (B, N)
    logp = config.refine_coarse_power * coarse_up.clamp_min(1e-4).log().flatten(2)
    if config.refine_weak_power:
        logp = logp + config.refine_weak_power * weak.clamp_min(1e-4).log().flatten(2)
    if evidence is not None and config.refine_appearance_power:
        logp = logp + config.refine_appearance_power * evidence.flatten(2)
    rounds = config.refine_iterations if iterations is None else iterations
    # (B, K, N): EM starts from the coarse posterior; with no round, the product of the terms is the result
    q = coarse_up.flatten(2) if rounds else torch.softmax(logp, 1)
    eye = torch.eye(d, device=f.device, dtype=f.dtype)
    for _ in range(rounds):
        r = q * v[:, None]
        mass = r.sum(2).clamp_min(1e-3)  # (B, K)
        mean = torch.einsum("bkn,bnd->bkd", r, f) / mass[..., None]
        diff = f[:, None] - mean[:, :, None]  # (B, K, N, D)
        cov = torch.einsum("bkn,bknd,bkne->bkde", r, diff, diff) / mass[..., None, None] + 1e-3 * eye
        chol = torch.linalg.cholesky(cov)
        z = torch.linalg.solve_triangular(chol, diff.transpose(-1, -2), upper=False)  # (B, K, D, N)
        loglik = -0.5 * z.pow(2).sum(2) - chol.diagonal(dim1=-2, dim2=-1).log().sum(-1, keepdim=True)
        q = torch.softmax(loglik + logp, 1)
    return q.view(b, k, h, w)
