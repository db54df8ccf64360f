"""Training batches for the land-cover prior, from label windows held in memory.

The windows (drawn by :func:`geo_ppp.io.label_windows.sample_label_windows`) are kept as a one-hot
pool scaled to [-1, 1]; training then samples the pool with random flips and quarter turns
(land-cover maps have no preferred orientation), and optionally random crops smaller than the
window (a fully convolutional prior learns the same local statistics from 32 x 32 crops at a third
of the cost of whole 64 x 64 windows).

Class-aware sampling (``balance`` > 0) draws windows that hold rare classes more often, in the way
of repeat-factor sampling: window ``i`` is drawn with probability proportional to the mean over its
cells of ``f_c ** -balance``, ``f_c`` being the pool's frequency of the cell's class. ``balance`` 0 is
uniform; 1 makes every class about equally frequent in expectation, as far as the windows allow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from geo_ppp.core.training import BatchSource
from geo_ppp.errors import ConfigError

__all__ = ["augmented_batches", "onehot_pm1", "window_weights"]


def onehot_pm1(index: np.ndarray, k: int) -> torch.Tensor:
    """Channel indices (N, H, W) -> one-hot (N, K, H, W) scaled to [-1, 1] (the prior's space)."""
    t = torch.as_tensor(index, dtype=torch.long)
    return F.one_hot(t, k).permute(0, 3, 1, 2).float() * 2 - 1


def window_weights(pool: torch.Tensor, balance: float) -> torch.Tensor:
    """Drawing probabilities (N,) of the windows of a one-hot pool (N, K, S, S) for ``balance``."""
    if not math.isfinite(balance) or balance < 0:
        raise ConfigError(f"balance must be >= 0 (0 draws windows uniformly), got {balance}")
    # the pool is one-hot in [-1, 1], so a channel's mean over the cells is 2 * share - 1 (exact in
    # float32 for these counts; no copy of the pool is made)
    share = (pool.mean((2, 3)).double() + 1) / 2  # (N, K) class share of each window
    freq = share.mean(0)
    factor = torch.where(freq > 0, freq.clamp_min(1e-12) ** -balance, torch.zeros_like(freq))
    w = share @ factor
    return w / w.sum()


def augmented_batches(
    pools: Sequence[torch.Tensor], weights: Sequence[float], crop: int | None = None, balance: float = 0.0
) -> BatchSource:
    """Sample batches from several window pools with the given mixing weights, flipped and turned.

    Args:
        pools: one-hot windows (N, K, S, S) per source.
        weights: mixing weight of each source.
        crop: cut a random ``crop`` x ``crop`` piece out of each window (``None``: whole windows).
        balance: class-aware window sampling (see the module); 0 draws windows uniformly.
    """
    probs = torch.tensor(weights, dtype=torch.float64)
    probs = probs / probs.sum()
    size = int(pools[0].shape[-1])
    if crop is not None and not 0 < crop <= size:
        raise ConfigError(f"crop {crop} must lie in 1..{size} (the window size)")
    drawing = [window_weights(p, balance) for p in pools] if balance else None

    def source(gen: torch.Generator, batch_size: int) -> torch.Tensor:
        which = torch.multinomial(probs, batch_size, replacement=True, generator=gen)
        items = []
        for w in which.tolist():
            pool = pools[w]
            if drawing is None:
                i = int(torch.randint(0, pool.shape[0], (1,), generator=gen))
            else:
                i = int(torch.multinomial(drawing[w], 1, generator=gen))
            x = pool[i]
            if crop is not None and crop < size:
                oy, ox = (int(v) for v in torch.randint(0, size - crop + 1, (2,), generator=gen))
                x = x[:, oy : oy + crop, ox : ox + crop]
            turns = int(torch.randint(0, 4, (1,), generator=gen))
            flip = bool(torch.randint(0, 2, (1,), generator=gen))
            x = torch.rot90(x, turns, dims=(-2, -1))
            items.append(x.flip(-1) if flip else x)
        return torch.stack(items)

    return source
