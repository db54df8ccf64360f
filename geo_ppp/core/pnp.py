"""The plug-and-play optimiser (Graikos et al. 2022): a frozen DDPM as a prior, plus constraints.

It finds point estimates ``eta`` (B, C, H, W) that minimise

    L(eta) = || eps - eps_theta(sqrt(abar_t) eta + sqrt(1 - abar_t) eps, t) ||^2 + w(step) * c(eta)

with t annealed from high to low noise, ``c`` any :class:`~geo_ppp.core.constraints.Constraint`,
and an optional finishing pass of ancestral or DDIM steps. Only ``eta`` receives gradients: the
denoiser's weights are frozen for the run, so no weight gradients are computed.

Samples are independent: each draws noise from its own stream (see
:class:`~geo_ppp.core.random.NoiseSource`) and Adam/Adamax act elementwise, so a sample's result
depends on its seed, not on the rest of its batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from geo_ppp.core.annealing import DECAYS, T_SCHEDULES, TSchedule
from geo_ppp.core.config import config_from_mapping, config_to_dict
from geo_ppp.core.constraints import Constraint
from geo_ppp.core.denoisers import Denoiser
from geo_ppp.core.random import NoiseSource
from geo_ppp.core.sampling import SAMPLERS
from geo_ppp.core.schedules import NoiseSchedule
from geo_ppp.errors import ConfigError, ShapeError

__all__ = ["OPTIMIZERS", "PnPConfig", "StepInfo", "frozen", "plug_and_play"]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamax": torch.optim.Adamax,
}


@dataclass(frozen=True)
class PnPConfig:
    """Settings of :func:`plug_and_play`.

    The defaults are generic: the paper's annealed t from T and linearly decaying constraint
    weight, plus a linearly decaying learning rate (which removes Adam's late jitter, so no
    finishing pass is needed) and the constraint's gradient clipped to half the prior's. A prior
    can record its own tuned settings in ``meta["pnp"]`` (the digits prior does: DDIM
    initialisation, ``t_max=400``, ``grad_clip=1.0``; see benchmarks/digits_constraints.py).

    Attributes:
        steps: optimisation steps.
        optimizer: ``adam`` or ``adamax``.
        lr: learning rate.
        lr_schedule: decay of the learning rate over the run (``constant``, ``linear``, ``cosine``).
        t_schedule: ``cosine`` (linear decrease modulated by a cosine), ``linear`` or ``constant``.
        t_max: highest timestep of the t schedule; ``None`` means T.
        t_min: lowest timestep.
        t_amplitude: amplitude ``a`` of the cosine modulation.
        t_cycles: cosine periods over the run.
        t_jitter: each sample's t is moved by a uniform integer in [-jitter, jitter].
        prior_weight: weight of the prior's denoising loss; 0 drops the prior (constraints only,
            an ablation) and skips the denoiser entirely.
        constraint_weight: weight of the constraint at the start.
        weight_schedule: decay of the constraint weight (the paper: ``linear`` to 0).
        grad_clip: if set, clip each sample's constraint gradient to this fraction of the running
            norm of its prior gradient (the paper used 0.1-0.5 on faces).
        grad_norm_momentum: momentum of that running norm.
        finish: finishing pass: ``none``, ``ddpm`` (ancestral) or ``ddim``.
        finish_t: timestep the finishing pass starts from.
        finish_steps: reverse steps of the finishing pass (``None``: every timestep).
        clip: clamp x0 estimates of the finishing pass to [-clip, clip]; ``None`` disables.
        amp: run the denoiser under bfloat16 autocast on CUDA (ignored on CPU).
        init: start from ``noise`` (standard normal) or from an unconditional ``ddim`` sample of
            the prior (``init_steps`` DDIM steps); the latter keeps the samples of a batch
            diverse, pair it with a ``t_max`` well below T. Ignored when ``x_init`` is given.
        init_steps: DDIM steps of the ``ddim`` initialisation.
        adam_beta1: first-moment decay of Adam/Adamax (the paper's land-cover runs use 0: each
            step follows its own, freshly noised gradient without momentum).
        adam_beta2: second-moment decay of Adam/Adamax (the paper's TSP runs use 0.9).
        lr_final: the learning rate's decay ends at this fraction of ``lr`` (the paper: 1e-3).
        finish_renoise: the finishing pass starts from the estimate noised to ``finish_t``;
            ``False`` takes the estimate itself as ``x_t`` at ``finish_t`` (the paper's land cover).
        lr_reference_steps: if set, ``lr`` is the rate for this many steps, and a run of ``steps``
            uses ``lr * lr_reference_steps / steps``: the same total movement of the estimate in
            finer steps. The step count then sets how finely the path is followed, not how far it
            goes, so results converge as steps grow (like an ODE solver's) instead of drifting.
        project: after every step, clamp the estimate to [-project, project] (the prior's value
            range is [-1, 1]); ``None`` leaves it free. A bounded latent cannot drift where the
            constraints' gradients vanish (Adam scales even tiny gradients up to full steps), so the
            optimisation settles instead of moving further with every extra step.
        prior_mean_free: remove each sample's per-channel spatial mean from the prior's gradient.
            The prior then shapes how the estimate is arranged, not how much of each channel it
            holds: a prior trained on data of another composition (a land-cover prior trained on
            90 % forest) cannot pull every estimate towards that composition, which the
            constraints set instead.
    """

    steps: int = 200
    optimizer: str = "adam"
    lr: float = 0.05
    lr_schedule: str = "linear"
    t_schedule: str = "cosine"
    t_max: int | None = None
    t_min: int = 1
    t_amplitude: float = 0.2
    t_cycles: float = 8.0
    t_jitter: int = 0
    prior_weight: float = 1.0
    constraint_weight: float = 1.0
    weight_schedule: str = "linear"
    grad_clip: float | None = 0.5
    grad_norm_momentum: float = 0.9
    finish: str = "none"
    finish_t: int = 50
    finish_steps: int | None = None
    clip: float | None = 1.0
    amp: bool = True
    init: str = "noise"
    init_steps: int = 25
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    lr_final: float = 0.0
    finish_renoise: bool = True
    project: float | None = None
    lr_reference_steps: int | None = None
    prior_mean_free: bool = False

    def __post_init__(self) -> None:
        choices = {
            "optimizer": OPTIMIZERS,
            "lr_schedule": DECAYS,
            "t_schedule": T_SCHEDULES,
            "weight_schedule": DECAYS,
            "finish": {"none": None, **SAMPLERS},
            "init": {"noise": None, "ddim": None},
        }
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                raise ConfigError(f"{key}={getattr(self, key)!r} is unknown; use one of {sorted(valid)}")
        if self.steps < 0:
            raise ConfigError(f"steps must be >= 0, got {self.steps}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.prior_weight < 0:
            raise ConfigError(f"prior_weight must be >= 0, got {self.prior_weight}")
        if self.t_jitter < 0:
            raise ConfigError(f"t_jitter must be >= 0, got {self.t_jitter}")
        if not 0.0 <= self.adam_beta1 < 1.0:
            raise ConfigError(f"adam_beta1 must lie in [0, 1), got {self.adam_beta1}")
        if not 0.0 <= self.adam_beta2 < 1.0:
            raise ConfigError(f"adam_beta2 must lie in [0, 1), got {self.adam_beta2}")
        if self.lr_reference_steps is not None and self.lr_reference_steps < 1:
            raise ConfigError(f"lr_reference_steps must be >= 1 or None, got {self.lr_reference_steps}")
        if self.project is not None and self.project <= 0:
            raise ConfigError(f"project must be > 0 or None, got {self.project}")
        if not 0.0 <= self.lr_final <= 1.0:
            raise ConfigError(f"lr_final must lie in [0, 1] (a fraction of lr), got {self.lr_final}")

    def t_schedule_for(self, num_steps: int) -> TSchedule:
        """The t schedule object for a prior with ``num_steps`` diffusion steps."""
        t_max = num_steps if self.t_max is None else self.t_max
        if not 1 <= self.t_min <= t_max <= num_steps:
            raise ConfigError(f"need 1 <= t_min ({self.t_min}) <= t_max ({t_max}) <= T ({num_steps})")
        cls = T_SCHEDULES[self.t_schedule]
        kwargs: dict[str, float] = {}
        if self.t_schedule in ("cosine", "paper"):
            kwargs = {"amplitude": self.t_amplitude, "cycles": self.t_cycles}
        return cls(t_max=t_max, t_min=self.t_min, **kwargs)

    def to_dict(self) -> dict[str, object]:
        """JSON-able form."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> PnPConfig:
        """Strict parse: unknown keys are an error listing the valid ones."""
        return config_from_mapping(cls, data, "the plug-and-play config")


@dataclass(frozen=True)
class StepInfo:
    """What a per-step callback receives.

    Attributes:
        step: 0-based step index.
        n_steps: total steps.
        t: timesteps used, (B,).
        prior_loss: denoising loss per sample, (B,).
        constraint_loss: unweighted constraint loss per sample, (B,) (zeros without a constraint).
        weight: the constraint weight at this step.
        lr: the learning rate at this step.
        x: the current estimate (B, C, H, W), detached; do not modify it.
    """

    step: int
    n_steps: int
    t: torch.Tensor
    prior_loss: torch.Tensor
    constraint_loss: torch.Tensor
    weight: float
    lr: float
    x: torch.Tensor


@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter for the block; restored after."""
    flags = [p.requires_grad for p in module.parameters()]
    was_training = module.training
    module.eval().requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        module.train(was_training)


def _per_sample_norm(g: torch.Tensor) -> torch.Tensor:
    return g.flatten(1).norm(dim=1)


def _mean_free(g: torch.Tensor) -> torch.Tensor:
    """``g`` less each sample's per-channel spatial mean."""
    return g - g.mean((-2, -1), keepdim=True)


def plug_and_play(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    shape: Sequence[int] | None = None,
    *,
    num: int | None = None,
    constraint: Constraint | None = None,
    config: PnPConfig | None = None,
    seed: int | Sequence[int] = 0,
    x_init: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Optimise a batch of latents under a DDPM prior and a constraint.

    By default the latent is the image itself. With ``decode``, the latent is any tensor (B, ...)
    that ``decode`` maps differentiably to images (B, C, H, W) (a parametrisation: a TSP instance's
    soft adjacency drawn as its tour image, say); the prior's loss and the constraint see the
    decoded image, the optimiser moves the latent, and the latent is returned. ``x_init`` then gives
    the initial latent, and the finishing pass and ``prior_mean_free`` (image-space operations) are
    refused.

    Args:
        denoiser: the frozen prior's noise predictor.
        schedule: its noise schedule.
        shape: (C, H, W) of one sample; taken from ``x_init`` when given.
        num: batch size B; defaults to ``len(seed)`` for per-sample seeds, else 1.
        constraint: loss per sample; ``None`` optimises under the prior alone.
        config: optimiser settings.
        seed: one int, or one int per sample (for example derived from a tile's position).
        x_init: initial estimate (B, C, H, W) instead of noise.
        device: where to run; defaults to the denoiser's device.
        callback: called with a :class:`StepInfo` after every step (``x`` is the latent).
        decode: maps the latent to the image the prior scores; ``None`` for the identity.

    Returns:
        The estimate (B, C, H, W) on ``device``, detached (the latent, with ``decode``).

    Example:
        >>> from geo_ppp.core.weights import load_prior
        >>> from geo_ppp.core.constraints import Symmetry
        >>> p = load_prior("digits")
        >>> x = plug_and_play(p.denoiser, p.schedule, (1, 16, 16), num=4, constraint=Symmetry(),
        ...                   config=PnPConfig(steps=50))
    """
    config = config or PnPConfig()
    if device is None:
        param = next(denoiser.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    if decode is not None:
        if x_init is None:
            raise ConfigError("plug_and_play with a decode needs x_init, the initial latent (B, ...)")
        if config.finish != "none" or config.prior_mean_free:
            raise ConfigError("finish and prior_mean_free act on images; with a decode, use finish='none'")
        with torch.no_grad():
            image0 = decode(x_init.detach().to(device, torch.float32))
        if image0.dim() != 4 or image0.shape[0] != x_init.shape[0]:
            raise ShapeError(f"decode must return (B, C, H, W) images, got {tuple(image0.shape)}")
        shape = tuple(image0.shape[1:])
        num = x_init.shape[0]
    elif x_init is not None:
        if x_init.dim() != 4:
            raise ShapeError(f"x_init must be (B, C, H, W), got {tuple(x_init.shape)}")
        shape = tuple(x_init.shape[1:])
        num = x_init.shape[0]
    if shape is None:
        raise ShapeError("give the sample shape (C, H, W) or an x_init batch")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ShapeError(f"shape must be (C, H, W), got {shape}")
    if num is None:
        num = 1 if isinstance(seed, int) else len(seed)
    noise = NoiseSource(seed, num, device)
    t_sched = config.t_schedule_for(schedule.num_steps)
    # Validate shapes once up front, with a clear error, before any work.
    denoiser.check_input(torch.empty(num, *shape, device="meta"), 1)

    use_amp = config.amp and device.type == "cuda"
    if x_init is not None:
        init = x_init.detach().to(device, torch.float32)
    else:
        init = noise.randn(*shape)
        if config.init == "ddim":
            with frozen(denoiser), torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                init = SAMPLERS["ddim"](
                    denoiser,
                    schedule,
                    init,
                    schedule.num_steps,
                    noise,
                    steps=config.init_steps,
                    clip=config.clip,
                ).float()
    eta = init.clone().requires_grad_(True)
    base_lr = config.lr
    if config.lr_reference_steps is not None and config.steps > 0:
        base_lr = config.lr * config.lr_reference_steps / config.steps
    opt = OPTIMIZERS[config.optimizer]([eta], lr=base_lr, betas=(config.adam_beta1, config.adam_beta2))
    lr_decay = DECAYS[config.lr_schedule]
    w_decay = DECAYS[config.weight_schedule]
    running_prior_norm: torch.Tensor | None = None
    zeros = torch.zeros(num, device=device)

    with frozen(denoiser):
        for step in range(config.steps):
            progress = step / max(config.steps, 1)
            lr = base_lr * (config.lr_final + (1 - config.lr_final) * lr_decay(progress))
            for group in opt.param_groups:
                group["lr"] = lr
            t = torch.full((num,), t_sched(step, config.steps))
            if config.t_jitter:
                t = t + noise.randint(-config.t_jitter, config.t_jitter + 1)
                t = t.clamp(t_sched.t_min, t_sched.t_max)
            t = t.to(device)
            eps = noise.randn(*shape)
            image = eta if decode is None else decode(eta)
            if config.prior_weight > 0:
                x_t = schedule.q_sample(image, t, eps)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                    eps_hat = denoiser(x_t, t)
                prior_loss = config.prior_weight * (eps_hat.float() - eps).pow(2).flatten(1).mean(1)
            else:
                prior_loss = zeros

            weight = config.constraint_weight * w_decay(progress)
            c_loss = zeros
            if constraint is not None:
                constraint.on_step(progress)
                if weight > 0:
                    c_loss = constraint(image)
                    if c_loss.shape != (num,):
                        raise ShapeError(
                            f"a constraint must return one loss per sample ({num},), "
                            f"got {tuple(c_loss.shape)}"
                        )

            use_prior = config.prior_weight > 0
            use_con = constraint is not None and weight > 0
            if use_prior and use_con and (config.prior_mean_free or config.grad_clip is not None):
                (g_prior,) = torch.autograd.grad(prior_loss.sum(), [eta])
                (g_con,) = torch.autograd.grad((weight * c_loss).sum(), [eta])
                if config.prior_mean_free:
                    g_prior = _mean_free(g_prior)
                scale = torch.ones(num, device=device)
                if config.grad_clip is not None:
                    norm_p = _per_sample_norm(g_prior)
                    m = config.grad_norm_momentum
                    running_prior_norm = (
                        norm_p if running_prior_norm is None else m * running_prior_norm + (1 - m) * norm_p
                    )
                    limit = config.grad_clip * running_prior_norm
                    scale = (limit / _per_sample_norm(g_con).clamp_min(1e-12)).clamp(max=1.0)
                grad = g_prior + g_con * scale.view(-1, *[1] * (eta.dim() - 1))
            else:
                (grad,) = torch.autograd.grad((prior_loss + weight * c_loss).sum(), [eta])
                if config.prior_mean_free and use_prior and not use_con:
                    grad = _mean_free(grad)
            eta.grad = grad
            opt.step()
            opt.zero_grad(set_to_none=True)
            if config.project is not None:
                with torch.no_grad():
                    eta.clamp_(-config.project, config.project)

            if callback is not None:
                callback(
                    StepInfo(
                        step=step,
                        n_steps=config.steps,
                        t=t.detach(),
                        prior_loss=prior_loss.detach(),
                        constraint_loss=c_loss.detach(),
                        weight=weight,
                        lr=lr,
                        x=eta.detach(),
                    )
                )

        x = eta.detach()
        if config.finish != "none":
            t0 = min(config.finish_t, schedule.num_steps)
            x_t = x
            if config.finish_renoise:
                x_t = schedule.q_sample(x, torch.full((num,), t0), noise.randn(*shape))
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                x = SAMPLERS[config.finish](
                    denoiser, schedule, x_t, t0, noise, steps=config.finish_steps, clip=config.clip
                )
    return x.float()
