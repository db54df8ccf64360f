"""Saving and loading priors: safetensors weights plus a JSON config, never a pickle.

A geo_ppp prior is a folder::

    my_prior/
      config.json          # {"format": "geo_ppp.prior", "architecture": "unet", "unet": {...},
                           #  "schedule": {...}, "meta": {...}}
      model.safetensors    # the denoiser's weights

A diffusers folder (``unet/`` + ``scheduler/``, or a bare ``UNet2DModel`` folder) loads too, through
:class:`~geo_ppp.core.denoisers.DiffusersDenoiser`. Pickled checkpoints (``.pt``, ``.bin``,
``.ckpt``, ``.pkl``) are refused: unpickling an untrusted file runs arbitrary code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from geo_ppp.core.atomic import atomic_path, write_json
from geo_ppp.core.denoisers import Denoiser, DiffusersDenoiser, UNetDenoiser
from geo_ppp.core.schedules import NoiseSchedule
from geo_ppp.core.unet import UNetConfig
from geo_ppp.errors import ConfigError, WeightsError

__all__ = [
    "SHIPPED_WEIGHTS",
    "Prior",
    "load_prior",
    "read_safetensors",
    "resolve_weights",
    "save_prior",
    "write_safetensors",
]

FORMAT = "geo_ppp.prior"
SHIPPED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"}
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")  # pickle, zip


@dataclass
class Prior:
    """A denoiser with the schedule it was trained under and descriptive metadata.

    Attributes:
        denoiser: the noise predictor.
        schedule: its noise schedule.
        meta: free-form facts (image size, value range, data, training command, ...).
    """

    denoiser: Denoiser
    schedule: NoiseSchedule
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> int | None:
        """Training resolution, if recorded."""
        size = self.meta.get("image_size")
        return int(size) if size is not None else None

    def to(self, device: torch.device | str) -> Prior:
        """Move the denoiser to ``device`` (in place) and return self."""
        self.denoiser.to(device)
        return self


def _refuse_pickle(path: Path) -> None:
    raise WeightsError(
        f"{path} is a pickled checkpoint; geo_ppp refuses to unpickle files because that can run "
        "arbitrary code. Convert it once, in an environment you trust, with "
        "safetensors.torch.save_file(state_dict, 'model.safetensors'), and pass that file instead"
    )


def _looks_pickled(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if head[8:9] == b"{":  # safetensors: 8-byte header length, then the JSON header
        return False
    return any(head.startswith(m) for m in _PICKLE_MAGIC)


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read tensors and the metadata header from a safetensors file, refusing anything else.

    Raises:
        WeightsError: if the file is missing, pickled, or not a valid safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; check the path or train a prior")
    if path.suffix.lower() in PICKLE_SUFFIXES or _looks_pickled(path):
        _refuse_pickle(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise WeightsError(
            f"{path} is not a valid safetensors file ({err}); it may be truncated or corrupt: "
            "copy it again or retrain"
        ) from err
    return tensors, metadata


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a safetensors file atomically (temporary name in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=dict(metadata or {}))


def save_prior(prior: Prior, folder: str | os.PathLike[str]) -> Path:
    """Save a prior built on :class:`UNetDenoiser` as ``config.json`` + ``model.safetensors``.

    Both files are written atomically; the weights are written first, so a folder whose config
    exists always has its weights.

    Returns:
        The folder.
    """
    folder = Path(folder)
    if not isinstance(prior.denoiser, UNetDenoiser):
        raise ConfigError(
            "save_prior writes geo_ppp U-Net priors; save a diffusers model with its own "
            "save_pretrained(folder, safe_serialization=True)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / "model.safetensors", prior.denoiser.state_dict())
    config = {
        "format": FORMAT,
        "version": 1,
        "architecture": "unet",
        "unet": prior.denoiser.config.to_dict(),
        "prediction": prior.denoiser.prediction,
        "schedule": prior.schedule.to_config(),
        "meta": prior.meta,
    }
    write_json(folder / "config.json", config)
    return folder


def resolve_weights(name_or_path: str | os.PathLike[str]) -> Path:
    """Map a shipped prior's name (``digits``) or a path to a folder or file on disk.

    Raises:
        WeightsError: if nothing exists there; the message lists the shipped names.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = SHIPPED_WEIGHTS / str(name_or_path)
    if shipped.is_dir():
        return shipped
    names = sorted(p.parent.name for p in SHIPPED_WEIGHTS.glob("*/config.json"))
    raise WeightsError(
        f"no prior at {str(name_or_path)!r}: not a path that exists, nor a shipped prior "
        f"(shipped: {names}); pass a folder holding config.json and model.safetensors"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"cannot read config {path}: {err}; restore the file or retrain") from err
    if not isinstance(data, dict):
        raise WeightsError(f"config {path} must hold a JSON object")
    return data


def _load_diffusers(folder: Path) -> Prior:
    from diffusers import DDPMScheduler, UNet2DModel

    unet_dir = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
    if not any(unet_dir.glob("*.safetensors")):
        pickled = [p for p in unet_dir.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if pickled:
            _refuse_pickle(pickled[0])
        raise WeightsError(f"no .safetensors weights in diffusers folder {unet_dir}")
    try:
        model = UNet2DModel.from_pretrained(str(unet_dir), use_safetensors=True, local_files_only=True)
    except (OSError, ValueError) as err:
        raise WeightsError(f"cannot load diffusers UNet2DModel from {unet_dir}: {err}") from err
    sched_cfg = folder / "scheduler" / "scheduler_config.json"
    if sched_cfg.is_file():
        scheduler = DDPMScheduler.from_config(_read_json(sched_cfg))
    else:
        scheduler = DDPMScheduler()  # diffusers' default: linear 1e-4..2e-2, T=1000
    schedule = NoiseSchedule.from_betas(scheduler.betas.double(), name="diffusers")
    prediction = str(scheduler.config.get("prediction_type", "epsilon"))
    denoiser = DiffusersDenoiser(model, schedule, prediction)
    meta: dict[str, Any] = {"source": "diffusers", "path": str(folder)}
    size = model.config.get("sample_size")
    if isinstance(size, int):
        meta["image_size"] = size
    return Prior(denoiser=denoiser, schedule=schedule, meta=meta)


def load_prior(name_or_path: str | os.PathLike[str], device: torch.device | str = "cpu") -> Prior:
    """Load a prior: a shipped name, a geo_ppp prior folder, or a local diffusers folder.

    The denoiser comes back frozen (eval mode, no weight gradients).

    Example:
        >>> prior = load_prior("digits")
        >>> prior.denoiser.in_channels
        1

    Raises:
        WeightsError: if the weights are missing, corrupt, pickled, or do not fit the config.
    """
    path = resolve_weights(name_or_path)
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES or _looks_pickled(path):
            _refuse_pickle(path)
        if path.suffix == ".safetensors":
            path = path.parent
        elif path.name == "config.json":
            path = path.parent
        else:
            raise WeightsError(f"{path} is neither a prior folder nor a .safetensors file")
    config_path = path / "config.json"
    model_index = path / "model_index.json"
    if not config_path.is_file() and not model_index.is_file() and not (path / "unet").is_dir():
        pickled = [p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if pickled:
            _refuse_pickle(pickled[0])
        raise WeightsError(
            f"{path} has no config.json; a prior folder holds config.json and model.safetensors"
        )
    config = _read_json(config_path) if config_path.is_file() else {}
    kind = config.get("format")
    if kind == "geo_ppp.segmenter":  # before diffusers is tried (and prints its own noise)
        raise WeightsError(
            f"{path} is a saved segmenter, not a prior; pass it as --segmenter to segment, "
            "or give a prior folder"
        )
    if kind is not None and kind != FORMAT:
        raise WeightsError(
            f"{config_path} is in format {kind!r}, not a prior ({FORMAT!r} or a diffusers folder); "
            "give a prior folder"
        )
    if config and kind is None and "_class_name" not in config and not model_index.is_file():
        raise WeightsError(
            f"{config_path} is neither a geo_ppp prior's config (no \"format\": {FORMAT!r}) nor a diffusers "
            "model's (no \"_class_name\"); give a prior folder"
        )
    if kind != FORMAT:
        prior = _load_diffusers(path)
    else:
        if config.get("architecture") != "unet":
            raise WeightsError(f"{config_path}: unknown architecture {config.get('architecture')!r}")
        try:
            unet_config = UNetConfig.from_dict(config["unet"])
            schedule = NoiseSchedule.from_config(config["schedule"])
            denoiser = UNetDenoiser(unet_config, str(config.get("prediction", "eps")), schedule)
        except (KeyError, TypeError, ConfigError) as err:
            raise WeightsError(f"{config_path} is not a valid prior config: {err}") from err
        tensors, _ = read_safetensors(path / "model.safetensors")
        try:
            denoiser.load_state_dict(tensors, strict=True)
        except RuntimeError as err:
            raise WeightsError(
                f"{path / 'model.safetensors'} does not match the architecture in {config_path}: "
                f"{str(err).splitlines()[0]}; the two files must come from the same training run"
            ) from err
        prior = Prior(denoiser=denoiser, schedule=schedule, meta=dict(config.get("meta", {})))
    prior.denoiser.freeze()
    return prior.to(device)
