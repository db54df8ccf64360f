"""Training batches for the land-cover prior, from label windows held in memory.

The windows (drawn by :func:`geo_ppp.io.label_windows.sample_label_windows`) are kept as a one-hot
pool scaled to [-1, 1]; training then samples the pool with random flips and quarter turns
(land-cover maps have no preferred orientation), and optionally random crops smaller than the
window (a fully convolutional prior learns the same local statistics from 32 x 32 crops at a third
of the cost of whole 64 x 64 windows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from geo_ppp.core.training import BatchSource
from geo_ppp.errors import ConfigError

__all__ = ["augmented_batches", "onehot_pm1"]


def onehot_pm1(index: np.ndarray, k: int) -> torch.Tensor:
    """Channel indices (N, H, W) -> one-hot (N, K, H, W) scaled to [-1, 1] (the prior's space)."""
    t = torch.as_tensor(index, dtype=torch.long)
    return F.one_hot(t, k).permute(0, 3, 1, 2).float() * 2 - 1


def augmented_batches(
    pools: Sequence[torch.Tensor], weights: Sequence[float], crop: int | None = None
) -> BatchSource:
    """Sample batches from several window pools with the given mixing weights, flipped and turned.

    Args:
        pools: one-hot windows (N, K, S, S) per source.
        weights: mixing weight of each source.
        crop: cut a random ``crop`` x ``crop`` piece out of each window (``None``: whole windows).
    """
    probs = torch.tensor(weights, dtype=torch.float64)
    probs = probs / probs.sum()
    size = int(pools[0].shape[-1])
    if crop is not None and not 0 < crop <= size:
        raise ConfigError(f"crop {crop} must lie in 1..{size} (the window size)")

    def source(gen: torch.Generator, batch_size: int) -> torch.Tensor:
        which = torch.multinomial(probs, batch_size, replacement=True, generator=gen)
        items = []
        for w in which.tolist():
            pool = pools[w]
            i = int(torch.randint(0, pool.shape[0], (1,), generator=gen))
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
