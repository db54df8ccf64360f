"""Per-sample random streams, so a sample's result depends on its own seed only.

Each sample of a batch draws from its own CPU :class:`torch.Generator`, seeded from the caller's seed
and the sample's index (or from an explicit per-sample seed, such as one derived from a tile's
position). Noise is drawn on the CPU and moved to the target device, so the same seed gives the same
noise on CPU and GPU, and a sample's noise does not depend on what else is in its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["NoiseSource", "derive_seed"]


def derive_seed(*keys: int) -> int:
    """Mix integer keys into one 63-bit seed (stable across runs, platforms and processes).

    Example:
        >>> derive_seed(0, 1) != derive_seed(1, 0)
        True
    """
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]).generate_state(2)
    return int((int(state[0]) << 32 | int(state[1])) & 0x7FFFFFFFFFFFFFFF)


class NoiseSource:
    """B independent random streams, one per sample.

    Args:
        seed: one int (sample ``i`` gets ``derive_seed(seed, i)``) or one int per sample.
        batch_size: B; needed when ``seed`` is a single int.
        device: where drawn tensors are placed.
    """

    def __init__(
        self,
        seed: int | Sequence[int],
        batch_size: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if isinstance(seed, int | np.integer):
            if batch_size is None:
                raise ValueError("batch_size is required when seed is a single int")
            seeds = [derive_seed(int(seed), i) for i in range(batch_size)]
        else:
            seeds = [int(s) for s in seed]
            if batch_size is not None and len(seeds) != batch_size:
                raise ValueError(f"got {len(seeds)} seeds for a batch of {batch_size}")
        self.seeds = seeds
        self.device = torch.device(device)
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal noise (B, *shape), each sample from its own stream."""
        out = torch.stack([torch.randn(shape, generator=g, dtype=dtype) for g in self.generators])
        return out.to(self.device)

    def randint(self, low: int, high: int) -> torch.Tensor:
        """One integer per sample, uniform in ``[low, high)``; returned on the CPU."""
        return torch.cat([torch.randint(low, high, (1,), generator=g) for g in self.generators])
