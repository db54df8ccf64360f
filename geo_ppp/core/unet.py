"""geo_ppp's own noise-prediction U-Net, sized by a small frozen config.

A guided-diffusion style U-Net: sinusoidal timestep embedding, residual blocks with GroupNorm and
SiLU, optional self-attention at chosen levels, skip connections by concatenation. The paper's
85M-parameter land-cover model and the ~1M-parameter priors geo_ppp ships are both instances of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from geo_ppp.core.config import config_from_mapping, config_to_dict
from geo_ppp.errors import ConfigError

__all__ = ["UNet", "UNetConfig"]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`UNet`.

    Attributes:
        in_channels: channels of x_t.
        out_channels: channels of the predicted noise; ``None`` means ``in_channels``.
        base_channels: width of the first level.
        channel_mult: width multiplier of each level; the image is halved between levels.
        num_res_blocks: residual blocks per level on the way down.
        attention_levels: indices of the levels that get a self-attention block.
        attention_heads: heads of each attention block.
        dropout: dropout inside residual blocks.
    """

    in_channels: int = 1
    out_channels: int | None = None
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = field(default_factory=tuple)
    attention_heads: int = 4
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.base_channels < 1 or self.num_res_blocks < 1:
            raise ConfigError(
                "in_channels, base_channels and num_res_blocks must be >= 1, got "
                f"{self.in_channels}, {self.base_channels}, {self.num_res_blocks}"
            )
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise ConfigError(f"channel_mult must be positive integers, got {self.channel_mult}")
        bad = [lv for lv in self.attention_levels if not 0 <= lv < len(self.channel_mult)]
        if bad:
            raise ConfigError(
                f"attention_levels {bad} out of range: levels are 0..{len(self.channel_mult) - 1}"
            )

    @property
    def downsample_factor(self) -> int:
        """Height and width must be multiples of this."""
        return 2 ** (len(self.channel_mult) - 1)

    def to_dict(self) -> dict[str, object]:
        """JSON-able form (tuples become lists)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> UNetConfig:
        """Strict inverse of :meth:`to_dict`: unknown keys are an error that lists the valid ones."""
        return config_from_mapping(cls, data, "the UNet config")


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0 and channels // g >= 2:
            return g
    return 1


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of (possibly fractional) timesteps (B,)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class _Attention(nn.Module):
    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ConfigError(f"attention needs channels ({channels}) divisible by heads ({heads})")
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """Noise-prediction U-Net ``eps(x_t, t)``.

    Args:
        config: the architecture.

    Example:
        >>> net = UNet(UNetConfig(in_channels=1, base_channels=8, channel_mult=(1, 2)))
        >>> net(torch.zeros(2, 1, 16, 16), torch.tensor([1, 500])).shape
        torch.Size([2, 1, 16, 16])
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        c0 = config.base_channels
        emb_dim = 4 * c0
        self.time_mlp = nn.Sequential(nn.Linear(c0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stem = nn.Conv2d(config.in_channels, c0, 3, padding=1)

        self.down = nn.ModuleList()
        skips = [c0]
        ch = c0
        n_levels = len(config.channel_mult)
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                block = nn.ModuleList([_ResBlock(ch, c0 * mult, emb_dim, config.dropout)])
                ch = c0 * mult
                if level in config.attention_levels:
                    block.append(_Attention(ch, config.attention_heads))
                self.down.append(block)
                skips.append(ch)
            if level < n_levels - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)

        self.mid = nn.ModuleList(
            [
                _ResBlock(ch, ch, emb_dim, config.dropout),
                _Attention(ch, config.attention_heads) if config.attention_levels else nn.Identity(),
                _ResBlock(ch, ch, emb_dim, config.dropout),
            ]
        )

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                block = nn.ModuleList([_ResBlock(ch + skips.pop(), c0 * mult, emb_dim, config.dropout)])
                ch = c0 * mult
                if level in config.attention_levels:
                    block.append(_Attention(ch, config.attention_heads))
                if level > 0 and i == config.num_res_blocks:
                    block.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    block.append(nn.Conv2d(ch, ch, 3, padding=1))
                self.up.append(block)

        out_ch = config.out_channels or config.in_channels
        self.head = nn.Sequential(
            nn.GroupNorm(_groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1)
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    @staticmethod
    def _run(block: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in block:
            h = layer(h, emb) if isinstance(layer, _ResBlock) else layer(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predict the noise in ``x`` (B, C, H, W) at timesteps ``t`` (B,)."""
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels))
        h = self.stem(x)
        hs = [h]
        for block in self.down:
            h = self._run(block, h, emb)
            hs.append(h)
        h = self._run(self.mid, h, emb)
        for block in self.up:
            h = torch.cat([h, hs.pop()], dim=1)
            h = self._run(block, h, emb)
        return self.head(h)
