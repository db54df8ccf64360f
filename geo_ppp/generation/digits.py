"""The digits demonstration of the generic core, on real data that ships with scikit-learn.

scikit-learn's handwritten digits (1,797 real 8x8 scans from UCI) are upsampled bilinearly to
16x16 and scaled to [-1, 1]. They are split once, with a fixed permutation, into

- ``prior``: 2/3 of the digits, to train the DDPM prior and the classifier used as a constraint;
- ``judge``: the other 1/3, to train an independent classifier that scores the generated samples
  and to serve as held-out real data.

This module is a user of the core, not part of it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from geo_ppp.core.denoisers import UNetDenoiser
from geo_ppp.core.schedules import NoiseSchedule
from geo_ppp.core.training import TrainConfig, train_and_publish
from geo_ppp.core.unet import UNetConfig
from geo_ppp.core.weights import (
    SHIPPED_WEIGHTS,
    Prior,
    read_safetensors,
    write_safetensors,
)
from geo_ppp.errors import ConfigError

__all__ = [
    "CLASSIFIER_NAME",
    "IMAGE_SIZE",
    "PRIOR_UNET",
    "DigitClassifier",
    "load_digit_classifier",
    "load_digits",
    "save_digit_classifier",
    "train_digit_classifier",
    "train_digits_prior",
]

IMAGE_SIZE = 16
CLASSIFIER_NAME = "digits_classifier"
SPLIT_SEED = 0
PRIOR_FRACTION = 2 / 3

#: The shipped digits prior's architecture (see ``geo-ppp train-prior --dataset digits``).
PRIOR_UNET = {
    "in_channels": 1,
    "base_channels": 24,
    "channel_mult": (1, 2, 2),
    "num_res_blocks": 1,
    "attention_levels": (2,),
    "attention_heads": 4,
    "dropout": 0.1,
}

#: Plug-and-play settings recorded in the digits prior as its defaults (tuned with
#: benchmarks/digits_constraints.py): start from a 25-step DDIM sample of the prior, which keeps a
#: batch diverse, and optimise from t = 400 down, with the constraint's gradient clipped to the
#: prior's norm.
DIGITS_PNP = {
    "steps": 200,
    "lr": 0.05,
    "lr_schedule": "linear",
    "t_max": 400,
    "grad_clip": 1.0,
    "init": "ddim",
}

#: The shipped digits prior's training settings.
PRIOR_TRAIN = {"steps": 6000, "batch_size": 64, "lr": 1e-3, "warmup": 200, "ema_decay": 0.995}


def load_digits(split: str = "prior", size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Real handwritten digits as images in [-1, 1] and their labels.

    Args:
        split: ``prior``, ``judge`` or ``all``.
        size: output height and width (bilinear upsampling of the 8x8 scans).

    Returns:
        Images (N, 1, size, size) float32 and labels (N,) int64.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    if split not in ("prior", "judge", "all"):
        raise ConfigError(f"split must be 'prior', 'judge' or 'all', got {split!r}")
    bunch = sk_load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = images.clamp(0, 1) * 2 - 1
    order = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(len(labels)))
    cut = int(round(PRIOR_FRACTION * len(labels)))
    if split == "prior":
        order = order[:cut]
    elif split == "judge":
        order = order[cut:]
    return images[order].contiguous(), labels[order].contiguous()


class DigitClassifier(nn.Module):
    """A small CNN: (B, 1, 16, 16) in [-1, 1] -> logits (B, 10)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.width = width
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.SiLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.SiLU(),
            nn.AvgPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.SiLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, 10)."""
        return self.head(self.features(x))


def train_digit_classifier(
    epochs: int = 40,
    seed: int = 0,
    noise_std: float = 0.3,
    progress: bool = False,
) -> tuple[DigitClassifier, dict[str, float]]:
    """Train the constraint classifier on the ``prior`` split.

    Inputs are perturbed with Gaussian noise of random strength (up to ``noise_std``) and random
    one-pixel shifts, which makes its input gradients smooth enough to guide the optimiser.

    Returns:
        The classifier (eval mode) and its accuracy on the clean ``judge`` split.
    """
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = load_digits("prior")
    xj, yj = load_digits("judge")
    model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in tqdm(range(epochs), disable=not progress, desc="classifier"):
        model.train()
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 64):
            idx = perm[i : i + 64]
            xb = x[idx]
            shift = torch.randint(-1, 2, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=shift, dims=(2, 3))
            std = torch.rand(len(idx), 1, 1, 1, generator=gen) * noise_std
            xb = xb + std * torch.randn(xb.shape, generator=gen)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(xj).argmax(1) == yj).float().mean())
    return model, {"judge_accuracy": acc}


def save_digit_classifier(
    model: DigitClassifier, folder: str | os.PathLike[str], meta: dict[str, object]
) -> Path:
    """Write ``model.safetensors`` (with the metadata in its header) into ``folder``."""
    folder = Path(folder)
    header = {"width": str(model.width), **{k: str(v) for k, v in meta.items()}}
    write_safetensors(folder / "model.safetensors", model.state_dict(), header)
    return folder


def load_digit_classifier(
    folder: str | os.PathLike[str] | None = None, device: torch.device | str = "cpu"
) -> DigitClassifier:
    """Load the shipped (or a given) digits classifier, frozen."""
    folder = Path(folder) if folder is not None else SHIPPED_WEIGHTS / CLASSIFIER_NAME
    tensors, meta = read_safetensors(folder / "model.safetensors")
    model = DigitClassifier(width=int(meta.get("width", 32)))
    model.load_state_dict(tensors)
    return model.eval().requires_grad_(False).to(device)


def judge_classifier(seed: int = 0):  # noqa: ANN201 - sklearn estimator
    """An independent classifier for scoring: an RBF SVM on the ``judge`` split's pixels.

    A different model family trained on disjoint data from the constraint's classifier, so that
    samples cannot pass by exploiting the constraint classifier's weaknesses.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    x, y = load_digits("judge")
    # Platt-calibrated probabilities (for the confidence measure) from one SVM fitted on all of it.
    judge = CalibratedClassifierCV(SVC(C=10.0, gamma="scale", random_state=seed), ensemble=False)
    judge.fit(x.flatten(1).numpy(), y.numpy())
    return judge


def train_digits_prior(
    out: str | os.PathLike[str],
    *,
    steps: int | None = None,
    seed: int = 0,
    workdir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    device: torch.device | str = "cpu",
    progress: bool = True,
    unet: dict[str, object] | None = None,
    command: str = "",
    restart_on_mismatch: bool = False,
) -> Prior:
    """Train a DDPM prior on the ``prior`` split of the digits and save it to ``out``.

    Args:
        out: output folder (``config.json`` + ``model.safetensors``).
        steps: training steps (default: the shipped prior's).
        seed: seeds everything.
        workdir: checkpoint folder for resuming (default: ``out/.train``).
        resume: continue from a checkpoint in ``workdir``.
        device: where to train.
        progress: show a progress bar.
        unet: U-Net config overrides (for example a tiny model for tests).
        command: the command line, recorded in the prior's metadata.
        restart_on_mismatch: replace a checkpoint of other settings instead of refusing it.

    Returns:
        The trained (EMA) prior, as saved.
    """
    x, _ = load_digits("prior")
    unet_config = UNetConfig(**{**PRIOR_UNET, **(unet or {})})  # type: ignore[arg-type]
    train = TrainConfig(**{**PRIOR_TRAIN, "seed": seed, **({"steps": steps} if steps is not None else {})})
    torch.manual_seed(seed)  # weight initialisation
    denoiser = UNetDenoiser(unet_config)
    schedule = NoiseSchedule.create("linear", 1000)
    workdir = Path(workdir) if workdir is not None else Path(out) / ".train"

    def meta_at(steps_done: int, losses: list[float]) -> dict[str, object]:
        recent = losses[-500:] or [float("nan")]
        return {
            "name": "digits",
            "data": "scikit-learn load_digits, 'prior' split (2/3, permutation seed 0), "
            "8x8 upsampled bilinearly to 16x16, scaled to [-1, 1]",
            "image_size": IMAGE_SIZE,
            "value_range": [-1.0, 1.0],
            "classifier": CLASSIFIER_NAME,
            "pnp": DIGITS_PNP,
            "train": train.to_dict(),
            "trained_steps": steps_done,
            "final_loss": sum(recent) / len(recent),
            "command": command,
        }

    return train_and_publish(
        denoiser, schedule, x, train, out, meta_at, workdir, resume, device, progress,
        restart_on_mismatch=restart_on_mismatch,
    )

