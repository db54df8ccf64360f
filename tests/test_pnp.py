import math

import pytest
import torch

from geo_ppp.core import (
    T_SCHEDULES,
    PnPConfig,
    StepInfo,
    StrokeThickness,
    Symmetry,
    plug_and_play,
)
from geo_ppp.core.annealing import DECAYS, CosineLinearT
from geo_ppp.errors import ConfigError, ShapeError

SHAPE = (1, 16, 16)


@pytest.mark.parametrize("name", sorted(T_SCHEDULES))
@pytest.mark.parametrize("n_steps", [1, 7, 200])
def test_t_schedule_contract(name, n_steps):
    sched = T_SCHEDULES[name](t_max=430, t_min=5)
    ts = [sched(i, n_steps) for i in range(n_steps)]
    assert all(isinstance(t, int) and 5 <= t <= 430 for t in ts)
    assert ts[0] == 430 or name == "cosine" and ts[0] >= 5
    if n_steps > 1 and name != "constant":
        assert ts[-1] == 5  # ends at the low end
        assert sum(ts[: n_steps // 2]) > sum(ts[n_steps // 2 :])  # coarse to fine


def test_cosine_schedule_is_the_papers_formula():
    s, a, cycles = 100, 0.3, 4.0
    sched = CosineLinearT(t_max=1000, t_min=1, amplitude=a, cycles=cycles)
    b = s / (2 * math.pi * cycles)
    for i in (0, 13, 50, 99):
        r = (s - 1 - i) / (s - 1)
        f = min(max(r * (1 + a * math.cos(i / b)), 0), 1)
        assert sched(i, s) == round(1 + 999 * f)


@pytest.mark.parametrize("name", sorted(DECAYS))
def test_decays(name):
    d = DECAYS[name]
    assert d(0.0) == pytest.approx(1.0)
    assert all(0.0 <= d(p / 10) <= 1.0 for p in range(11))


def test_optimiser_moves_samples_toward_the_constraint(digits_prior):
    p = digits_prior
    cfg = PnPConfig(steps=60, constraint_weight=20.0)
    free = plug_and_play(p.denoiser, p.schedule, SHAPE, num=6, config=cfg, seed=1)
    sym = plug_and_play(p.denoiser, p.schedule, SHAPE, num=6, constraint=Symmetry(), config=cfg, seed=1)
    assert Symmetry()(sym).mean() < 0.5 * Symmetry()(free).mean()
    thick = plug_and_play(
        p.denoiser, p.schedule, SHAPE, num=6, constraint=StrokeThickness(0.5), config=cfg, seed=1
    )
    from geo_ppp.core.constraints import ink_density

    assert ink_density(thick).mean() > ink_density(free).mean() + 0.03


def test_same_seed_same_output_and_batch_independence(tiny_prior):
    p = tiny_prior
    cfg = PnPConfig(steps=6, t_jitter=3, finish="ddpm", finish_t=5)
    a = plug_and_play(
        p.denoiser, p.schedule, SHAPE, num=3, constraint=Symmetry(), config=cfg, seed=[11, 12, 13]
    )
    b = plug_and_play(
        p.denoiser, p.schedule, SHAPE, num=3, constraint=Symmetry(), config=cfg, seed=[11, 12, 13]
    )
    assert torch.equal(a, b)
    c = plug_and_play(
        p.denoiser, p.schedule, SHAPE, num=3, constraint=Symmetry(), config=cfg, seed=[11, 99, 13]
    )
    assert not torch.equal(a[1], c[1])
    # a sample's result depends on its own seed, not on its batch-mates
    alone = plug_and_play(p.denoiser, p.schedule, SHAPE, num=1, constraint=Symmetry(), config=cfg, seed=[13])
    assert torch.allclose(alone[0], a[2], atol=1e-5)


def test_denoiser_stays_frozen_and_gets_no_weight_grads(tiny_prior):
    den = tiny_prior.denoiser
    den.train().requires_grad_(True)
    plug_and_play(den, tiny_prior.schedule, SHAPE, num=2, constraint=Symmetry(), config=PnPConfig(steps=3))
    assert all(p.grad is None for p in den.parameters())
    assert all(p.requires_grad for p in den.parameters())  # restored afterwards
    assert den.training


def test_callback_sees_every_step_with_decaying_weight(tiny_prior):
    seen: list[StepInfo] = []
    cfg = PnPConfig(steps=10, constraint_weight=2.0, t_max=400, t_min=10, t_schedule="linear")
    plug_and_play(
        tiny_prior.denoiser,
        tiny_prior.schedule,
        SHAPE,
        num=2,
        constraint=Symmetry(),
        config=cfg,
        callback=seen.append,
    )
    assert [s.step for s in seen] == list(range(10))
    assert seen[0].weight == pytest.approx(2.0) and seen[-1].weight == pytest.approx(0.2)
    assert int(seen[0].t[0]) == 400 and int(seen[-1].t[0]) == 10
    assert all(s.prior_loss.shape == (2,) and s.constraint_loss.shape == (2,) for s in seen)


def test_gradient_clipping_limits_constraint_pull(tiny_prior):
    p = tiny_prior
    x0 = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    huge = 1e6 * Symmetry()
    base = dict(steps=5, constraint_weight=1.0, optimizer="adam", lr_schedule="constant")
    clipped = plug_and_play(
        p.denoiser, p.schedule, x_init=x0, constraint=huge, config=PnPConfig(**base, grad_clip=0.1)
    )
    free = plug_and_play(
        p.denoiser, p.schedule, x_init=x0, constraint=None, config=PnPConfig(**base, grad_clip=None)
    )
    unclipped = plug_and_play(
        p.denoiser, p.schedule, x_init=x0, constraint=huge, config=PnPConfig(**base, grad_clip=None)
    )
    # with clipping, the run stays close to the prior-only run; without, the constraint dominates
    assert (clipped - free).abs().mean() < (unclipped - free).abs().mean()


def test_adamax_lr_schedule_and_x_init(tiny_prior):
    p = tiny_prior
    x0 = torch.zeros(2, *SHAPE)
    out = plug_and_play(p.denoiser, p.schedule, x_init=x0, config=PnPConfig(steps=0))
    assert torch.equal(out, x0)
    cfg = PnPConfig(
        steps=4, optimizer="adamax", lr=1.0, lr_schedule="cosine", finish="ddim", finish_t=30, finish_steps=3
    )
    out = plug_and_play(p.denoiser, p.schedule, x_init=x0, config=cfg)
    assert out.shape == x0.shape and torch.isfinite(out).all()


def test_bad_config_and_shapes(tiny_prior):
    with pytest.raises(ConfigError, match="optimizer='sgd'.*adam"):
        PnPConfig(optimizer="sgd")
    with pytest.raises(ConfigError, match="unknown PnPConfig key"):
        PnPConfig.from_dict({"stepz": 3})
    with pytest.raises(ConfigError, match="t_max"):
        plug_and_play(tiny_prior.denoiser, tiny_prior.schedule, SHAPE, config=PnPConfig(t_max=5000))
    with pytest.raises(ShapeError, match="1 channel"):
        plug_and_play(tiny_prior.denoiser, tiny_prior.schedule, (3, 16, 16))
    with pytest.raises(ShapeError, match=r"\(C, H, W\)"):
        plug_and_play(tiny_prior.denoiser, tiny_prior.schedule, (16, 16))

    class Bad(Symmetry):
        def forward(self, x):
            return super().forward(x).sum()

    with pytest.raises(ShapeError, match="one loss per sample"):
        plug_and_play(
            tiny_prior.denoiser,
            tiny_prior.schedule,
            SHAPE,
            num=2,
            constraint=Bad(),
            config=PnPConfig(steps=1),
        )


def test_config_round_trip():
    cfg = PnPConfig(steps=7, grad_clip=0.3, finish="ddim")
    assert PnPConfig.from_dict(cfg.to_dict()) == cfg


def test_snapshots_callback_records_trajectory(tiny_prior):
    from geo_ppp.generation import Snapshots, generate

    snaps = Snapshots(every=2)
    x = generate(tiny_prior, [], num=2, config=PnPConfig(steps=5), callback=snaps)
    assert [s for s, _ in snaps.frames] == [0, 2, 4]
    assert torch.equal(snaps.frames[-1][1], x)


def test_ddim_initialisation_is_seeded_and_differs_from_noise_init(tiny_prior):
    p = tiny_prior
    cfg = PnPConfig(steps=0, init="ddim", init_steps=3)
    a = plug_and_play(p.denoiser, p.schedule, SHAPE, num=2, config=cfg, seed=4)
    b = plug_and_play(p.denoiser, p.schedule, SHAPE, num=2, config=cfg, seed=4)
    noise = plug_and_play(p.denoiser, p.schedule, SHAPE, num=2, config=PnPConfig(steps=0), seed=4)
    assert torch.equal(a, b) and not torch.equal(a, noise)
    assert a.abs().max() <= 1.0 + 1e-6  # a clipped DDIM sample, not raw noise
    with pytest.raises(ConfigError, match="init='prior'"):
        PnPConfig(init="prior")


def test_lr_floor_projection_and_beta1(tiny_prior):
    seen: list[StepInfo] = []
    cfg = PnPConfig(steps=10, lr=0.5, lr_final=0.1, adam_beta1=0.0, project=0.3, t_max=300)
    x = plug_and_play(tiny_prior.denoiser, tiny_prior.schedule, SHAPE, num=2, constraint=Symmetry(),
                      config=cfg, seed=1, callback=seen.append)
    assert seen[0].lr == pytest.approx(0.5)
    assert seen[-1].lr == pytest.approx(0.5 * (0.1 + 0.9 * 0.1))  # linear decay at progress 0.9, floored
    assert x.abs().max() <= 0.3 + 1e-6  # projected every step
    assert all(s.x.abs().max() <= 0.3 + 1e-6 for s in seen)
    free = plug_and_play(tiny_prior.denoiser, tiny_prior.schedule, SHAPE, num=2, constraint=Symmetry(),
                         config=PnPConfig(steps=10, lr=0.5), seed=1)
    assert free.abs().max() > 0.3
    for bad in ({"adam_beta1": 1.0}, {"lr_final": 1.5}, {"project": 0.0}):
        with pytest.raises(ConfigError):
            PnPConfig(**bad)


def test_finish_without_renoising_starts_from_the_estimate(tiny_prior):
    init = torch.full((2, *SHAPE), 0.25)
    common = {"steps": 0, "finish": "ddim", "finish_t": 20, "finish_steps": 2}
    kept = plug_and_play(tiny_prior.denoiser, tiny_prior.schedule, x_init=init,
                         config=PnPConfig(**common, finish_renoise=False), seed=0)
    renoised = plug_and_play(tiny_prior.denoiser, tiny_prior.schedule, x_init=init,
                             config=PnPConfig(**common, finish_renoise=True), seed=0)
    assert not torch.allclose(kept, renoised)
    # without re-noising, a DDIM pass from the estimate is deterministic in the estimate alone
    again = plug_and_play(tiny_prior.denoiser, tiny_prior.schedule, x_init=init,
                          config=PnPConfig(**common, finish_renoise=False), seed=5)
    assert torch.allclose(kept, again)


def test_lr_reference_steps_keeps_the_total_movement(tiny_prior):
    seen: dict[int, list[StepInfo]] = {20: [], 40: []}
    for n in seen:
        plug_and_play(tiny_prior.denoiser, tiny_prior.schedule, SHAPE, num=1, constraint=Symmetry(),
                      config=PnPConfig(steps=n, lr=0.1, lr_reference_steps=20), callback=seen[n].append)
    total = {n: sum(s.lr for s in infos) for n, infos in seen.items()}
    assert seen[20][0].lr == pytest.approx(0.1) and seen[40][0].lr == pytest.approx(0.05)
    assert total[40] == pytest.approx(total[20], rel=0.03)  # twice the steps, half the size each
    with pytest.raises(ConfigError):
        PnPConfig(lr_reference_steps=0)


class _CompositionPrior(torch.nn.Module):
    """A 'denoiser' whose loss only sees each channel's spatial mean: it pulls composition, nothing else."""

    in_channels = 2
    size_multiple = 1

    def check_input(self, x_t, t):
        return None

    def forward(self, x_t, t):
        return x_t.mean((-2, -1), keepdim=True).expand_as(x_t)


def test_mean_free_prior_cannot_move_the_composition():
    from geo_ppp.core.schedules import NoiseSchedule

    schedule = NoiseSchedule.create("linear", 1000)
    x0 = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))

    def run(mean_free, prior_weight=1.0, constraint=None, weight=0.0):
        cfg = PnPConfig(steps=15, t_max=300, grad_clip=None, prior_mean_free=mean_free,
                        prior_weight=prior_weight, constraint_weight=weight)
        return plug_and_play(_CompositionPrior(), schedule, constraint=constraint, config=cfg, seed=[1, 2, 3],
                             x_init=x0)

    # the prior alone shifts each channel's mean unless its (spatially constant) gradient is removed;
    # what is left is float round-off that Adam scales up
    shift = {mf: (run(mf) - x0).mean((-2, -1)).abs().max() for mf in (False, True)}
    assert shift[False] > 0.1
    assert shift[True] < 0.01 * shift[False]
    # with a constraint (the prior's and the constraint's gradients taken apart), the mean-free
    # composition prior leaves the constraint-only result, the plain one does not
    alone = run(False, prior_weight=0.0, constraint=Symmetry(), weight=0.1)
    free = run(True, constraint=Symmetry(), weight=0.1)
    plain = run(False, constraint=Symmetry(), weight=0.1)
    assert (free - alone).abs().max() < 1e-3
    assert (plain - alone).abs().max() > 0.1


def test_mean_free_prior_keeps_its_arrangement_pull(digits_prior):
    p = digits_prior
    x0 = torch.zeros(4, *SHAPE)
    cfg = PnPConfig(steps=20, prior_mean_free=True)
    out = plug_and_play(p.denoiser, p.schedule, config=cfg, seed=[0, 1, 2, 3], x_init=x0)
    centred = out - out.mean((-2, -1), keepdim=True)
    assert centred.abs().mean() > 0.05  # the prior still draws structure into a blank estimate
