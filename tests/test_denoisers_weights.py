import json

import pytest
import torch

from geo_ppp.core import (
    DiffusersDenoiser,
    NoiseSchedule,
    PnPConfig,
    Prior,
    Symmetry,
    UNetConfig,
    UNetDenoiser,
    load_prior,
    plug_and_play,
    save_prior,
)
from geo_ppp.errors import ConfigError, ShapeError, WeightsError


def test_unet_shapes_and_sizes():
    for cfg in (
        UNetConfig(in_channels=3, base_channels=8, channel_mult=(1, 2, 2), attention_levels=(2,)),
        UNetConfig(in_channels=5, out_channels=5, base_channels=12, channel_mult=(1,), num_res_blocks=2),
    ):
        den = UNetDenoiser(cfg)
        x = torch.randn(2, cfg.in_channels, 16, 24)
        assert den(x, torch.tensor([1, 1000])).shape == x.shape
    small = sum(p.numel() for p in UNetDenoiser(UNetConfig(base_channels=8)).parameters())
    big = sum(p.numel() for p in UNetDenoiser(UNetConfig(base_channels=32)).parameters())
    assert big > 8 * small


def test_denoiser_refuses_bad_shapes(tiny_prior):
    den = tiny_prior.denoiser
    with pytest.raises(ShapeError, match="1 channel"):
        den(torch.zeros(1, 3, 16, 16), 5)
    with pytest.raises(ShapeError, match="multiples of 2"):
        den(torch.zeros(1, 1, 15, 16), 5)
    with pytest.raises(ShapeError, match=r"\(B, C, H, W\)"):
        den(torch.zeros(1, 16, 16), 5)
    with pytest.raises(ShapeError, match="t must be"):
        den(torch.zeros(2, 1, 16, 16), torch.tensor([1, 2, 3]))


def test_unet_config_strict():
    with pytest.raises(ConfigError, match="unknown UNetConfig key"):
        UNetConfig.from_dict({"base_channels": 8, "width": 3})
    with pytest.raises(ConfigError, match="attention_levels"):
        UNetConfig(channel_mult=(1, 2), attention_levels=(5,))


def test_save_load_round_trip(tmp_path, tiny_prior):
    tiny_prior.meta["note"] = "round trip"
    save_prior(tiny_prior, tmp_path / "p")
    loaded = load_prior(tmp_path / "p")
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([1, 400, 1000])
    with torch.no_grad():
        assert torch.equal(loaded.denoiser(x, t), tiny_prior.denoiser(x, t))
    assert loaded.meta["note"] == "round trip"
    assert torch.equal(loaded.schedule.betas, tiny_prior.schedule.betas)
    assert not any(p.requires_grad for p in loaded.denoiser.parameters())
    # a path to the .safetensors file works too
    assert isinstance(load_prior(tmp_path / "p" / "model.safetensors").denoiser, UNetDenoiser)


def test_pickle_is_refused(tmp_path, tiny_prior):
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save(tiny_prior.denoiser.state_dict(), folder / "model.pt")
    with pytest.raises(WeightsError, match="refuses to unpickle"):
        load_prior(folder / "model.pt")
    with pytest.raises(WeightsError, match="refuses to unpickle"):
        load_prior(folder)
    # a pickle renamed to .safetensors is caught by its magic bytes
    save_prior(tiny_prior, tmp_path / "p")
    torch.save(tiny_prior.denoiser.state_dict(), tmp_path / "p" / "model.safetensors")
    with pytest.raises(WeightsError, match="refuses to unpickle"):
        load_prior(tmp_path / "p")


def test_corrupt_missing_and_mismatched_weights(tmp_path, tiny_prior):
    save_prior(tiny_prior, tmp_path / "p")
    weights = tmp_path / "p" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="not a valid safetensors"):
        load_prior(tmp_path / "p")
    weights.unlink()
    with pytest.raises(WeightsError, match="does not exist"):
        load_prior(tmp_path / "p")
    with pytest.raises(WeightsError, match="shipped"):
        load_prior(tmp_path / "nowhere")
    save_prior(tiny_prior, tmp_path / "q")
    cfg = json.loads((tmp_path / "q" / "config.json").read_text())
    cfg["unet"]["base_channels"] = 16
    (tmp_path / "q" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="does not match the architecture"):
        load_prior(tmp_path / "q")


def _tiny_diffusers_folder(tmp_path, prediction_type="epsilon"):
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    model = UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    folder = tmp_path / "hf"
    model.save_pretrained(folder / "unet", safe_serialization=True)
    DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type).save_pretrained(
        folder / "scheduler"
    )
    return folder, model


def test_diffusers_adapter_loads_local_folder(tmp_path):
    folder, model = _tiny_diffusers_folder(tmp_path)
    prior = load_prior(folder)
    assert isinstance(prior.denoiser, DiffusersDenoiser)
    # the scheduler's cosine betas were picked up
    assert torch.allclose(prior.schedule.betas, NoiseSchedule.create("cosine", 1000).betas, atol=1e-6)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        ours = prior.denoiser(x, torch.tensor([1, 500]))
        theirs = model.eval()(x, torch.tensor([0, 499])).sample
    assert torch.allclose(ours, theirs, atol=1e-5)
    out = plug_and_play(
        prior.denoiser,
        prior.schedule,
        (1, 16, 16),
        num=2,
        constraint=Symmetry(),
        config=PnPConfig(steps=3, finish="ddim", finish_t=20, finish_steps=2),
    )
    assert out.shape == (2, 1, 16, 16) and torch.isfinite(out).all()


def test_diffusers_v_prediction_is_converted_to_eps(tmp_path):
    folder, model = _tiny_diffusers_folder(tmp_path, "v_prediction")
    prior = load_prior(folder)
    x, t = torch.randn(1, 1, 16, 16), torch.tensor([300])
    with torch.no_grad():
        v = model.eval()(x, t - 1).sample
        eps = prior.denoiser(x, t)
    a = prior.schedule.alphas_cumprod[299].sqrt().float()
    s = (1 - prior.schedule.alphas_cumprod[299]).sqrt().float()
    # x_t = a x0 + s eps and v = a eps - s x0  =>  eps = s x_t + a v
    assert torch.allclose(eps, s * x + a * v, atol=1e-5)


def test_diffusers_pickle_only_folder_refused(tmp_path):
    folder, model = _tiny_diffusers_folder(tmp_path)
    for f in (folder / "unet").glob("*.safetensors"):
        f.unlink()
    torch.save(model.state_dict(), folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(WeightsError, match="refuses to unpickle"):
        load_prior(folder)
    assert Prior  # exported
