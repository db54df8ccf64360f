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


def one_window_reference(image, weak_labels, prior, *, steps: int, seed: int, legend: str = "chesapeake"):
    """The land-cover method on one window, straight from the arrays: the pipeline's oracle.

    Reads the image and the weak labels (reprojected onto the image grid) with ``geo_ppp.io`` and
    runs :func:`~geo_ppp.landcover.infer.infer_windows` once, with no tiling, no work dir and no
    mosaicking. Returns (codes (H, W) uint8 with 0 where the image has no data, probabilities (K, H, W)).
    """

    from geo_ppp.core import load_prior
    from geo_ppp.geo import load_legend, pixel_size
    from geo_ppp.io import read_image, read_labels_on_grid
    from geo_ppp.landcover.infer import default_infer_config, infer_windows
    from geo_ppp.landcover.weak import load_cooccurrence

    lg = load_legend(legend)
    prior_obj = load_prior(str(prior))
    data, valid, grid = read_image(image)
    weak, weak_nodata = read_labels_on_grid(weak_labels, grid)
    res = pixel_size(grid)
    factor = max(1, round(float(prior_obj.meta.get("resolution_m", 4.0)) / res))
    result = infer_windows(
        torch.from_numpy(data)[None],
        torch.from_numpy(weak)[None],
        torch.from_numpy(valid)[None, None].float(),
        load_cooccurrence(lg.name),
        prior_obj,
        default_infer_config(prior_obj).with_pnp(steps=steps),
        seeds=[seed],
        resolution_m=res,
        weak_nodata=weak_nodata,
        factor=factor,
    )
    probs = result.probabilities[0].float().numpy()
    index = probs.argmax(0)
    index[~valid] = -1
    return lg.to_codes(index), probs
