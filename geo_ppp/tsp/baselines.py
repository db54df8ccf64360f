"""Construction heuristics for comparison, batched over instances in numpy.

Example:
    >>> import numpy as np
    >>> coords = np.random.default_rng(0).random((3, 20, 2))
    >>> nearest_neighbour(coords).shape, farthest_insertion(coords).shape
    ((3, 20), (3, 20))
"""

from __future__ import annotations

import numpy as np

from geo_ppp.tsp.instances import distance_matrix

__all__ = ["farthest_insertion", "nearest_neighbour"]


def nearest_neighbour(coords: np.ndarray, start: int = 0) -> np.ndarray:
    """From node ``start``, always go to the nearest unvisited node: (B, n, 2) -> tours (B, n)."""
    d = distance_matrix(coords)
    b, n, _ = d.shape
    rows = np.arange(b)
    tours = np.empty((b, n), np.int64)
    visited = np.zeros((b, n), bool)
    cur = np.full(b, start)
    for k in range(n):
        tours[:, k] = cur
        visited[rows, cur] = True
        if k < n - 1:
            cur = np.where(visited, np.inf, d[rows, cur]).argmin(1)
    return tours


def farthest_insertion(coords: np.ndarray) -> np.ndarray:
    """Start from the farthest pair; insert the node farthest from the tour where it costs least."""
    d = distance_matrix(coords)
    b, n, _ = d.shape
    rows = np.arange(b)
    first = d.reshape(b, -1).argmax(1)
    i, j = first // n, first % n
    tour = np.full((b, n), -1, np.int64)
    tour[:, 0], tour[:, 1] = i, j
    in_tour = np.zeros((b, n), bool)
    in_tour[rows, i] = in_tour[rows, j] = True
    near = np.minimum(d[rows, i], d[rows, j])  # distance of each node to the tour
    for size in range(2, n):
        far = np.where(in_tour, -np.inf, near).argmax(1)
        cur = tour[:, :size]
        nxt = np.roll(cur, -1, axis=1)
        cost = (
            d[rows[:, None], cur, far[:, None]]
            + d[rows[:, None], far[:, None], nxt]
            - d[rows[:, None], cur, nxt]
        )
        pos = cost.argmin(1) + 1
        shifted = np.arange(n)[None] >= pos[:, None]
        new = tour.copy()
        src = np.where(shifted, np.arange(n)[None] - 1, np.arange(n)[None]).clip(0)
        new = np.take_along_axis(tour, src, 1)
        new[rows, pos] = far
        tour = new
        in_tour[rows, far] = True
        near = np.minimum(near, d[rows, far])
    return tour
