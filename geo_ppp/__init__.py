"""geo_ppp: diffusion models as plug-and-play priors.

The generic core lives in :mod:`geo_ppp.core` (torch and numpy only); this top level re-exports
its main entry points and the generation API.
"""

from geo_ppp.core import (
    Constraint,
    NoiseSchedule,
    PnPConfig,
    Prior,
    TrainConfig,
    UNetConfig,
    build_constraint,
    load_prior,
    plug_and_play,
    sample,
    save_prior,
    train_ddpm,
)
from geo_ppp.errors import GeoPPPError

__all__ = [
    "Constraint",
    "GeoPPPError",
    "NoiseSchedule",
    "PnPConfig",
    "Prior",
    "TrainConfig",
    "UNetConfig",
    "build_constraint",
    "generate",
    "load_prior",
    "plug_and_play",
    "sample",
    "save_prior",
    "train_ddpm",
]

__version__ = "0.1.0"


def __getattr__(name: str):  # noqa: ANN202 - lazy re-export
    if name == "generate":
        from geo_ppp.generation import generate

        return generate
    raise AttributeError(f"module 'geo_ppp' has no attribute {name!r}")
