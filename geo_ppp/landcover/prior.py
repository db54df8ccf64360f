"""The land-cover prior: a DDPM over one-hot land-cover maps, trained on real label rasters.

A prior's ``meta`` records what inference needs to use it safely: the legend (name and codes), the
ground resolution of a cell (``resolution_m``), the window size, the value range, and the tuned
plug-and-play settings.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geo_ppp.core.denoisers import UNetDenoiser
from geo_ppp.core.memory import check_memory
from geo_ppp.core.schedules import NoiseSchedule
from geo_ppp.core.training import TrainConfig, train_and_publish
from geo_ppp.core.unet import UNetConfig
from geo_ppp.core.weights import Prior, load_prior
from geo_ppp.errors import ConfigError, GeoPPPError
from geo_ppp.geo.legend import Legend, load_legend
from geo_ppp.io.label_windows import (
    HOLDOUT_BLOCK_M,
    HOLDOUT_EVERY,
    HOLDOUT_RULE,
    check_label_rasters,
    label_dataset,
    sample_label_windows,
)
from geo_ppp.landcover.prior_data import augmented_batches, onehot_pm1

__all__ = [
    "DEFAULT_PRIORS",
    "LANDCOVER_DIFFUSION",
    "LANDCOVER_TRAIN",
    "LANDCOVER_UNET",
    "LabelSource",
    "check_prior_legend",
    "train_landcover_prior",
]

#: legend -> the shipped prior used by default
DEFAULT_PRIORS = {"chesapeake": "landcover-chesapeake"}

log = logging.getLogger(__name__)

#: The shipped land-cover prior's architecture: fully convolutional (no attention), so that it
#: trains on crops smaller than the windows it is applied to and takes any multiple of 8 cells.
LANDCOVER_UNET = {
    "base_channels": 16,
    "channel_mult": (1, 2, 2, 2),
    "num_res_blocks": 1,
    "attention_levels": (),
}
#: Its training settings: v-prediction under a cosine schedule with min-SNR weighting.
LANDCOVER_TRAIN = {
    "steps": 20000,
    "batch_size": 64,
    "lr": 1e-3,
    "warmup": 200,
    "ema_decay": 0.999,
    "checkpoint_every": 250,
    "loss_weighting": "min_snr",
    "snr_gamma": 5.0,
}
#: Its diffusion: noise schedule, prediction target, training crop (cells).
LANDCOVER_DIFFUSION = {"schedule": "cosine", "prediction": "v", "crop": 32}


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
        if not math.isfinite(w) or w <= 0:
            raise ConfigError(f"label source {spec!r}: weight must be a number > 0 (e.g. {text}@0.5)")
        if windows < 1:
            raise ConfigError(f"--windows must be >= 1, got {windows}")
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
    schedule: str | None = None,
    prediction: str | None = None,
    crop: int | None = None,
    holdout: bool = True,
    train_overrides: dict[str, object] | None = None,
    bf16: bool = False,
    balance: float = 0.0,
    restart_on_mismatch: bool = False,
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
        schedule: noise schedule (default: the shipped prior's, cosine).
        prediction: ``eps`` or ``v`` (default: the shipped prior's, v).
        crop: train on random crops of this many cells (default: the shipped prior's, 32; the
            window size trains on whole windows).
        holdout: keep the held-out blocks out of training (``geo-ppp prior-check`` compares the
            prior with them).
        train_overrides: other :class:`~geo_ppp.core.training.TrainConfig` fields.
        bf16: bfloat16 autocast on CUDA.
        balance: class-aware window sampling: windows holding rare classes are drawn more often
            (see :func:`~geo_ppp.landcover.prior_data.window_weights`); 0 draws them uniformly.
        restart_on_mismatch: a checkpoint made from other data or settings is not continued but
            replaced (``--overwrite``); without, it is refused, naming what differs.

    A checkpoint is tied to a digest of the windows drawn and to the options that shaped the
    model and its training; the same command and seed give bit-identical weights, and a stopped run
    resumed ends with the weights of an uninterrupted one.
    """
    legend = load_legend(legend)
    if not sources:
        raise ConfigError("give at least one label source (--labels PATH[,PATH...][@WEIGHT])")
    config = UNetConfig(**{**LANDCOVER_UNET, "in_channels": legend.num_classes, **(unet or {})})  # type: ignore[arg-type]
    overrides = {k: v for k, v in {"steps": steps, "batch_size": batch_size}.items() if v is not None}
    train = TrainConfig(**{**LANDCOVER_TRAIN, "seed": seed, **(train_overrides or {}), **overrides})  # type: ignore[arg-type]
    diffusion = {**LANDCOVER_DIFFUSION}
    given = {"schedule": schedule, "prediction": prediction, "crop": crop}
    diffusion.update({k: v for k, v in given.items() if v is not None})
    crop_cells = int(diffusion["crop"]) if diffusion["crop"] is not None else size  # type: ignore[arg-type]
    factor = config.downsample_factor
    if size % factor or crop_cells % factor or not 0 < crop_cells <= size:
        raise ConfigError(
            f"--crop {crop_cells} does not fit: the crop and the window ({size} cells) must be multiples of "
            f"the U-Net's {factor}, the crop {factor}..{size}; e.g. --crop 32"
        )
    if not (math.isfinite(balance) and 0 <= balance):
        raise ConfigError(f"--balance must be a finite number >= 0 (0: uniform), got {balance}")
    # each window is held as class indices (int64) and as a one-hot float32 pool
    per_window = size * size * (8.0 + 4.0 * legend.num_classes)
    check_memory(sum(src.windows for src in sources), per_window, "--windows (over all sources)", "window")
    for src in sources:  # every source checked before any window is drawn
        check_label_rasters(src.paths, legend, window_m)
    pools = []
    described = []
    digest = hashlib.sha256()
    for i, src in enumerate(sources):
        ds = label_dataset(src.paths)
        windows = sample_label_windows(
            ds,
            legend,
            src.windows,
            window_m=window_m,
            size=size,
            seed=seed + i,
            split="train" if holdout else "all",
        )
        pools.append(onehot_pm1(windows, legend.num_classes))
        digest.update(np.ascontiguousarray(windows, dtype=np.int64).tobytes() + repr(src.weight).encode())
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
    total = sum(int(p.shape[0]) for p in pools)
    if total < train.batch_size:
        raise ConfigError(
            f"only {total} label windows were drawn, fewer than the batch size {train.batch_size}; "
            "give more label rasters, raise --windows, or lower --batch-size"
        )
    torch.manual_seed(seed)
    noise_schedule = NoiseSchedule.create(str(diffusion["schedule"]), 1000)
    denoiser = UNetDenoiser(config, str(diffusion["prediction"]), noise_schedule)
    workdir = Path(workdir) if workdir is not None else Path(out) / ".train"
    carried = _carried_meta(Path(out), workdir) if resume else {}
    batches = augmented_batches(pools, [s.weight for s in sources], crop=crop_cells, balance=balance)

    def meta_at(steps_done: int, losses: list[float]) -> dict[str, object]:
        recent = losses[-200:] or [float("nan")]
        return {
            "name": f"landcover-{legend.name}",
            "kind": "landcover",
            "legend": legend.name,
            "codes": list(legend.codes),
            "image_size": size,
            "resolution_m": window_m / size,
            "value_range": [-1.0, 1.0],
            "data": described,
            "train": train.to_dict(),
            "trained_steps": steps_done,
            "crop": crop_cells,
            "balance": balance,
            "holdout": (
                {"block_m": HOLDOUT_BLOCK_M, "every": HOLDOUT_EVERY, "rule": HOLDOUT_RULE}
                if holdout
                else None
            ),
            "final_loss": sum(recent) / len(recent),
            "command": command,
            **carried,
        }

    identity = {
        "--labels/--windows (sha256 of the windows drawn)": digest.hexdigest()[:16],
        "--legend": [legend.name, *legend.codes],
        "--crop": crop_cells,
        "--balance": balance,
        "--schedule": str(diffusion["schedule"]),
        "window (m, cells)": [window_m, size],
        "held-out blocks": holdout,
    }
    return train_and_publish(
        denoiser, noise_schedule, batches, train, out, meta_at, workdir, resume, device, progress, bf16=bf16,
        identity=identity, restart_on_mismatch=restart_on_mismatch,
    )


#: Metadata that a resumed run keeps from the prior it continues: the inference settings tuned for
#: this prior (``meta.infer``, chosen by benchmarks, not by training), which a checkpoint's
#: republished config.json would otherwise drop, falling back to the generic defaults.
CARRIED_META = ("infer", "infer_note")


def _carried_meta(out: Path, workdir: Path) -> dict[str, object]:
    """The :data:`CARRIED_META` of the prior in ``out`` when a checkpoint in ``workdir`` continues it."""
    if not (workdir / "checkpoint.safetensors").exists() or not (out / "config.json").exists():
        return {}
    try:
        meta = load_prior(out).meta
    except GeoPPPError:
        return {}
    return {k: meta[k] for k in CARRIED_META if k in meta}


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
