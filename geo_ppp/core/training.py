"""DDPM training for priors: seeded, with a progress bar, resumable from safetensors checkpoints.

The training state (weights, EMA weights, Adam moments, RNG state, loss history) is checkpointed
into ``workdir/checkpoint.safetensors`` every ``checkpoint_every`` steps, atomically. A run started
again with the same workdir continues from the last checkpoint, and because the batch sampler and
the noise draw from one saved generator, a resumed run ends with the same weights as an
uninterrupted one (on the same device).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from geo_ppp.core.atomic import atomic_folder
from geo_ppp.core.checkpoints import (
    carry,
    inside,
    model_identity,
    optimizer_tensors,
    restore_optimizer,
    resume_problem,
)
from geo_ppp.core.config import config_from_mapping, config_to_dict
from geo_ppp.core.denoisers import Denoiser
from geo_ppp.core.schedules import NoiseSchedule
from geo_ppp.core.weights import Prior, read_safetensors, save_prior, write_safetensors
from geo_ppp.errors import ConfigError, ShapeError, WeightsError

__all__ = ["BatchSource", "TrainConfig", "TrainResult", "tensor_batches", "train_and_publish", "train_ddpm"]

log = logging.getLogger(__name__)

#: ``source(generator, batch_size) -> (B, C, H, W)``: draws a training batch with the generator.
BatchSource = Callable[[torch.Generator, int], torch.Tensor]

#: Per-timestep loss weightings :func:`train_ddpm` knows.
LOSS_WEIGHTINGS = ("uniform", "min_snr")


def tensor_batches(data: torch.Tensor, hflip: bool = False) -> BatchSource:
    """A :data:`BatchSource` over an in-memory dataset (N, C, H, W), sampled with replacement.

    Args:
        data: the training set.
        hflip: also mirror half of each batch left-right (for data whose mirror is valid).
    """
    if data.dim() != 4 or data.shape[0] == 0:
        raise ShapeError(f"training data must be a non-empty (N, C, H, W) tensor, got {tuple(data.shape)}")

    def source(gen: torch.Generator, batch_size: int) -> torch.Tensor:
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen)
        batch = data[idx]
        if hflip:
            flip = torch.rand(batch_size, generator=gen) < 0.5
            batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
        return batch

    return source


#: Settings a resumed run may change: they do not alter the optimiser's path up to the checkpoint
#: (the EMA continues from its saved state with the new decay; 0 makes the saved prior the raw weights;
#: a cooldown only shapes the steps after ``steps - cooldown``).
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "ema_decay", "cooldown")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train_ddpm`.

    Attributes:
        steps: optimiser steps in total (a resumed run continues up to this number).
        batch_size: samples per step.
        lr: AdamW learning rate after warm-up.
        warmup: linear warm-up steps.
        weight_decay: AdamW weight decay.
        ema_decay: decay of the exponential moving average of the weights (the saved prior); 0
            saves the optimised weights themselves. A resumed run may change it.
        cooldown: the last ``cooldown`` steps decay the learning rate linearly to 0 (a constant
            rate leaves the weights jittering around the optimum; a cooldown settles them). A
            resumed run may add one: ``steps`` = checkpoint step + cooldown cools a trained prior down.
        grad_clip: clip of the global gradient norm.
        seed: seeds the batch sampler, the noise and the timesteps.
        checkpoint_every: steps between checkpoints.
        loss_weighting: ``uniform`` (DDPM's L_simple) or ``min_snr`` (Hang et al. 2023: each
            timestep's loss weighed by ``min(SNR, snr_gamma)``, normalised for the prediction
            target, so that nearly clean timesteps stop dominating the gradient).
        snr_gamma: the clip of the min-SNR weighting.
    """

    steps: int = 20000
    batch_size: int = 128
    lr: float = 5e-4
    warmup: int = 500
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 1000
    loss_weighting: str = "uniform"
    snr_gamma: float = 5.0
    cooldown: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ConfigError("steps, batch_size and checkpoint_every must be >= 1")
        if not 0 <= self.cooldown <= self.steps:
            raise ConfigError(f"cooldown must lie in 0..steps ({self.steps}), got {self.cooldown}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ConfigError(f"unknown loss_weighting {self.loss_weighting!r}; use one of {LOSS_WEIGHTINGS}")
        if self.snr_gamma <= 0:
            raise ConfigError(f"snr_gamma must be > 0, got {self.snr_gamma}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")

    def lr_at(self, step: int) -> float:
        """The learning rate of 0-based ``step``: linear warm-up, constant, then the cooldown to 0."""
        lr = self.lr * min(1.0, (step + 1) / max(self.warmup, 1))
        if self.cooldown:
            lr *= min(1.0, (self.steps - step) / self.cooldown)
        return lr

    def to_dict(self) -> dict[str, object]:
        """JSON-able form."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TrainConfig:
        """Strict parse."""
        return config_from_mapping(cls, data, "the training config")


@dataclass
class TrainResult:
    """What :func:`train_ddpm` returns.

    Attributes:
        ema: the EMA denoiser (frozen): the prior to save.
        model: the raw trained denoiser.
        losses: loss of every step so far, including steps before a resume.
        resumed_from: the step the run resumed from (0 for a fresh run).
    """

    ema: Denoiser
    model: Denoiser
    losses: list[float]
    resumed_from: int


#: ``writer(steps_done, ema, losses, write)``: see ``checkpoint_writer`` of :func:`train_ddpm`.
CheckpointWriter = Callable[[int, Denoiser, list[float], Callable[[Path], None]], None]


def _loss(
    model: Denoiser,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    config: TrainConfig,
) -> torch.Tensor:
    """The regression loss of one batch, on the model's own target (noise or velocity)."""
    prediction = getattr(model, "prediction", "eps")
    td = t.to(x0.device)
    if prediction == "v":
        a = schedule.sqrt_abar(t, x0)
        s = schedule.sqrt_one_minus_abar(t, x0)
        target = a * noise - s * x0
        out = model.predict_raw(x_t, model.check_input(x_t, td))  # type: ignore[attr-defined]
    else:
        target = noise
        out = model(x_t, td)
    per_sample = (out.float() - target).pow(2).flatten(1).mean(1)
    if config.loss_weighting == "min_snr":
        abar = schedule.alphas_cumprod[t.cpu() - 1].to(x0.device, torch.float32)
        snr = abar / (1 - abar)
        clipped = snr.clamp(max=config.snr_gamma)
        # the eps loss equals SNR x the x0 loss and the v loss (SNR + 1) x it: divide that out
        per_sample = per_sample * clipped / (snr + 1 if prediction == "v" else snr)
    return per_sample.mean()


def train_ddpm(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    data: torch.Tensor | BatchSource,
    config: TrainConfig | None = None,
    workdir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    device: torch.device | str = "cpu",
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
    on_checkpoint: Callable[[int, Denoiser, list[float]], None] | None = None,
    bf16: bool = False,
    identity: Mapping[str, object] | None = None,
    restart_on_mismatch: bool = False,
    checkpoint_writer: CheckpointWriter | None = None,
) -> TrainResult:
    """Train ``denoiser`` on ``data`` to predict its target (noise, or velocity for a v-model).

    Args:
        denoiser: the model to train, in place.
        schedule: the noise schedule.
        data: an (N, C, H, W) tensor in [-1, 1], or a :data:`BatchSource`.
        config: training settings.
        workdir: folder for ``checkpoint.safetensors``; ``None`` disables checkpoints.
        resume: continue from a checkpoint in ``workdir`` when one exists.
        device: where to train.
        progress: show a tqdm bar with the running loss.
        callback: called as ``callback(step, loss)`` after each step.
        on_checkpoint: called as ``on_checkpoint(steps_done, ema, losses)`` after each checkpoint
            (for example to publish the prior so far, so that a stopped run leaves a usable one).
        bf16: run the forward pass under bfloat16 autocast on CUDA (weights, optimiser state and
            the loss stay float32; ignored on the CPU). A bf16 run may resume an fp32 checkpoint.
        identity: what the checkpoint was made from beyond ``config`` (a digest of the data, the
            model's settings...), keyed by the option that sets it (``--base-channels``); saved in
            the checkpoint, and a checkpoint made from other values is not resumed.
        restart_on_mismatch: a checkpoint of other settings (or past ``config.steps``) is ignored and
            training starts over (``--overwrite``) instead of refusing, naming what differs.
        checkpoint_writer: called as ``checkpoint_writer(steps_done, ema, losses, write)`` at each
            checkpoint instead of writing ``workdir/checkpoint.safetensors`` and calling
            ``on_checkpoint``; ``write(path)`` writes the checkpoint (:func:`train_and_publish` puts
            it into the published folder, so prior and checkpoint appear together).

    Returns:
        A :class:`TrainResult` whose ``ema`` is the prior to save.

    Example:
        >>> from geo_ppp.core.unet import UNetConfig
        >>> from geo_ppp.core.denoisers import UNetDenoiser
        >>> net = UNetDenoiser(UNetConfig(base_channels=8, channel_mult=(1, 2)))
        >>> res = train_ddpm(net, NoiseSchedule.create(), torch.rand(16, 1, 8, 8) * 2 - 1,
        ...                  TrainConfig(steps=5, batch_size=4), progress=False)
    """
    config = config or TrainConfig()
    source = tensor_batches(data) if torch.is_tensor(data) else data
    device = torch.device(device)
    model = denoiser.to(device).train().requires_grad_(True)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    start = 0

    ckpt = Path(workdir) / "checkpoint.safetensors" if workdir is not None else None
    identity = {**model_identity(model), **dict(identity or {})}
    if ckpt is not None and ckpt.exists() and resume:
        tensors, meta = read_safetensors(ckpt)
        problem = resume_problem(
            ckpt, meta, config.to_dict(), TrainConfig().to_dict(), RESUMABLE_CHANGES, identity
        )
        if problem and not restart_on_mismatch:
            raise ConfigError(problem)
        if problem:
            log.warning("%s: starting over (--overwrite)", problem.split(";")[0])
        else:
            try:
                model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
                ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
            except RuntimeError:
                saved = {k[6:]: tuple(v.shape) for k, v in tensors.items() if k.startswith("model.")}
                mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
                odd = next((k for k in mine if saved.get(k) != mine[k]), None) or min(set(saved) - set(mine))
                raise WeightsError(
                    f"the checkpoint in {ckpt.parent} was trained with another model ({odd}: "
                    f"{saved.get(odd, 'absent')} there, {mine.get(odd, 'absent')} here; another "
                    "--base-channels?); pass the settings it was trained with, or --overwrite / --no-resume "
                    "to start over"
                ) from None
            restore_optimizer(opt, tensors, json.loads(meta["optimizer"]))
            gen.set_state(tensors["rng"])
            losses = tensors["losses"].tolist()
            start = int(meta["step"])
            log.info("resumed training from %s at step %d", ckpt, start)

    def write(path: Path, step: int) -> None:
        opt_tensors, opt_meta = optimizer_tensors(opt)
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
        tensors.update(opt_tensors)
        tensors["rng"] = gen.get_state()
        tensors["losses"] = torch.tensor(losses, dtype=torch.float64)
        meta = {
            "step": str(step),
            "train_config": json.dumps(config.to_dict()),
            "optimizer": json.dumps(opt_meta),
            "identity": json.dumps(identity, sort_keys=True, default=str),
        }
        write_safetensors(path, tensors, meta)

    bar = tqdm(total=config.steps, initial=start, disable=not progress, desc="train", unit="step")
    for step in range(start, config.steps):
        for group in opt.param_groups:
            group["lr"] = config.lr_at(step)
        x0 = source(gen, config.batch_size).to(device, torch.float32)
        t = torch.randint(1, schedule.num_steps + 1, (x0.shape[0],), generator=gen)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        x_t = schedule.q_sample(x0, t, noise)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
            loss = _loss(model, schedule, x0, x_t, t, noise, config)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        with torch.no_grad():
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                p_ema.lerp_(p, 1 - decay)
            for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
                b_ema.copy_(b)
        value = float(loss.detach())
        losses.append(value)
        if callback is not None:
            callback(step, value)
        bar.update(1)
        if step % 50 == 0:
            recent = losses[-200:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            done = step + 1
            if checkpoint_writer is not None:
                checkpoint_writer(done, ema, losses, lambda path, done=done: write(Path(path), done))
                continue
            if ckpt is not None:
                write(ckpt, done)
            if on_checkpoint is not None:
                on_checkpoint(done, ema, losses)
    bar.close()
    model.eval()
    return TrainResult(ema=ema.freeze(), model=model, losses=losses, resumed_from=start)


def train_and_publish(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    data: torch.Tensor | BatchSource,
    config: TrainConfig,
    out: str | os.PathLike[str],
    meta_at: Callable[[int, list[float]], dict[str, object]],
    workdir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    device: torch.device | str = "cpu",
    progress: bool = True,
    bf16: bool = False,
    identity: Mapping[str, object] | None = None,
    restart_on_mismatch: bool = False,
) -> Prior:
    """:func:`train_ddpm`, publishing the EMA prior to ``out`` at every checkpoint and at the end.

    A stopped run leaves a usable prior; ``meta_at(steps_done, losses)`` gives its metadata. Each
    publication is one atomic folder swap (:func:`~geo_ppp.core.atomic.atomic_folder`): ``out`` holds
    the weights and config of one checkpoint, never a mix, and nothing until the first checkpoint, so
    a run that fails before it leaves no folder. A ``workdir`` inside ``out`` (the default
    ``out/.train``) is part of the swap: its checkpoint is written into the new folder with the prior
    it belongs to. Every other file the folder held (the work dir's caches, reports such as
    ``prior_check.json``) is carried into the new folder (hard links).
    """
    out = Path(out)
    work = Path(workdir) if workdir is not None else None
    within = work is not None and inside(work, out)

    def publish(
        steps_done: int, ema: Denoiser, losses: list[float], write: Callable[[Path], None] | None
    ) -> None:
        snapshot = copy.deepcopy(ema).eval()
        prior = Prior(denoiser=snapshot, schedule=schedule, meta=meta_at(steps_done, losses))
        if work is not None and not within and write is not None:
            write(work / "checkpoint.safetensors")  # its own folder: written first, then the prior
        with atomic_folder(out) as tmp:
            carry(out, tmp, skip=("config.json", "model.safetensors"))  # the rest stays: checkpoints, reports
            save_prior(prior, tmp)
            if within and work is not None and write is not None:
                rel = Path(os.path.realpath(work)).relative_to(os.path.realpath(out))
                write(tmp / rel / "checkpoint.safetensors")

    def at_checkpoint(
        steps_done: int, ema: Denoiser, losses: list[float], write: Callable[[Path], None]
    ) -> None:
        publish(steps_done, ema, losses, write if work is not None else None)

    result = train_ddpm(
        denoiser,
        schedule,
        data,
        config,
        work,
        resume,
        device,
        progress,
        bf16=bf16,
        identity=identity,
        restart_on_mismatch=restart_on_mismatch,
        checkpoint_writer=at_checkpoint,
    )
    if result.resumed_from >= config.steps:  # nothing trained: the checkpoint's prior, republished
        publish(config.steps, result.ema, result.losses, None)
    prior = Prior(denoiser=result.ema, schedule=schedule, meta=meta_at(config.steps, result.losses))
    return prior
