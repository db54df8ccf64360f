import pytest
import torch

from geo_ppp.core import NoiseSchedule, TrainConfig, UNetDenoiser, train_ddpm
from geo_ppp.errors import ConfigError
from geo_ppp.generation.digits import load_digits

from .conftest import TINY_UNET


def _fresh():
    torch.manual_seed(0)
    return UNetDenoiser(TINY_UNET)


def test_training_loss_falls_on_digits():
    x, _ = load_digits("prior")
    res = train_ddpm(
        _fresh(),
        NoiseSchedule.create(),
        x,
        TrainConfig(steps=150, batch_size=32, lr=2e-3, warmup=10),
        progress=False,
    )
    first, last = sum(res.losses[:20]) / 20, sum(res.losses[-20:]) / 20
    assert last < 0.6 * first, (first, last)
    assert not any(p.requires_grad for p in res.ema.parameters())


def test_resumed_training_equals_uninterrupted(tmp_path):
    x, _ = load_digits("prior")
    cfg = TrainConfig(steps=8, batch_size=8, checkpoint_every=4, warmup=2)
    whole = train_ddpm(_fresh(), NoiseSchedule.create(), x, cfg, tmp_path / "a", progress=False)
    # interrupted run: stop after 4 steps (checkpointed), then resume to 8 with a fresh model object
    train_ddpm(
        _fresh(),
        NoiseSchedule.create(),
        x,
        TrainConfig(**{**cfg.to_dict(), "steps": 4}),
        tmp_path / "b",
        progress=False,
    )
    resumed = train_ddpm(_fresh(), NoiseSchedule.create(), x, cfg, tmp_path / "b", progress=False)
    assert resumed.resumed_from == 4
    assert resumed.losses == whole.losses
    for a, b in zip(whole.ema.state_dict().values(), resumed.ema.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_refuses_other_settings(tmp_path):
    x, _ = load_digits("prior")
    train_ddpm(
        _fresh(), NoiseSchedule.create(), x, TrainConfig(steps=2, batch_size=4), tmp_path, progress=False
    )
    with pytest.raises(ConfigError, match="was trained with --batch-size 4 .this run: 8.; pass the same value"):
        train_ddpm(
            _fresh(), NoiseSchedule.create(), x, TrainConfig(steps=4, batch_size=8), tmp_path, progress=False
        )


def test_resume_may_change_the_ema_decay_and_zero_ships_the_raw_weights(tmp_path):
    x, _ = load_digits("prior")
    cfg = TrainConfig(steps=30, batch_size=8, checkpoint_every=30, warmup=2)
    train_ddpm(_fresh(), NoiseSchedule.create(), x, cfg, tmp_path / "a", progress=False)
    raw = TrainConfig(**{**cfg.to_dict(), "steps": 31, "ema_decay": 0.0})
    res = train_ddpm(_fresh(), NoiseSchedule.create(), x, raw, tmp_path / "a", progress=False)
    assert res.resumed_from == 30
    for a, b in zip(res.ema.state_dict().values(), res.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # the default decay averages: its weights are not the optimiser's
    avg = train_ddpm(_fresh(), NoiseSchedule.create(), x, TrainConfig(**{**cfg.to_dict(), "steps": 31}),
                     tmp_path / "b", progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(avg.ema.state_dict().values(),
                                                      avg.model.state_dict().values(), strict=True))


def test_cooldown_decays_the_lr_to_zero_over_the_last_steps():
    cfg = TrainConfig(steps=10, lr=1.0, warmup=2, cooldown=4)
    assert [cfg.lr_at(s) for s in range(10)] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25]
    assert TrainConfig(steps=10, lr=1.0, warmup=1).lr_at(9) == 1.0
    with pytest.raises(ConfigError, match="cooldown"):
        TrainConfig(steps=10, cooldown=11)


def test_a_resumed_run_may_add_a_cooldown(tmp_path):
    x, _ = load_digits("prior")
    cfg = TrainConfig(steps=4, batch_size=8, checkpoint_every=4, warmup=2)
    train_ddpm(_fresh(), NoiseSchedule.create(), x, cfg, tmp_path, progress=False)
    cooled = TrainConfig(**{**cfg.to_dict(), "steps": 8, "cooldown": 4})
    res = train_ddpm(_fresh(), NoiseSchedule.create(), x, cooled, tmp_path, progress=False)
    assert res.resumed_from == 4 and len(res.losses) == 8


def test_a_checkpoint_of_another_width_is_refused_in_one_line(tmp_path):
    from geo_ppp.core import UNetConfig
    from geo_ppp.core.weights import read_safetensors, write_safetensors
    from geo_ppp.errors import WeightsError

    x = torch.rand(8, 1, 8, 8) * 2 - 1

    def net(width):
        return UNetDenoiser(UNetConfig(base_channels=width, channel_mult=(1, 2)))

    train_ddpm(net(8), NoiseSchedule.create(), x, TrainConfig(steps=2, batch_size=2), tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"--base-channels 8 \(this run: 16\)"):  # recorded: named directly
        train_ddpm(net(16), NoiseSchedule.create(), x, TrainConfig(steps=4, batch_size=2), tmp_path, progress=False)
    tensors, meta = read_safetensors(tmp_path / "checkpoint.safetensors")
    meta.pop("identity")  # a checkpoint from before identities were recorded
    write_safetensors(tmp_path / "checkpoint.safetensors", tensors, meta)
    with pytest.raises(WeightsError, match="another --base-channels") as err:
        train_ddpm(net(16), NoiseSchedule.create(), x, TrainConfig(steps=4, batch_size=2), tmp_path, progress=False)
    assert "\n" not in str(err.value) and "Missing key" not in str(err.value)
    # past --steps: refused, not published under the smaller count
    with pytest.raises(ConfigError, match="at step 2, past --steps 1"):
        train_ddpm(net(8), NoiseSchedule.create(), x, TrainConfig(steps=1, batch_size=2), tmp_path, progress=False)
