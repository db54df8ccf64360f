import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from geo_ppp.core import NoiseSource, ddim_sample, ddpm_sample, sample
from geo_ppp.core.sampling import timestep_sequence
from geo_ppp.errors import ConfigError


@given(t_start=st.integers(1, 1000), steps=st.one_of(st.none(), st.integers(1, 1000)))
def test_timestep_sequence(t_start, steps):
    seq = timestep_sequence(t_start, steps)
    assert seq[0] == t_start
    assert seq[-1] == 1 or steps == 1  # one step jumps from t_start straight to x0
    assert all(a > b for a, b in zip(seq, seq[1:], strict=False))
    assert len(seq) <= (t_start if steps is None else min(steps, t_start))


def test_ddim_is_deterministic_given_x_t(tiny_prior):
    p = tiny_prior
    x = torch.randn(2, 1, 16, 16)
    a = ddim_sample(p.denoiser, p.schedule, x, 1000, NoiseSource(0, 2), steps=5)
    b = ddim_sample(p.denoiser, p.schedule, x, 1000, NoiseSource(1, 2), steps=5)
    assert torch.equal(a, b)


def test_ddpm_depends_on_seed_and_is_reproducible(tiny_prior):
    p = tiny_prior
    a = sample(p.denoiser, p.schedule, (1, 16, 16), 2, "ddpm", steps=8, seed=0)
    b = sample(p.denoiser, p.schedule, (1, 16, 16), 2, "ddpm", steps=8, seed=0)
    c = sample(p.denoiser, p.schedule, (1, 16, 16), 2, "ddpm", steps=8, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() <= 1.0 + 1e-6  # clipped x0


def test_finishing_from_small_t_stays_close(digits_prior):
    """A few ancestral steps from t=20 barely move a real digit."""
    from geo_ppp.generation.digits import load_digits

    p = digits_prior
    x0, _ = load_digits("judge")
    x0 = x0[:8]
    noise = NoiseSource(0, 8)
    x_t = p.schedule.q_sample(x0, torch.full((8,), 20), noise.randn(1, 16, 16))
    out = ddpm_sample(p.denoiser, p.schedule, x_t, 20, noise)
    assert (out - x0).abs().mean() < 0.1
    assert (out - x0).abs().mean() < (x_t - x0).abs().mean()


def test_unknown_sampler(tiny_prior):
    with pytest.raises(ConfigError, match="unknown sampler"):
        sample(tiny_prior.denoiser, tiny_prior.schedule, (1, 16, 16), 1, "euler")
