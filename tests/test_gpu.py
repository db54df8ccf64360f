"""CUDA-only checks: they skip themselves without a GPU (see conftest.py)."""

import pytest
import torch

from geo_ppp.core import PnPConfig, Symmetry, load_prior, plug_and_play, sample
from tests.conftest import ROOT

pytestmark = pytest.mark.gpu


def test_pnp_runs_on_cuda_with_bf16_and_matches_cpu_in_distribution():
    prior = load_prior("digits", device="cuda")
    cfg = PnPConfig(steps=100)
    x = plug_and_play(
        prior.denoiser, prior.schedule, (1, 16, 16), num=64, constraint=Symmetry(), config=cfg, seed=0
    )
    assert x.device.type == "cuda" and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    free = plug_and_play(prior.denoiser, prior.schedule, (1, 16, 16), num=64, config=cfg, seed=0)
    asym = lambda v: (v - v.flip(-1)).abs().mean()  # noqa: E731
    assert asym(x) < 0.5 * asym(free)


def test_cuda_is_deterministic_under_a_seed():
    prior = load_prior("digits", device="cuda")
    cfg = PnPConfig(steps=20, amp=False)
    a = plug_and_play(prior.denoiser, prior.schedule, (1, 16, 16), num=8, config=cfg, seed=3)
    b = plug_and_play(prior.denoiser, prior.schedule, (1, 16, 16), num=8, config=cfg, seed=3)
    assert torch.allclose(a, b, atol=1e-5)


def test_same_initial_noise_on_cpu_and_cuda():
    prior_cpu = load_prior("digits")
    prior_gpu = load_prior("digits", device="cuda")
    cfg = PnPConfig(steps=0)
    a = plug_and_play(prior_cpu.denoiser, prior_cpu.schedule, (1, 16, 16), num=4, config=cfg, seed=5)
    b = plug_and_play(prior_gpu.denoiser, prior_gpu.schedule, (1, 16, 16), num=4, config=cfg, seed=5)
    assert torch.equal(a, b.cpu())


def test_ddim_sampling_on_cuda():
    prior = load_prior("digits", device="cuda")
    x = sample(prior.denoiser, prior.schedule, (1, 16, 16), 32, "ddim", steps=20, device="cuda")
    assert x.shape == (32, 1, 16, 16) and x.abs().max() <= 1.0 + 1e-5


def test_landcover_prior_trains_in_bf16_on_cuda(tmp_path):
    from geo_ppp.landcover.prior import LabelSource, train_landcover_prior

    lulc = ROOT / "pipelines" / "data" / "chesapeake-lulc-1m"
    unet = {"base_channels": 8, "channel_mult": (1, 2, 2, 2), "attention_levels": ()}
    prior = train_landcover_prior(
        tmp_path / "p", [LabelSource((str(lulc),), 1.0, 32)], "chesapeake", steps=20, batch_size=16, unet=unet,
        device="cuda", progress=False, bf16=True,
    )
    assert next(prior.denoiser.parameters()).dtype == torch.float32
    assert torch.isfinite(torch.tensor(prior.meta["final_loss"]))
    x = sample(prior.denoiser, prior.schedule, (4, 64, 64), 4, "ddim", steps=5, device="cuda")
    assert x.shape == (4, 4, 64, 64) and torch.isfinite(x).all()


def test_region_segmenter_trains_and_maps_on_cuda_in_bf16():
    from geo_ppp.landcover.segmenter import Segmenter, SegmenterConfig, random_crops, train_segmenter

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, 4, 64, 64, generator=gen) * 255
    bright = (images[:, :3].mean(1, keepdim=True) > 127).float()
    targets = torch.cat([1 - bright, bright], 1) * 0.8 + 0.1
    valid = torch.ones(4, 1, 64, 64)
    config = SegmenterConfig(classes=2, steps=100, crop=32, loss="distill")
    mean, std = torch.full((5,), 0.5), torch.full((5,), 0.3)
    model = train_segmenter(random_crops(images, targets, valid), config, mean, std, device="cuda")
    assert isinstance(model, Segmenter) and next(model.parameters()).device.type == "cpu"
    cpu = model.probabilities(images)
    gpu = model.to("cuda").probabilities(images.cuda())
    assert gpu.dtype == torch.float32 and torch.allclose(gpu.sum(1), torch.ones_like(gpu[:, 0]), atol=1e-4)
    assert (cpu.argmax(1) == gpu.cpu().argmax(1)).float().mean() > 0.95  # bf16 changes ties only
    assert (cpu.argmax(1) == targets.argmax(1)).float().mean() > 0.9  # it learnt the task on the GPU
