"""Conditional generation with a prior and constraints: the API behind ``geo-ppp generate``."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from geo_ppp.core.constraints import Constraint, build_constraint
from geo_ppp.core.memory import check_memory
from geo_ppp.core.pnp import PnPConfig, StepInfo, plug_and_play
from geo_ppp.core.sampling import SAMPLERS, sample
from geo_ppp.core.weights import SHIPPED_WEIGHTS, Prior
from geo_ppp.errors import ConfigError

__all__ = [
    "Snapshots",
    "check_sample_memory",
    "constraint_context",
    "default_pnp_config",
    "generate",
    "pnp_config",
    "progress_callback",
]

log = logging.getLogger(__name__)


def constraint_context(prior: Prior, classifier: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Prior-specific parts the constraint factories may need (the classifier for ``class=``).

    The classifier is the one named in the prior's metadata (a shipped name or a folder next to
    the prior), unless ``classifier`` names another folder. It is loaded only when it exists.
    """
    from geo_ppp.generation.digits import load_digit_classifier

    name = classifier or prior.meta.get("classifier")
    if not name:
        return {}
    folder = Path(name)
    if not folder.is_dir():
        folder = SHIPPED_WEIGHTS / str(name)
    if not folder.is_dir():
        return {}
    device = next(prior.denoiser.parameters()).device
    return {"classifier": load_digit_classifier(folder, device=device)}


def generate(
    prior: Prior,
    constraints: str | Constraint | Sequence[str | Constraint] = (),
    *,
    num: int = 64,
    seed: int | Sequence[int] = 0,
    sampler: str = "pnp",
    config: PnPConfig | None = None,
    steps: int | None = None,
    classifier: str | os.PathLike[str] | None = None,
    callback: Callable[[StepInfo], None] | None = None,
) -> torch.Tensor:
    """Draw ``num`` samples from ``prior``, under ``constraints`` when given.

    Args:
        prior: the prior (see :func:`~geo_ppp.core.weights.load_prior`).
        constraints: specs such as ``"class=3"`` or ``["symmetric", "thick:0.5"]``, or
            :class:`~geo_ppp.core.constraints.Constraint` objects.
        num: number of samples.
        seed: one seed, or one per sample.
        sampler: ``pnp`` (plug-and-play optimisation), or ``ddpm``/``ddim`` for unconditional
            sampling.
        config: plug-and-play settings (``sampler="pnp"``).
        steps: reverse steps for ``ddpm``/``ddim`` (default: all for ddpm, 50 for ddim).
        classifier: folder of a classifier for ``class=`` constraints (default: the prior's).
        callback: per-step callback of the optimiser.

    Returns:
        Samples (num, C, H, W) in the prior's value range, on the CPU.

    Example:
        >>> from geo_ppp.core.weights import load_prior
        >>> x = generate(load_prior("digits"), "class=3", num=8, config=PnPConfig(steps=100))
    """
    size = prior.image_size
    if size is None:
        raise ConfigError("the prior records no image_size; pass a prior trained by geo_ppp or set meta")
    if num < 1:
        raise ConfigError(f"num must be >= 1, got {num}")
    check_sample_memory(prior, num)
    shape = (prior.denoiser.in_channels, size, size)
    specs = [constraints] if isinstance(constraints, str | Constraint) else list(constraints)
    needs_classifier = any(isinstance(c, str) and c.split("=")[0].strip() == "class" for c in specs)
    context = constraint_context(prior, classifier) if needs_classifier else {}
    constraint = build_constraint(specs, **context)
    if sampler == "pnp":
        x = plug_and_play(
            prior.denoiser,
            prior.schedule,
            shape,
            num=num,
            constraint=constraint,
            config=config or default_pnp_config(prior),
            seed=seed,
            callback=callback,
        )
    elif sampler in SAMPLERS:
        if constraint is not None:
            raise ConfigError(
                f"the {sampler} sampler draws unconditional samples; use --sampler pnp with constraints"
            )
        device = next(prior.denoiser.parameters()).device
        x = sample(prior.denoiser, prior.schedule, shape, num, sampler, steps, seed, device)
    else:
        raise ConfigError(f"unknown sampler {sampler!r}; use pnp or one of {sorted(SAMPLERS)}")
    return x.cpu()


class Snapshots:
    """A per-step callback that keeps a copy of the estimate every ``every`` steps.

    Example:
        >>> snaps = Snapshots(every=50)
        >>> x = generate(load_prior("digits"), "class=3", num=4, callback=snaps)  # doctest: +SKIP
        >>> len(snaps.frames)  # doctest: +SKIP
        4
    """

    def __init__(self, every: int = 50) -> None:
        self.every = every
        self.frames: list[tuple[int, torch.Tensor]] = []

    def __call__(self, info: StepInfo) -> None:
        """Record the estimate at every ``every``-th step and at the last."""
        if info.step % self.every == 0 or info.step == info.n_steps - 1:
            self.frames.append((info.step, info.x.detach().cpu().clone()))


def progress_callback(total: int, desc: str = "optimise") -> Callable[[StepInfo], None]:
    """A per-step callback driving a tqdm bar (steps/s, ETA, current t and losses)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", leave=False)

    def callback(info: StepInfo) -> None:
        bar.update(1)
        if info.step % 10 == 0:
            bar.set_postfix(
                t=int(info.t.float().mean()),
                prior=f"{float(info.prior_loss.mean()):.3f}",
                constraint=f"{float(info.constraint_loss.mean()):.3f}",
            )
        if info.step == info.n_steps - 1:
            bar.close()

    return callback


def default_pnp_config(prior: Prior) -> PnPConfig:
    """The plug-and-play settings the prior recommends in its metadata, else the defaults."""
    return PnPConfig.from_dict(dict(prior.meta.get("pnp", {})))


def pnp_config(
    prior: Prior,
    *,
    steps: int | None = None,
    lr: float | None = None,
    weight: float | None = None,
    finish: str | None = None,
    overrides: Sequence[str] = (),
) -> PnPConfig:
    """The prior's plug-and-play settings with explicit values and ``KEY=VALUE`` overrides on top.

    Values of ``overrides`` are read as JSON when they parse (``t_max=600``, ``project=true``) and
    as text otherwise (``optimizer=adam``); every key must be a :class:`PnPConfig` field.

    Raises:
        ConfigError: an override that is not ``KEY=VALUE``, an unknown field or a bad value.
    """
    values = default_pnp_config(prior).to_dict()
    explicit = {"steps": steps, "lr": lr, "constraint_weight": weight, "finish": finish}
    values.update({k: v for k, v in explicit.items() if v is not None})
    types = typing.get_type_hints(PnPConfig)
    for item in overrides:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"--set {item!r} is not KEY=VALUE (e.g. --set t_max=600)")
        if key not in types:
            raise ConfigError(f"--set {key}: unknown PnPConfig key; valid keys are {sorted(types)}")
        values[key] = _typed(key, text.strip(), types[key])
    return PnPConfig.from_dict(values)


def _typed(key: str, text: str, hint: object) -> object:
    """``--set KEY=TEXT`` read as the type of the PnPConfig field ``key`` (``hint``)."""
    allowed = typing.get_args(hint) or (hint,)
    if text.lower() in ("none", "null") and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is bool and text.lower() in ("true", "false", "1", "0", "yes", "no"):
            return text.lower() in ("true", "1", "yes")
        if kind is int:
            with contextlib.suppress(ValueError):
                return int(text)
        if kind is float:
            with contextlib.suppress(ValueError):
                value = float(text)
                if math.isfinite(value):
                    return value
        if kind is str and text:
            return text
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a name",
             type(None): "none"}
    wanted = " or ".join(names.get(k, getattr(k, "__name__", str(k))) for k in allowed)  # type: ignore[call-overload]
    raise ConfigError(f"--set {key}={text!r}: {key} takes {wanted}; e.g. --set {key}={_example(allowed)}")


def _example(allowed: tuple[object, ...]) -> str:
    for kind, example in ((bool, "true"), (int, "100"), (float, "0.5"), (str, "adam")):
        if kind in allowed:
            return example
    return "none"


def sample_bytes(prior: Prior) -> float:
    """About how many bytes one sample takes while generated.

    Itself, its optimiser state, the U-Net's activations (width ``base_channels``, else 64 assumed)
    and its outputs.
    """
    size = prior.image_size or 64
    channels = int(getattr(prior.denoiser, "in_channels", 3) or 3)
    config = getattr(prior.denoiser, "config", None)
    width = int(getattr(config, "base_channels", 64) or 64)
    return 4.0 * size * size * (16 * channels + 48 * width)


def check_sample_memory(prior: Prior, num: int, option: str = "--num") -> None:
    """Refuse ``num`` samples that would not fit in half the available memory (all are made at once).

    Raises:
        ConfigError: naming the estimate and the largest ``num`` that fits.
    """
    hint = "; several runs with other --seed values make more"
    check_memory(num, sample_bytes(prior), option, "sample", hint)
