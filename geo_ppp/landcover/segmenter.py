"""A small fully convolutional segmenter trained on a region: imagery in, class probabilities out.

Rolf et al.'s implicit posterior (QR, UAI 2022) trains it from the weak labels alone: torchgeo's
``QRLoss`` between its predictions and the weak-label class distribution. Tensors in, tensors out:
the pipeline (:mod:`geo_ppp.pipeline.region`) feeds it crops of a region and applies it to tiles.

The network has two paths whose class logits are added:

- a pixel path: a per-pixel MLP (1x1 convolutions, ``pixel_width`` hidden channels) at full resolution:
  the colour of each pixel;
- a context path: the features average-pooled by ``pool`` (4: 4 m cells on 1 m imagery), dilated 3x3
  convolutions (``dilations``, ``width`` channels, BatchNorm, ReLU) and a 1x1 convolution to the classes,
  upsampled bilinearly: what surrounds the pixel (receptive field ~70 m with the defaults).

Its cost is what makes it the fast path: ~3 ms per 256 x 256 window on 2 CPU cores (the pixel path
is a matrix product per window, not a 1x1 ``Conv2d``, which is ~8x slower on CPU in NCHW). Inputs:
R, G, B, NIR and NDVI (:func:`~geo_ppp.landcover.clustering.image_features`), standardised with the
region's statistics.
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
from torch.nn import functional as F

from geo_ppp.core.atomic import atomic_path, write_json
from geo_ppp.errors import ConfigError, InputError
from geo_ppp.landcover.clustering import image_features

__all__ = [
    "Crops",
    "FeatureStatistics",
    "feature_statistics",
    "random_crops",
    "SEGMENTER_LOSSES",
    "SEGMENTER_VERSION",
    "Segmenter",
    "SegmenterConfig",
    "load_segmenter",
    "save_segmenter",
    "train_segmenter",
]

#: how a segmenter learns: ``qr`` from the weak-label distribution alone (Rolf et al.); ``distill``
#: from another model's posteriors (soft cross-entropy, weighted by their confidence)
SEGMENTER_LOSSES = ("qr", "distill")
#: the network's design (a work dir's tiles of another version are not resumed)
SEGMENTER_VERSION = 2


@dataclass(frozen=True)
class SegmenterConfig:
    """The segmenter's shape and training (small, frozen, saved beside its weights).

    Attributes:
        in_channels: input features (5: R, G, B, NIR, NDVI; 3 for RGB imagery).
        classes: output classes (the legend's).
        width: channels of the context path's hidden layers.
        dilations: one 3x3 layer of the context path per dilation.
        pixel_width: hidden channels of the pixel path.
        pool: the context path's cell size in pixels (crops and tiles should be multiples of it).
        steps, batch_size, crop, lr: training: Adam steps on random ``crop`` x ``crop`` pieces.
        loss: one of :data:`SEGMENTER_LOSSES`.
        qr_weight: ``distill`` only: weight of a QR term against the weak labels added to the loss.
    """

    in_channels: int = 5
    classes: int = 4
    width: int = 32
    dilations: tuple[int, ...] = (1, 1, 2, 4)
    pixel_width: int = 16
    pool: int = 4
    steps: int = 1000
    batch_size: int = 16
    crop: int = 64
    lr: float = 1e-3
    loss: str = "qr"
    qr_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.loss not in SEGMENTER_LOSSES:
            raise ConfigError(f"unknown segmenter loss {self.loss!r}; use one of {SEGMENTER_LOSSES}")
        sizes = (self.in_channels, self.classes, self.width, self.pixel_width, self.pool, self.steps)
        if min(*sizes, self.batch_size, self.crop) < 1:
            raise ConfigError(
                "segmenter channels, classes, widths, pool, steps, batch size and crop must be >= 1"
            )
        if self.qr_weight < 0:
            raise ConfigError(f"qr_weight must be >= 0, got {self.qr_weight}")
        object.__setattr__(self, "dilations", tuple(int(d) for d in self.dilations))


class Segmenter(nn.Module):
    """Features (B, C, H, W), standardised -> class logits (B, K, H, W); any H, W."""

    def __init__(
        self, config: SegmenterConfig, mean: torch.Tensor | None = None, std: torch.Tensor | None = None
    ):
        super().__init__()
        self.config = config
        self.pixel_in = nn.Conv2d(config.in_channels, config.pixel_width, 1)
        self.pixel_out = nn.Conv2d(config.pixel_width, config.classes, 1)
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
        self.context = nn.Sequential(*layers)
        shape = (1, config.in_channels, 1, 1)
        self.register_buffer("mean", torch.zeros(shape) if mean is None else mean.reshape(shape).float())
        self.register_buffer(
            "std", torch.ones(shape) if std is None else std.reshape(shape).float().clamp_min(1e-6)
        )

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) imagery in 0-255 -> standardised features."""
        return (image_features(image)[:, : self.config.in_channels] - self.mean) / self.std

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # noqa: D102
        h, w = features.shape[-2:]
        pool = self.config.pool
        pad_h, pad_w = -h % pool, -w % pool
        padded = F.pad(features, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else features
        context = self.context(F.avg_pool2d(padded, pool))
        context = F.interpolate(context, scale_factor=pool, mode="bilinear", align_corners=False)[..., :h, :w]
        return self._pixel(features) + context

    def _pixel(self, features: torch.Tensor) -> torch.Tensor:
        """The pixel path: a per-pixel MLP as matrix products over the flattened pixels.

        One window at a time (its hidden layer stays in the CPU's cache: ~4x faster than the batch
        at once); an exported graph gets the batched form, which computes the same.
        """
        w_in, b_in = self.pixel_in.weight[:, :, 0, 0], self.pixel_in.bias[:, None]
        w_out, b_out = self.pixel_out.weight[:, :, 0, 0], self.pixel_out.bias[:, None]
        flat = features.flatten(2)
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            out = torch.matmul(w_out, torch.relu(torch.matmul(w_in, flat) + b_in)) + b_out
        else:
            out = torch.stack(
                [torch.addmm(b_out, w_out, torch.relu(torch.addmm(b_in, w_in, x))) for x in flat]
            )
        return out.view(features.shape[0], -1, *features.shape[2:])

    @torch.no_grad()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) imagery in 0-255 -> (B, K, H, W) float32 class probabilities (eval mode).

        On CUDA the network runs under bf16 autocast; the softmax is taken in float32.
        """
        was = self.training
        self.eval()
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=image.is_cuda):
                logits = self(self.features(image))
            return torch.softmax(logits.float(), 1)
        finally:
            self.train(was)


#: ``crops(generator, batch_size, crop)`` -> imagery (B, C, crop, crop) in 0-255, target distributions
#: (B, K, crop, crop), validity (B, 1, crop, crop) and the weak-label distributions (B, K, crop, crop) or
#: None (needed only by a ``distill`` segmenter with ``qr_weight`` > 0)
Crops = Callable[
    [torch.Generator, int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]
]


def random_crops(
    images: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, weak: torch.Tensor | None = None
) -> Crops:
    """The ``crops`` of :func:`train_segmenter` over windows held in memory (N, ., S, S)."""
    size = images.shape[-1]

    def crops(gen: torch.Generator, batch: int, crop: int) -> tuple[torch.Tensor, ...]:
        crop = min(crop, size)
        which = torch.randint(0, len(images), (batch,), generator=gen).tolist()
        ys = torch.randint(0, size - crop + 1, (batch,), generator=gen).tolist()
        xs = torch.randint(0, size - crop + 1, (batch,), generator=gen).tolist()
        pick = list(zip(which, ys, xs, strict=True))
        cut = [
            None if t is None else torch.stack([t[i, :, y : y + crop, x : x + crop] for i, y, x in pick])
            for t in (images, targets, valid, weak)
        ]
        return cut[0], cut[1], cut[2], cut[3]

    return crops


class FeatureStatistics:
    """Per-feature mean and standard deviation over the valid pixels of imagery, tile by tile (streamed)."""

    def __init__(self) -> None:
        self.n = 0.0
        self.sum: torch.Tensor | float = 0.0
        self.sq: torch.Tensor | float = 0.0

    def add(self, images: torch.Tensor, valid: torch.Tensor) -> None:
        """Add (N, C, S, S) imagery in 0-255 and its (N, 1, S, S) validity."""
        feats = image_features(images).double()
        mask = valid.bool().expand_as(feats).double()
        self.n += float(mask[:, 0].sum())
        self.sum = self.sum + (feats * mask).sum((0, 2, 3))
        self.sq = self.sq + (feats**2 * mask).sum((0, 2, 3))

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) as float32 tensors of the features."""
        if self.n < 2:
            raise InputError("no valid imagery pixel to standardise the segmenter's features with")
        mean = self.sum / self.n
        var = (self.sq / self.n - mean**2) * self.n / (self.n - 1)
        return mean.float(), var.clamp_min(0).sqrt().float()


def feature_statistics(images: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation over the valid pixels of (N, C, S, S) imagery in 0-255."""
    stats = FeatureStatistics()
    stats.add(images, valid)
    return stats.result()


def _qr_loss() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    from torchgeo.losses import QRLoss

    return QRLoss()


def _distill_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy against a teacher's posteriors, each pixel weighted by the teacher's confidence."""
    return (-(target * torch.log(probs.clamp_min(1e-8))).sum(1) * target.max(1).values).mean()


def _uniform_where_invalid(target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Invalid pixels carry a uniform target: they pull towards no class."""
    return torch.where(valid > 0, target, torch.full_like(target, 1.0 / target.shape[1]))


def train_segmenter(
    crops: Crops,
    config: SegmenterConfig,
    mean: torch.Tensor,
    std: torch.Tensor,
    *,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 100,
    device: str = "cpu",
) -> Segmenter:
    """Train a segmenter on random crops of a region; seeded and deterministic on the CPU.

    Args:
        crops: the training pieces (:data:`Crops`).
        config: shape and training.
        mean: per-feature means of the region (standardisation).
        std: per-feature standard deviations of the region.
        seed: seeds the initialisation and the crops.
        progress: called with (step, steps) after every step (first with the step it resumes from).
        checkpoint: a file where the training state is kept every ``checkpoint_every`` steps; a run
            that finds one resumes from it and ends with the same weights as an uninterrupted run.
        checkpoint_every: steps between checkpoints.
        device: ``cpu`` or ``cuda`` (bf16 autocast on CUDA).
    """
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, the caller's RNG state untouched
        torch.manual_seed(seed)
        model = Segmenter(config, mean, std)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), config.lr)
    gen = torch.Generator().manual_seed(seed)
    start = 0
    ident = json.dumps({"config": asdict(config), "seed": seed, "mean": mean.tolist(), "std": std.tolist()})
    if checkpoint is not None and Path(checkpoint).is_file():
        start = _resume(Path(checkpoint), ident, model, opt, gen)
        if progress is not None:
            progress(start, config.steps)
    loss_fn = _qr_loss() if config.loss == "qr" else _distill_loss
    qr_fn = _qr_loss() if config.loss == "distill" and config.qr_weight > 0 else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))
    model.train()
    for step in range(start, config.steps):
        image, target, valid, weak = (
            None if t is None else t.to(device) for t in crops(gen, config.batch_size, config.crop)
        )
        with autocast:
            logits = model(model.features(image))
        probs = torch.softmax(logits.float(), 1)
        loss = loss_fn(probs, _uniform_where_invalid(target, valid))
        if qr_fn is not None:
            if weak is None:
                raise ConfigError("qr_weight > 0 needs the weak-label distributions from the crops")
            loss = loss + config.qr_weight * qr_fn(probs, _uniform_where_invalid(weak, valid))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if checkpoint is not None and ((step + 1) % checkpoint_every == 0) and step + 1 < config.steps:
            _save_state(Path(checkpoint), ident, model, opt, gen, step + 1)
        if progress is not None:
            progress(step + 1, config.steps)
    return model.cpu().eval()


def _save_state(path: Path, ident: str, model: Segmenter, opt: Any, gen: torch.Generator, step: int) -> None:
    state = {"ident": ident, "step": step, "model": model.state_dict(), "opt": opt.state_dict(),
             "gen": gen.get_state()}  # fmt: skip
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _resume(path: Path, ident: str, model: Segmenter, opt: Any, gen: torch.Generator) -> int:
    """Load a training checkpoint (``weights_only``: nothing arbitrary is unpickled); its step."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any damage: the message names the file and the fix
        raise InputError(
            f"training checkpoint {path} cannot be read ({err}); delete it to train again"
        ) from None
    if state.get("ident") != ident:
        raise InputError(
            f"training checkpoint {path} belongs to another training (settings, seed or data differ); "
            "delete it, or use another work dir"
        )
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    gen.set_state(state["gen"])
    return int(state["step"])


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
        state = load_file(str(weights))
    except KeyError as err:
        raise InputError(
            f"segmenter {folder}: its config.json has no {err} entry; re-save it with --save-segmenter"
        ) from None
    except (ValueError, TypeError, RuntimeError, OSError, SafetensorError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"segmenter {folder} cannot be loaded ({first}); train it again") from None
    mismatch = _state_mismatch(model, state)
    if mismatch:
        raise InputError(
            f"segmenter {folder}: its config.json does not match model.safetensors ({mismatch}); re-save it "
            "with --save-segmenter"
        )
    model.load_state_dict(state)
    meta = record.get("meta")
    return model.eval(), dict(meta) if isinstance(meta, dict) else {}


def _state_mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> str:
    """What differs between a model's parameters and saved weights, in a few words ('' if they fit)."""
    own = model.state_dict()
    parts = []
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    for what, keys in (("missing", missing), ("unexpected", extra), ("of another shape", shapes)):
        if keys:
            more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
            shape = f" {tuple(state[keys[0]].shape)} vs {tuple(own[keys[0]].shape)}" if keys is shapes else ""
            parts.append(f"{len(keys)} tensor(s) {what}, e.g. {keys[0]}{shape}{more}")
    return "; ".join(parts)
