"""Pictures of instances and tours at any size, drawn with the solver's own renderer.

Example:
    >>> import numpy as np
    >>> from geo_ppp.tsp.files import Problem
    >>> c = np.random.default_rng(0).random((8, 2))
    >>> draw_problems([Problem(c, c, "euclid", None, "x:1")], [np.arange(8)], 32).shape
    (1, 1, 32, 32)
"""

from __future__ import annotations

import numpy as np
import torch

from geo_ppp.tsp.files import Problem
from geo_ppp.tsp.render import edge_images, node_layer

__all__ = ["draw_problems"]


def draw_problems(problems: list[Problem], tours: list[np.ndarray | None], size: int = 192) -> np.ndarray:
    """Images (N, 1, size, size) in [-1, 1]: nodes at 1, tour edges at 0 (nodes only without a tour)."""
    out = []
    for p, t in zip(problems, tours, strict=True):
        c = torch.as_tensor(p.coords, dtype=torch.float32)[None]
        if t is None:
            img = (2 * node_layer(c, size) - 1).view(1, 1, size, size)
        else:
            tt = torch.as_tensor(np.asarray(t), dtype=torch.long)
            edges = torch.stack([tt, tt.roll(-1)], dim=-1)[None]
            img = edge_images(c, edges, size).render(torch.ones(1, len(tt)))
        out.append(img.numpy())
    return np.concatenate(out)
