"""The generic plug-and-play diffusion core.

Imports only torch, numpy and the standard library (diffusers lazily, to load foreign models);
never the geospatial layer. See :func:`plug_and_play`.
"""

from geo_ppp.core.annealing import DECAYS, T_SCHEDULES, ConstantT, CosineLinearT, LinearT, TSchedule
from geo_ppp.core.constraints import (
    CONSTRAINTS,
    ClassifierLogProb,
    Constraint,
    StrokeThickness,
    Sum,
    Symmetry,
    Weighted,
    build_constraint,
    parse_constraint_spec,
)
from geo_ppp.core.denoisers import Denoiser, DiffusersDenoiser, UNetDenoiser
from geo_ppp.core.pnp import OPTIMIZERS, PnPConfig, StepInfo, frozen, plug_and_play
from geo_ppp.core.random import NoiseSource, derive_seed
from geo_ppp.core.sampling import SAMPLERS, ddim_sample, ddpm_sample, sample
from geo_ppp.core.schedules import NOISE_SCHEDULES, NoiseSchedule, cosine_betas, linear_betas
from geo_ppp.core.training import TrainConfig, TrainResult, tensor_batches, train_ddpm
from geo_ppp.core.unet import UNet, UNetConfig
from geo_ppp.core.weights import Prior, load_prior, read_safetensors, save_prior, write_safetensors

__all__ = [
    "CONSTRAINTS",
    "DECAYS",
    "NOISE_SCHEDULES",
    "OPTIMIZERS",
    "SAMPLERS",
    "T_SCHEDULES",
    "ClassifierLogProb",
    "ConstantT",
    "Constraint",
    "CosineLinearT",
    "Denoiser",
    "DiffusersDenoiser",
    "LinearT",
    "NoiseSchedule",
    "NoiseSource",
    "PnPConfig",
    "Prior",
    "StepInfo",
    "StrokeThickness",
    "Sum",
    "Symmetry",
    "TSchedule",
    "TrainConfig",
    "TrainResult",
    "UNet",
    "UNetConfig",
    "UNetDenoiser",
    "Weighted",
    "build_constraint",
    "cosine_betas",
    "ddim_sample",
    "ddpm_sample",
    "derive_seed",
    "frozen",
    "linear_betas",
    "load_prior",
    "parse_constraint_spec",
    "plug_and_play",
    "read_safetensors",
    "sample",
    "save_prior",
    "tensor_batches",
    "train_ddpm",
    "write_safetensors",
]
