"""Reverse-process samplers: ancestral DDPM and DDIM, sharing one signature.

``sampler(denoiser, schedule, x_t, t_start, noise, steps=None, clip=1.0) -> x0``

Each runs from a noisy batch at timestep ``t_start`` down to a clean estimate, on a (possibly
respaced) descending sequence of timesteps. Both serve unconditional generation (start from pure
noise at ``t_start = T``) and the plug-and-play optimiser's finishing pass (start from a small t).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from geo_ppp.core.denoisers import Denoiser
from geo_ppp.core.random import NoiseSource
from geo_ppp.core.schedules import NoiseSchedule
from geo_ppp.errors import ConfigError

__all__ = ["SAMPLERS", "ddim_sample", "ddpm_sample", "sample", "timestep_sequence"]


def timestep_sequence(t_start: int, steps: int | None) -> list[int]:
    """Descending integer timesteps from ``t_start`` to 1, ``steps`` of them (all when ``None``)."""
    if t_start < 1:
        raise ConfigError(f"t_start must be >= 1, got {t_start}")
    if steps is None or steps >= t_start:
        return list(range(t_start, 0, -1))
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    seq = torch.linspace(t_start, 1, steps).round().long().tolist()
    return sorted(set(seq), reverse=True)


def _abar(schedule: NoiseSchedule, t: int) -> float:
    return 1.0 if t == 0 else float(schedule.alphas_cumprod[t - 1])


def _reverse(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    t_start: int,
    noise: NoiseSource,
    steps: int | None,
    clip: float | None,
    eta: float,
    callback: Callable[[int, torch.Tensor], None] | None,
) -> torch.Tensor:
    ts = timestep_sequence(t_start, steps)
    shape = tuple(x.shape[1:])
    with torch.no_grad():
        for i, t in enumerate(ts):
            s = ts[i + 1] if i + 1 < len(ts) else 0
            a_t, a_s = _abar(schedule, t), _abar(schedule, s)
            eps = denoiser(x, torch.full((x.shape[0],), t, device=x.device)).float()
            x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
            if clip is not None:
                x0 = x0.clamp(-clip, clip)
                eps = (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5
            if s == 0:
                x = x0
            else:
                # eta = 1: the ancestral DDPM posterior q(x_s | x_t, x0); eta = 0: deterministic DDIM.
                sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)) ** 0.5
                x = a_s**0.5 * x0 + max(1 - a_s - sigma**2, 0.0) ** 0.5 * eps
                if sigma > 0:
                    x = x + sigma * noise.randn(*shape).to(x.dtype)
            if callback is not None:
                callback(t, x)
    return x


def ddpm_sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    t_start: int,
    noise: NoiseSource,
    steps: int | None = None,
    clip: float | None = 1.0,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020), optionally on a respaced subsequence.

    Args:
        denoiser: the noise predictor.
        schedule: its noise schedule.
        x_t: noisy batch (B, C, H, W) at ``t_start``.
        t_start: timestep of ``x_t``, in [1, T].
        noise: per-sample random streams for the injected noise.
        steps: number of reverse steps; ``None`` takes every timestep.
        clip: clamp the x0 estimate to [-clip, clip] (``None`` to disable).
        callback: called as ``callback(t, x)`` after each step.

    Returns:
        The clean estimate (B, C, H, W).
    """
    return _reverse(denoiser, schedule, x_t, t_start, noise, steps, clip, 1.0, callback)


def ddim_sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    t_start: int,
    noise: NoiseSource,
    steps: int | None = 50,
    clip: float | None = 1.0,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021); ``eta = 0`` is deterministic given ``x_t``.

    Arguments as :func:`ddpm_sample`, plus ``eta``, the stochasticity (1 recovers ancestral).
    """
    return _reverse(denoiser, schedule, x_t, t_start, noise, steps, clip, eta, callback)


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"ddpm": ddpm_sample, "ddim": ddim_sample}


def sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    num: int,
    sampler: str = "ddpm",
    steps: int | None = None,
    seed: int | Sequence[int] = 0,
    device: torch.device | str = "cpu",
    clip: float | None = 1.0,
) -> torch.Tensor:
    """Unconditional samples (num, *shape) from pure noise at t = T.

    Example:
        >>> from geo_ppp.core.weights import load_prior
        >>> p = load_prior("digits")
        >>> x = sample(p.denoiser, p.schedule, (1, 16, 16), num=4, sampler="ddim", steps=20)
    """
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; use one of {sorted(SAMPLERS)}")
    noise = NoiseSource(seed, num, device)
    x = noise.randn(*shape)
    return SAMPLERS[sampler](denoiser, schedule, x, schedule.num_steps, noise, steps=steps, clip=clip)
