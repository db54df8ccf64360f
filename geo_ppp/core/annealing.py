"""Annealing schedules of the plug-and-play optimiser, each with one signature.

- t schedules map ``(step, n_steps)`` to a timestep in ``[t_min, t_max]`` (before jitter).
- decays map a progress ``p`` in [0, 1] to a factor; they drive the constraint weight and the
  learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DECAYS", "T_SCHEDULES", "ConstantT", "CosineLinearT", "LinearT", "PaperT", "TSchedule"]


@dataclass(frozen=True)
class TSchedule:
    """Base of t schedules: ``schedule(step, n_steps) -> t`` in ``[t_min, t_max]``."""

    t_max: int = 1000
    t_min: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.t_min <= self.t_max:
            raise ValueError(f"need 1 <= t_min <= t_max, got t_min={self.t_min}, t_max={self.t_max}")

    def fraction(self, step: int, n_steps: int) -> float:
        """Where in [0, 1] the range is at this step (1 = t_max)."""
        raise NotImplementedError

    def __call__(self, step: int, n_steps: int) -> int:
        """The timestep for ``step`` of ``n_steps`` (0-based)."""
        f = min(max(self.fraction(step, n_steps), 0.0), 1.0)
        return int(round(self.t_min + (self.t_max - self.t_min) * f))


@dataclass(frozen=True)
class LinearT(TSchedule):
    """Linear decrease from ``t_max`` at the first step to ``t_min`` at the last."""

    def fraction(self, step: int, n_steps: int) -> float:
        """``(S - 1 - i) / (S - 1)``."""
        return 1.0 if n_steps <= 1 else (n_steps - 1 - step) / (n_steps - 1)


@dataclass(frozen=True)
class CosineLinearT(TSchedule):
    """The paper's schedule: a linear decrease modulated by a cosine.

    ``f_i = r_i * (1 + a * cos(2 pi * cycles * i / S))`` with ``r_i = (S - 1 - i) / (S - 1)``,
    the paper's ``((S - i) + a (S - i) cos(i / b)) / S`` with ``b = S / (2 pi cycles)``; then
    ``t = t_min + (t_max - t_min) * clip(f, 0, 1)``. The oscillation revisits higher noise levels
    now and then, which lets coarse structure adjust late in the run.

    Attributes:
        amplitude: ``a``, the relative size of the oscillation.
        cycles: number of cosine periods over the run.
    """

    amplitude: float = 0.2
    cycles: float = 8.0

    def fraction(self, step: int, n_steps: int) -> float:
        """Modulated linear ramp."""
        r = 1.0 if n_steps <= 1 else (n_steps - 1 - step) / (n_steps - 1)
        return r * (1 + self.amplitude * math.cos(2 * math.pi * self.cycles * step / max(n_steps, 1)))


@dataclass(frozen=True)
class PaperT(CosineLinearT):
    """The paper's land-cover schedule, peak-normalised: ``t_max`` is reached at the first step.

    ``f_i = r_i * (1 + a * cos(2 pi * cycles * i / S)) / (1 + a)``. With ``S = 200``, ``a = 0.3``,
    ``cycles = S / (20 pi)`` and ``t_max = 430`` it is the notebook's
    ``t_i = 1000 * ((S - i) // 3 + (S - i) // 10 * cos(i / 10)) / S`` (about 430 down to 1).
    """

    def fraction(self, step: int, n_steps: int) -> float:
        """Modulated linear ramp, divided by its peak."""
        return super().fraction(step, n_steps) / (1 + self.amplitude)


@dataclass(frozen=True)
class ConstantT(TSchedule):
    """Always ``t_max`` (use ``t_min == t_max`` for clarity)."""

    def fraction(self, step: int, n_steps: int) -> float:
        """Always 1."""
        return 1.0


T_SCHEDULES: dict[str, type[TSchedule]] = {
    "cosine": CosineLinearT,
    "paper": PaperT,
    "linear": LinearT,
    "constant": ConstantT,
}

DECAYS: dict[str, Callable[[float], float]] = {
    "constant": lambda p: 1.0,
    "linear": lambda p: 1.0 - p,
    "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * p)),
}
