"""One denoiser interface, ``eps(x_t, t)``, and adapters that bring models to it.

Every prior geo_ppp uses is a :class:`Denoiser`: a frozen-able module that maps a noisy batch
``x_t`` (B, C, H, W) and integer timesteps ``t`` (B,) in ``[1, T]`` to the predicted noise. Our own
:class:`~geo_ppp.core.unet.UNet` enters through :class:`UNetDenoiser`; an off-the-shelf diffusers
``UNet2DModel`` (loaded from a local folder) through :class:`DiffusersDenoiser`, which also converts
v- and x0-prediction to noise prediction.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from geo_ppp.core.schedules import NoiseSchedule
from geo_ppp.core.unet import UNet, UNetConfig
from geo_ppp.errors import ConfigError, ShapeError

__all__ = ["Denoiser", "DiffusersDenoiser", "UNetDenoiser"]


class Denoiser(nn.Module):
    """Base class: ``forward(x_t, t) -> eps``.

    Subclasses set ``in_channels`` and ``size_multiple`` (height and width must be multiples of it)
    and implement :meth:`predict_eps`. :meth:`forward` validates shapes first, so every adapter
    refuses bad input the same way.
    """

    in_channels: int
    size_multiple: int = 1

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predict the noise; inputs are already validated."""
        raise NotImplementedError

    def check_input(self, x_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Validate shapes and return ``t`` as a long tensor (B,) on ``x_t``'s device.

        Raises:
            ShapeError: if ``x_t`` is not (B, in_channels, H, W) with H and W multiples of
                ``size_multiple``, or ``t`` does not hold one timestep per sample.
        """
        if x_t.dim() != 4:
            raise ShapeError(
                f"expected a batch shaped (B, C, H, W), got {tuple(x_t.shape)}; "
                "add a batch axis with x.unsqueeze(0) for a single sample"
            )
        b, c, h, w = x_t.shape
        if c != self.in_channels:
            raise ShapeError(
                f"this denoiser takes {self.in_channels} channel(s), got {c} in {tuple(x_t.shape)}"
            )
        m = self.size_multiple
        if h % m or w % m:
            raise ShapeError(
                f"height and width must be multiples of {m} for this denoiser, got {h}x{w}; "
                f"pad or crop to {h + (-h) % m}x{w + (-w) % m}"
            )
        t = torch.as_tensor(t, device=x_t.device).long()
        if t.dim() == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ShapeError(f"t must be a scalar or shaped ({b},), got {tuple(t.shape)}")
        return t

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Predict the noise in ``x_t`` (B, C, H, W) at timesteps ``t`` (B,) in [1, T]."""
        return self.predict_eps(x_t, self.check_input(x_t, t))

    def freeze(self) -> Denoiser:
        """Eval mode and no weight gradients: the plug-and-play optimiser needs input grads only."""
        self.eval()
        self.requires_grad_(False)
        return self


class UNetDenoiser(Denoiser):
    """Adapter for geo_ppp's own :class:`~geo_ppp.core.unet.UNet`.

    The network predicts the noise (``prediction="eps"``) or the velocity
    ``v = sqrt(abar) eps - sqrt(1 - abar) x0`` (``prediction="v"``, Salimans & Ho 2022), which is
    converted to noise with ``schedule``. v-prediction stays well conditioned at both ends of the
    schedule, which makes clean, one-hot samples of discrete maps in few sampling steps.

    Example:
        >>> d = UNetDenoiser(UNetConfig(in_channels=1, base_channels=8, channel_mult=(1, 2)))
        >>> d(torch.zeros(1, 1, 8, 8), 10).shape
        torch.Size([1, 1, 8, 8])
    """

    PREDICTIONS = ("eps", "v")

    def __init__(
        self, config: UNetConfig, prediction: str = "eps", schedule: NoiseSchedule | None = None
    ) -> None:
        super().__init__()
        if prediction not in self.PREDICTIONS:
            raise ConfigError(f"unknown prediction {prediction!r}; use one of {self.PREDICTIONS}")
        if prediction != "eps" and schedule is None:
            raise ConfigError(f"a {prediction}-prediction U-Net needs its noise schedule to predict noise")
        self.config = config
        self.prediction = prediction
        self.schedule = schedule
        self.in_channels = config.in_channels
        self.size_multiple = config.downsample_factor
        self.net = UNet(config)

    def predict_raw(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's own output (noise or velocity, as trained); what training regresses."""
        return self.net(x_t, t)

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Run the U-Net and convert its output to noise."""
        out = self.net(x_t, t)
        if self.prediction == "eps":
            return out
        assert self.schedule is not None
        a = self.schedule.sqrt_abar(t, x_t)
        s = self.schedule.sqrt_one_minus_abar(t, x_t)
        return s * x_t + a * out


class DiffusersDenoiser(Denoiser):
    """Adapter for a diffusers ``UNet2DModel`` with its training noise schedule.

    diffusers counts timesteps from 0, geo_ppp from 1, so ``t`` is shifted by one. Models trained
    to predict ``v`` or ``x0`` ("sample") are converted to noise prediction with the schedule.

    Args:
        model: a ``diffusers.UNet2DModel``.
        schedule: the schedule the model was trained with.
        prediction_type: ``epsilon``, ``v_prediction`` or ``sample``.
    """

    PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

    def __init__(self, model: Any, schedule: NoiseSchedule, prediction_type: str = "epsilon") -> None:
        super().__init__()
        if prediction_type not in self.PREDICTION_TYPES:
            raise ConfigError(
                f"unsupported prediction_type {prediction_type!r}; "
                f"diffusers models predicting one of {self.PREDICTION_TYPES} can be used"
            )
        self.model = model
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.in_channels = int(model.config.in_channels)
        levels = len(model.config.block_out_channels)
        self.size_multiple = 2 ** (levels - 1)

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Run the diffusers model and convert its output to noise."""
        out = self.model(x_t, t - 1).sample
        if self.prediction_type == "epsilon":
            return out
        a = self.schedule.sqrt_abar(t, x_t)
        s = self.schedule.sqrt_one_minus_abar(t, x_t)
        if self.prediction_type == "v_prediction":
            return s * x_t + a * out
        return (x_t - a * out) / s
