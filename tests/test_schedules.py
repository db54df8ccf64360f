import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from geo_ppp.core import NoiseSchedule
from geo_ppp.errors import ConfigError


def test_linear_betas_closed_form():
    s = NoiseSchedule.create("linear", 1000)
    assert s.num_steps == 1000
    assert s.betas[0].item() == pytest.approx(1e-4)
    assert s.betas[-1].item() == pytest.approx(2e-2)
    # evenly spaced
    diffs = s.betas.diff()
    assert torch.allclose(diffs, torch.full_like(diffs, (2e-2 - 1e-4) / 999))
    # abar_t = prod (1 - beta)
    t = 500
    expected = math.prod(1 - (1e-4 + (2e-2 - 1e-4) * i / 999) for i in range(t))
    assert s.alphas_cumprod[t - 1].item() == pytest.approx(expected, rel=1e-9)


def test_cosine_abar_closed_form():
    s = NoiseSchedule.create("cosine", 1000)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (1, 10, 250, 500, 900):
        assert s.alphas_cumprod[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-6)
    assert s.betas.max().item() <= 0.999


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_abar_decreasing_in_unit_interval(name):
    abar = NoiseSchedule.create(name, 1000).alphas_cumprod
    assert bool((abar.diff() < 0).all())
    assert 0 < abar[-1] < abar[0] < 1


@given(t=st.integers(1, 1000), scale=st.floats(0.1, 3.0))
def test_q_sample_matches_formula_and_inverts(t, scale):
    s = NoiseSchedule.create("linear", 1000)
    g = torch.Generator().manual_seed(t)
    x0 = scale * torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
    tt = torch.tensor([t, t])
    x_t = s.q_sample(x0, tt, eps)
    abar = s.alphas_cumprod[t - 1]
    assert torch.allclose(x_t, abar.sqrt() * x0 + (1 - abar).sqrt() * eps)
    assert torch.allclose(s.predict_x0(x_t, tt, eps), x0, atol=1e-6)


def test_forward_noising_statistics():
    """At t = T the marginal is close to N(0, 1) whatever x0 is."""
    s = NoiseSchedule.create("linear", 1000)
    x0 = torch.ones(4000, 1, 1, 1)
    x_t = s.q_sample(x0, torch.full((4000,), 1000), torch.randn(4000, 1, 1, 1))
    assert abs(x_t.mean().item()) < 0.1
    assert abs(x_t.std().item() - 1) < 0.1


def test_config_round_trip_and_errors():
    for name in ("linear", "cosine"):
        s = NoiseSchedule.create(name, 100)
        assert torch.equal(NoiseSchedule.from_config(s.to_config()).betas, s.betas)
    custom = NoiseSchedule.from_betas(torch.linspace(0.01, 0.2, 10))
    assert torch.equal(NoiseSchedule.from_config(custom.to_config()).betas, custom.betas)
    with pytest.raises(ConfigError, match="unknown noise schedule"):
        NoiseSchedule.create("quadratic")
    with pytest.raises(ConfigError, match=r"\[1, 1000\]"):
        NoiseSchedule.create().q_sample(torch.zeros(1, 1, 2, 2), torch.tensor([0]), torch.zeros(1, 1, 2, 2))
