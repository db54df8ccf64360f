"""Noise schedules of a DDPM and the forward (noising) process.

A :class:`NoiseSchedule` holds ``betas`` for ``t = 1..T`` (stored 0-indexed, ``betas[t - 1]``) and the
derived cumulative products. Timesteps are integers in ``[1, T]`` everywhere in geo_ppp; adapters
convert to a foreign model's convention.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from geo_ppp.errors import ConfigError

__all__ = [
    "NOISE_SCHEDULES",
    "NoiseSchedule",
    "cosine_betas",
    "linear_betas",
]


def linear_betas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2) -> torch.Tensor:
    """Betas of the linear schedule of Ho et al. (2020).

    Args:
        num_steps: number of diffusion steps T.
        beta_start: beta_1.
        beta_end: beta_T.

    Returns:
        float64 tensor (T,) of betas, evenly spaced from ``beta_start`` to ``beta_end``.
    """
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def cosine_betas(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Betas of the cosine schedule of Nichol & Dhariwal (2021).

    ``abar(t) = f(t) / f(0)`` with ``f(t) = cos(((t / T) + s) / (1 + s) * pi / 2) ** 2`` and
    ``beta_t = 1 - abar(t) / abar(t - 1)``, clipped to ``max_beta``.

    Args:
        num_steps: number of diffusion steps T.
        s: small offset that keeps beta_1 from vanishing.
        max_beta: upper clip of each beta.

    Returns:
        float64 tensor (T,) of betas.
    """
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    betas = 1 - abar[1:] / abar[:-1]
    return betas.clamp(max=max_beta)


NOISE_SCHEDULES: dict[str, Callable[..., torch.Tensor]] = {
    "linear": linear_betas,
    "cosine": cosine_betas,
}


@dataclass(frozen=True)
class NoiseSchedule:
    """A DDPM noise schedule with its closed-form quantities.

    Build one with :meth:`NoiseSchedule.create`. All tensors are float64 on the CPU, length T; index
    ``t - 1`` holds the value for timestep ``t``.

    Example:
        >>> s = NoiseSchedule.create("linear", 1000)
        >>> x_t = s.q_sample(torch.zeros(2, 1, 8, 8), torch.tensor([1, 1000]), torch.randn(2, 1, 8, 8))
    """

    name: str
    betas: torch.Tensor

    @classmethod
    def create(cls, name: str = "linear", num_steps: int = 1000, **kwargs: float) -> NoiseSchedule:
        """Build a named schedule (``linear`` or ``cosine``).

        Raises:
            ConfigError: if the name is unknown or the step count is not positive.
        """
        if name not in NOISE_SCHEDULES:
            raise ConfigError(f"unknown noise schedule {name!r}; use one of {sorted(NOISE_SCHEDULES)}")
        if num_steps < 1:
            raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
        return cls(name=name, betas=NOISE_SCHEDULES[name](num_steps, **kwargs))

    @classmethod
    def from_betas(cls, betas: torch.Tensor, name: str = "custom") -> NoiseSchedule:
        """Wrap explicit betas (for example a foreign model's)."""
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() == 0 or bool(((betas <= 0) | (betas >= 1)).any()):
            raise ConfigError("betas must be a non-empty sequence of values in (0, 1)")
        return cls(name=name, betas=betas)

    @property
    def num_steps(self) -> int:
        """T, the number of diffusion steps."""
        return int(self.betas.numel())

    @property
    def alphas(self) -> torch.Tensor:
        """``1 - beta_t``."""
        return 1.0 - self.betas

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """``abar_t = prod_{s <= t} alpha_s``."""
        return torch.cumprod(self.alphas, dim=0)

    def to_config(self) -> dict[str, object]:
        """A JSON-able description; custom betas are stored in full."""
        if self.name in NOISE_SCHEDULES:
            probe = NoiseSchedule.create(self.name, self.num_steps)
            if torch.equal(probe.betas, self.betas):
                return {"name": self.name, "num_steps": self.num_steps}
        return {"name": "custom", "betas": self.betas.tolist()}

    @classmethod
    def from_config(cls, config: dict[str, object]) -> NoiseSchedule:
        """Inverse of :meth:`to_config`."""
        name = str(config.get("name", "linear"))
        if name == "custom":
            return cls.from_betas(torch.tensor(config["betas"], dtype=torch.float64))
        return cls.create(name, int(config.get("num_steps", 1000)))  # type: ignore[arg-type]

    def _gather(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Pick ``values[t - 1]`` per sample and shape it to broadcast against ``like``."""
        t = torch.as_tensor(t, device="cpu").long().reshape(-1)
        if bool(((t < 1) | (t > self.num_steps)).any()):
            raise ConfigError(f"timesteps must lie in [1, {self.num_steps}], got {t.tolist()}")
        out = values[t - 1].to(device=like.device, dtype=like.dtype)
        return out.reshape(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward process: ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``.

        Args:
            x0: clean batch (B, ...).
            t: timesteps (B,) or a scalar, in [1, T].
            noise: standard normal noise shaped like ``x0``.

        Returns:
            The noised batch x_t, shaped like ``x0``.
        """
        abar = self._gather(self.alphas_cumprod, t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert the forward process given a noise estimate."""
        abar = self._gather(self.alphas_cumprod, t, x_t)
        return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()

    def sqrt_abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``sqrt(abar_t)`` shaped to broadcast against ``like``."""
        return self._gather(self.alphas_cumprod, t, like).sqrt()

    def sqrt_one_minus_abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``sqrt(1 - abar_t)`` shaped to broadcast against ``like``."""
        return (1 - self._gather(self.alphas_cumprod, t, like)).sqrt()
