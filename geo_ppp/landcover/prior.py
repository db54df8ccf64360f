"""The land-cover prior: a DDPM over one-hot land-cover maps, trained on real label rasters.

A prior's ``meta`` records what inference needs to use it safely: the legend (name and codes), the
ground resolution of a cell (``resolution_m``), the window size, the value range, and the tuned
plug-and-play settings.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geo_ppp.core.denoisers import UNetDenoiser
from geo_ppp.core.schedules import NoiseSchedule
from geo_ppp.core.training import TrainConfig, train_ddpm
from geo_ppp.core.unet import UNetConfig
from geo_ppp.core.weights import Prior, save_prior
from geo_ppp.errors import ConfigError
from geo_ppp.landcover.legends import Legend, load_legend
from geo_ppp.landcover.prior_data import (
    augmented_batches,
    label_dataset,
    onehot_pm1,
    sample_label_windows,
)

__all__ = ["LANDCOVER_TRAIN", "LANDCOVER_UNET", "LabelSource", "check_prior_legend", "train_landcover_prior"]

log = logging.getLogger(__name__)

#: The shipped land-cover prior's architecture (0.5M parameters: small enough to train on 2 CPU cores).
LANDCOVER_UNET = {
    "base_channels": 16,
    "channel_mult": (1, 2, 2, 2),
    "num_res_blocks": 1,
    "attention_levels": (3,),
    "attention_heads": 4,
}
#: Its training settings (about 40 minutes on 2 CPU cores).
LANDCOVER_TRAIN = {
    "steps": 1800,
    "batch_size": 32,
    "lr": 1e-3,
    "warmup": 100,
    "ema_decay": 0.995,
    "checkpoint_every": 100,
}


@dataclass(frozen=True)
class LabelSource:
    """Label rasters of one CRS and coding, with a mixing weight.

    Attributes:
        paths: GeoTIFF files or folders of them.
        weight: share of training batches drawn from this source (relative).
        windows: how many windows to draw from it.
    """

    paths: tuple[str, ...]
    weight: float = 1.0
    windows: int = 2000

    @classmethod
    def parse(cls, spec: str, windows: int = 2000) -> LabelSource:
        """``PATH[,PATH...][@WEIGHT]`` -> a source."""
        text, _, weight = spec.partition("@")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise ConfigError(f"label source {spec!r}: weight {weight!r} is not a number") from None
        if w <= 0:
            raise ConfigError(f"label source {spec!r}: weight must be > 0")
        return cls(tuple(p for p in text.split(",") if p), w, windows)


def train_landcover_prior(
    out: str | os.PathLike[str],
    sources: Sequence[LabelSource],
    legend: str | Legend = "chesapeake",
    *,
    window_m: float = 256.0,
    size: int = 64,
    steps: int | None = None,
    seed: int = 0,
    workdir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    device: torch.device | str = "cpu",
    progress: bool = True,
    unet: dict[str, object] | None = None,
    batch_size: int | None = None,
    command: str = "",
) -> Prior:
    """Train a DDPM prior on label windows drawn (with torchgeo) from ``sources``, and save it.

    Args:
        out: output folder.
        sources: label rasters with mixing weights.
        legend: the target legend; the sources' codes are remapped through it.
        window_m: window side on the ground, metres.
        size: cells per window side (``window_m / size`` is the prior's resolution).
        steps: override the shipped number of training steps.
        batch_size: override the shipped batch size.
        seed: seeds window sampling, weights and training.
        workdir: checkpoints (default ``out/.train``).
        resume: continue from a checkpoint.
        device: where to train.
        progress: show a progress bar.
        unet: U-Net overrides.
        command: the command line, recorded in the metadata.
    """
    legend = load_legend(legend)
    if not sources:
        raise ConfigError("give at least one label source (--labels PATH[,PATH...][@WEIGHT])")
    pools = []
    described = []
    for i, src in enumerate(sources):
        ds = label_dataset(src.paths)
        windows = sample_label_windows(ds, legend, src.windows, window_m=window_m, size=size, seed=seed + i)
        pools.append(onehot_pm1(windows, legend.num_classes))
        freq = np.bincount(windows.ravel(), minlength=legend.num_classes) / windows.size
        described.append(
            {
                "paths": list(src.paths),
                "weight": src.weight,
                "windows": int(windows.shape[0]),
                "class_fraction": [round(float(f), 4) for f in freq],
            }
        )
        log.info("source %s: %d windows, class fractions %s", src.paths, windows.shape[0], freq.round(3))
    config = UNetConfig(**{**LANDCOVER_UNET, "in_channels": legend.num_classes, **(unet or {})})  # type: ignore[arg-type]
    overrides = {k: v for k, v in {"steps": steps, "batch_size": batch_size}.items() if v}
    train = TrainConfig(**{**LANDCOVER_TRAIN, "seed": seed, **overrides})
    torch.manual_seed(seed)
    denoiser = UNetDenoiser(config)
    schedule = NoiseSchedule.create("linear", 1000)
    workdir = Path(workdir) if workdir is not None else Path(out) / ".train"
    batches = augmented_batches(pools, [s.weight for s in sources])
    result = train_ddpm(denoiser, schedule, batches, train, workdir, resume, device, progress)
    recent = result.losses[-200:]
    meta = {
        "name": f"landcover-{legend.name}",
        "kind": "landcover",
        "legend": legend.name,
        "codes": list(legend.codes),
        "image_size": size,
        "resolution_m": window_m / size,
        "value_range": [-1.0, 1.0],
        "data": described,
        "train": train.to_dict(),
        "final_loss": sum(recent) / len(recent),
        "command": command,
    }
    prior = Prior(denoiser=result.ema, schedule=schedule, meta=meta)
    save_prior(prior, out)
    return prior


def check_prior_legend(prior: Prior, legend: Legend) -> None:
    """Refuse a prior made for another legend or number of classes, naming the fix."""
    meta = prior.meta
    channels = prior.denoiser.in_channels if hasattr(prior.denoiser, "in_channels") else None
    codes = meta.get("codes")
    if meta.get("kind") != "landcover" or codes is None:
        raise ConfigError(
            f"prior {meta.get('name', '?')!r} is not a land-cover prior (its config.json has no legend); "
            "use the shipped 'landcover-chesapeake' or one made by `geo-ppp train-prior --dataset landcover`"
        )
    if list(codes) != list(legend.codes) or (channels is not None and channels != legend.num_classes):
        raise ConfigError(
            f"prior {meta.get('name')!r} was trained for legend {meta.get('legend')!r} with classes {codes}, "
            f"but the legend is {legend.name!r} with classes {list(legend.codes)}; pass the matching --legend"
            " "
            "or train a prior for this legend"
        )
