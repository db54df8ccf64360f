"""Shared fixtures: tiny real models and a skip rule for CUDA-only tests."""

from __future__ import annotations

import pytest
import torch

from geo_ppp.core import NoiseSchedule, Prior, UNetConfig, UNetDenoiser


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


TINY_UNET = UNetConfig(in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1)


@pytest.fixture
def tiny_prior() -> Prior:
    """A small random-weight U-Net prior on 16x16 single-channel images."""
    torch.manual_seed(0)
    den = UNetDenoiser(TINY_UNET)
    # Break the zero-initialised output layers so the network is not the zero function.
    with torch.no_grad():
        for p in den.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return Prior(den.freeze(), NoiseSchedule.create("linear", 1000), {"image_size": 16})


@pytest.fixture(scope="session")
def digits_prior() -> Prior:
    """The shipped digits prior (real trained weights)."""
    from geo_ppp.core import load_prior

    return load_prior("digits")
