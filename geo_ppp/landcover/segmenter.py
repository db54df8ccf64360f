"""A small fully convolutional segmenter trained on a region: imagery in, class probabilities out.

Rolf et al.'s implicit posterior (QR, UAI 2022) trains it from the weak labels alone: torchgeo's
``QRLoss`` between its predictions and the weak-label class distribution. Tensors in, tensors out:
the pipeline (:mod:`geo_ppp.pipeline.region`) feeds it crops of a region and applies it to tiles.

The network: dilated 3x3 convolutions (dilations 1, 2, 4, 8, 1; a 33-pixel receptive field) with
BatchNorm and ReLU, then a 1x1 convolution to the classes. Inputs: R, G, B, NIR and NDVI
(:func:`~geo_ppp.landcover.clustering.image_features`), standardised with the region's statistics.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from geo_ppp.core.atomic import atomic_path, write_json
from geo_ppp.errors import ConfigError, InputError
from geo_ppp.landcover.clustering import image_features

__all__ = [
    "feature_statistics",
    "random_crops",
    "SEGMENTER_LOSSES",
    "Segmenter",
    "SegmenterConfig",
    "load_segmenter",
    "save_segmenter",
    "train_segmenter",
]

#: how a segmenter learns: ``qr`` from the weak-label distribution alone (Rolf et al.); ``distill``
#: from another model's posteriors (soft cross-entropy, weighted by their confidence)
SEGMENTER_LOSSES = ("qr", "distill")


@dataclass(frozen=True)
class SegmenterConfig:
    """The segmenter's shape and training (small, frozen, saved beside its weights).

    Attributes:
        in_channels: input features (5: R, G, B, NIR, NDVI; 3 for RGB imagery).
        classes: output classes (the legend's).
        width: channels of every hidden layer.
        dilations: one 3x3 layer per dilation.
        steps, batch_size, crop, lr: training: Adam steps on random ``crop`` x ``crop`` pieces.
        loss: one of :data:`SEGMENTER_LOSSES`.
    """

    in_channels: int = 5
    classes: int = 4
    width: int = 32
    dilations: tuple[int, ...] = (1, 2, 4, 8, 1)
    steps: int = 1000
    batch_size: int = 16
    crop: int = 64
    lr: float = 1e-3
    loss: str = "qr"

    def __post_init__(self) -> None:
        if self.loss not in SEGMENTER_LOSSES:
            raise ConfigError(f"unknown segmenter loss {self.loss!r}; use one of {SEGMENTER_LOSSES}")
        if min(self.in_channels, self.classes, self.width, self.steps, self.batch_size, self.crop) < 1:
            raise ConfigError("segmenter channels, classes, width, steps, batch size and crop must be >= 1")
        object.__setattr__(self, "dilations", tuple(int(d) for d in self.dilations))


class Segmenter(nn.Module):
    """Features (B, C, H, W), standardised -> class logits (B, K, H, W); any H, W."""

    def __init__(
        self, config: SegmenterConfig, mean: torch.Tensor | None = None, std: torch.Tensor | None = None
    ):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c = config.in_channels
        for d in config.dilations:
            layers += [
                nn.Conv2d(c, config.width, 3, padding=d, dilation=d),
                nn.BatchNorm2d(config.width),
                nn.ReLU(),
            ]
            c = config.width
        layers.append(nn.Conv2d(c, config.classes, 1))
        self.net = nn.Sequential(*layers)
        shape = (1, config.in_channels, 1, 1)
        self.register_buffer("mean", torch.zeros(shape) if mean is None else mean.reshape(shape).float())
        self.register_buffer(
            "std", torch.ones(shape) if std is None else std.reshape(shape).float().clamp_min(1e-6)
        )

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) imagery in 0-255 -> standardised features."""
        return (image_features(image)[:, : self.config.in_channels] - self.mean) / self.std

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.net(features)

    @torch.no_grad()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) imagery in 0-255 -> (B, K, H, W) class probabilities (eval mode)."""
        was = self.training
        self.eval()
        try:
            return torch.softmax(self(self.features(image)), 1)
        finally:
            self.train(was)


def random_crops(
    images: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor
) -> Callable[[torch.Generator, int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The ``crops`` of :func:`train_segmenter` over windows held in memory (N, ., S, S)."""
    size = images.shape[-1]

    def crops(gen: torch.Generator, batch: int, crop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        crop = min(crop, size)
        which = torch.randint(0, len(images), (batch,), generator=gen).tolist()
        ys = torch.randint(0, size - crop + 1, (batch,), generator=gen).tolist()
        xs = torch.randint(0, size - crop + 1, (batch,), generator=gen).tolist()
        pick = list(zip(which, ys, xs, strict=True))
        cut = [
            torch.stack([t[i, :, y : y + crop, x : x + crop] for i, y, x in pick])
            for t in (images, targets, valid)
        ]
        return cut[0], cut[1], cut[2]

    return crops


def feature_statistics(images: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation over the valid pixels of (N, C, S, S) imagery in 0-255."""
    feats = image_features(images)
    mask = valid.bool().expand_as(feats)
    mean = torch.stack([feats[:, c][mask[:, c]].mean() for c in range(feats.shape[1])])
    std = torch.stack([feats[:, c][mask[:, c]].std() for c in range(feats.shape[1])])
    return mean, std


def _qr_loss() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    from torchgeo.losses import QRLoss

    return QRLoss()


def _distill_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy against a teacher's posteriors, each pixel weighted by the teacher's confidence."""
    return (-(target * torch.log(probs.clamp_min(1e-8))).sum(1) * target.max(1).values).mean()


def train_segmenter(
    crops: Callable[[torch.Generator, int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    config: SegmenterConfig,
    mean: torch.Tensor,
    std: torch.Tensor,
    *,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Segmenter:
    """Train a segmenter on random crops of a region; seeded and deterministic on the CPU.

    Args:
        crops: ``crops(generator, batch_size, crop)`` -> imagery (B, C, crop, crop) in 0-255, target
            distributions (B, K, crop, crop) and validity (B, 1, crop, crop).
        config: shape and training.
        mean: per-feature means of the region (standardisation).
        std: per-feature standard deviations of the region.
        seed: seeds the initialisation and the crops.
        progress: called with (step, steps) after every step.
    """
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, the caller's RNG state untouched
        torch.manual_seed(seed)
        model = Segmenter(config, mean, std)
    opt = torch.optim.Adam(model.parameters(), config.lr)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = _qr_loss() if config.loss == "qr" else _distill_loss
    model.train()
    for step in range(config.steps):
        image, target, valid = crops(gen, config.batch_size, config.crop)
        logits = model(model.features(image))
        # invalid pixels carry a uniform target: they pull towards no class
        target = torch.where(valid > 0, target, torch.full_like(target, 1.0 / target.shape[1]))
        loss = loss_fn(torch.softmax(logits, 1), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress is not None:
            progress(step + 1, config.steps)
    return model.eval()


def save_segmenter(folder: str | os.PathLike[str], model: Segmenter, meta: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (the config, statistics and ``meta``) atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    write_json(
        folder / "config.json", {"format": "geo_ppp.segmenter", "config": asdict(model.config), "meta": meta}
    )
    return folder


def load_segmenter(folder: str | os.PathLike[str]) -> tuple[Segmenter, dict[str, Any]]:
    """Load a saved segmenter (safetensors only: nothing is unpickled) and its metadata.

    Raises:
        InputError: not a segmenter folder, a damaged config or weights (with the fix).
    """
    folder = Path(folder)
    cfg_path, weights = folder / "config.json", folder / "model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise InputError(f"{folder} is not a geo_ppp segmenter (config.json and model.safetensors expected)")
    try:
        record = json.loads(cfg_path.read_text())
        if record.get("format") != "geo_ppp.segmenter":
            raise ValueError("format is not geo_ppp.segmenter")
        config = SegmenterConfig(**record["config"])
        model = Segmenter(config)
        model.load_state_dict(load_file(str(weights)))
    except (ValueError, KeyError, TypeError, RuntimeError, OSError, SafetensorError) as err:
        raise InputError(f"segmenter {folder} cannot be loaded ({err}); train it again") from None
    return model.eval(), dict(record.get("meta", {}))
