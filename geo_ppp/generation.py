"""Conditional generation with a prior and constraints: the API behind ``geo-ppp generate``."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geo_ppp.core.constraints import Constraint, build_constraint
from geo_ppp.core.pnp import PnPConfig, StepInfo, plug_and_play
from geo_ppp.core.sampling import SAMPLERS, sample
from geo_ppp.core.weights import SHIPPED_WEIGHTS, Prior
from geo_ppp.errors import ConfigError
from geo_ppp.outputs import atomic_path, check_outputs, write_json

__all__ = [
    "Snapshots",
    "constraint_context",
    "default_pnp_config",
    "generate",
    "grid_image",
    "progress_callback",
    "save_samples",
]

log = logging.getLogger(__name__)


def constraint_context(prior: Prior, classifier: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Prior-specific parts the constraint factories may need (the classifier for ``class=``).

    The classifier is the one named in the prior's metadata (a shipped name or a folder next to
    the prior), unless ``classifier`` names another folder. It is loaded only when it exists.
    """
    from geo_ppp.digits import load_digit_classifier

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


def grid_image(x: torch.Tensor | np.ndarray, scale: int = 4, pad: int = 1) -> np.ndarray:
    """Tile a batch (N, C, H, W) in [-1, 1] into one image (rows, cols[, 3]) in [0, 1]."""
    arr = np.asarray(x, dtype=np.float32)
    n, c, h, w = arr.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    img = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c), dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, cols)
        y0, x0 = pad + r * (h + pad), pad + q * (w + pad)
        img[y0 : y0 + h, x0 : x0 + w] = ((arr[i].transpose(1, 2, 0) + 1) / 2).clip(0, 1)
    img = img.repeat(scale, 0).repeat(scale, 1)
    return img[..., 0] if c == 1 else img[..., :3]


def save_samples(
    x: torch.Tensor,
    out_png: str | os.PathLike[str],
    record: dict[str, Any],
    overwrite: bool = False,
    palette: Sequence[Sequence[int]] | None = None,
) -> list[Path]:
    """Write ``OUT.png`` (a grid), ``OUT.npy`` (the samples, N x C x H x W) and ``OUT.json``.

    With a ``palette`` (one RGB colour per channel, e.g. a legend's), the samples are class maps:
    the PNG shows each sample's argmax over channels in those colours, not its first channels.

    ``OUT.json`` holds ``record``: the resolved configuration that produced the samples. All
    outputs are checked before anything is written, and each is written atomically.

    Returns:
        The three paths.
    """
    from matplotlib import image as mpimg

    png = Path(out_png)
    if png.suffix.lower() != ".png":
        raise ConfigError(f"--out must end in .png, got {png.name}")
    npy, js = png.with_suffix(".npy"), png.with_suffix(".json")
    check_outputs([png, npy, js], overwrite)
    if palette is not None:
        colors = np.asarray(palette, dtype=np.float32) / 255.0
        if colors.shape != (x.shape[1], 3):
            raise ConfigError(f"a palette of {x.shape[1]} RGB colours is needed, got shape {colors.shape}")
        classes = x.argmax(dim=1).numpy()
        rgb = torch.from_numpy(colors[classes].transpose(0, 3, 1, 2) * 2 - 1)
        grid = (grid_image(rgb) * 255).round().astype(np.uint8)  # exact legend colours
    else:
        grid = grid_image(x)
    with atomic_path(npy) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, x.numpy().astype(np.float32))
    with atomic_path(png) as tmp:
        mpimg.imsave(tmp, grid, cmap="gray", vmin=0.0, vmax=1.0, format="png")
    write_json(js, record)
    log.info("wrote %s, %s and %s", png, npy, js)
    return [png, npy, js]
