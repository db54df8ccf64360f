"""TSP instances and tours: validation, lengths, random instances, and the solvers that label them.

An instance is an (n, 2) float array of node coordinates; a tour is a permutation of ``range(n)``
(0-based, open: the edge back to the first node is implied). Files hold 1-based closed tours; the
conversion happens in :mod:`geo_ppp.tsp.files`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from geo_ppp.errors import ConfigError, InputError

__all__ = [
    "FAST_TSP_SECONDS",
    "check_coords",
    "check_tour",
    "distance_matrix",
    "held_karp",
    "label_fast_tsp",
    "random_instances",
    "tour_length",
    "tour_lengths",
]

#: fast-tsp's time budget per instance: converged on TSP50 (0.005, 0.01, 0.03 and 0.1 s gave the same
#: mean length on 40 instances), and about the rate the issue measured against Concorde.
FAST_TSP_SECONDS = 0.01
#: fast-tsp takes integer distances up to 65535: the longest edge of an instance is scaled to this.
_FAST_TSP_SCALE = 65000


def check_coords(coords: np.ndarray, where: str = "the instance") -> np.ndarray:
    """Validate one instance's coordinates and return them as float64 (n, 2).

    Raises:
        InputError: fewer than 4 nodes, non-finite or duplicate coordinates; the message names ``where``.
    """
    arr = np.asarray(coords, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"{where}: coordinates must be (n, 2) pairs, got shape {arr.shape}")
    n = arr.shape[0]
    if n < 4:
        raise InputError(
            f"{where}: {n} node(s); a tour needs at least 4 nodes. Drop this instance or add nodes"
        )
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        raise InputError(
            f"{where}: node {bad[0] + 1} has a non-finite coordinate {arr[bad[0]].tolist()}; "
            "give finite numbers for every node"
        )
    _, first, counts = np.unique(arr, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        k = int(first[np.argmax(counts > 1)])
        twin = int(np.flatnonzero((arr == arr[k]).all(axis=1))[1])
        raise InputError(
            f"{where}: nodes {k + 1} and {twin + 1} share the coordinates {arr[k].tolist()}; "
            "remove the duplicate node"
        )
    return arr


def check_tour(tour: Sequence[int] | np.ndarray, n: int, where: str = "the tour") -> np.ndarray:
    """Validate a 0-based open tour of ``n`` nodes and return it as int64.

    Raises:
        InputError: if it is not a permutation of ``range(n)``.
    """
    arr = np.asarray(tour)
    if arr.ndim != 1 or arr.shape[0] != n or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{where}: a tour must list each of the {n} nodes once, got {arr.shape[0]} entries")
    counts = np.bincount(arr.clip(0, n), minlength=n + 1)
    if arr.min() < 0 or arr.max() >= n or (counts[:n] != 1).any():
        missing = np.flatnonzero(counts[:n] == 0) + 1
        raise InputError(
            f"{where}: not a permutation of the nodes 1..{n} (missing {missing[:5].tolist()}); "
            "give each node exactly once"
        )
    return arr.astype(np.int64)


def tour_lengths(coords: np.ndarray, tours: np.ndarray) -> np.ndarray:
    """Euclidean lengths of closed tours: coords (B, n, 2), tours (B, n) -> (B,)."""
    pts = np.take_along_axis(np.asarray(coords, np.float64), np.asarray(tours)[..., None], axis=1)
    return np.linalg.norm(pts - np.roll(pts, -1, axis=1), axis=-1).sum(-1)


def tour_length(coords: np.ndarray, tour: np.ndarray) -> float:
    """Euclidean length of one closed tour."""
    return float(tour_lengths(np.asarray(coords)[None], np.asarray(tour)[None])[0])


def random_instances(num: int, n: int, seed: int) -> np.ndarray:
    """``num`` instances of ``n`` nodes drawn uniformly in the unit square, (num, n, 2) float64."""
    if num < 0 or n < 4:
        raise ConfigError(f"need num >= 0 and n >= 4, got num={num}, n={n}")
    return np.random.default_rng(seed).random((num, n, 2))


def distance_matrix(coords: np.ndarray) -> np.ndarray:
    """Euclidean distances (n, n) or (B, n, n)."""
    c = np.asarray(coords, np.float64)
    return np.linalg.norm(c[..., :, None, :] - c[..., None, :, :], axis=-1)


def label_fast_tsp(coords: np.ndarray, seconds: float = FAST_TSP_SECONDS) -> np.ndarray:
    """A near-optimal tour of one instance from fast-tsp (exact for n <= 20), 0-based (n,)."""
    import fast_tsp

    d = distance_matrix(coords)
    dist = np.rint(d * (_FAST_TSP_SCALE / d.max())).astype(np.int64)
    return np.asarray(fast_tsp.find_tour(dist.tolist(), duration_seconds=seconds), dtype=np.int64)


def held_karp(coords: np.ndarray) -> tuple[float, np.ndarray]:
    """Exact shortest tour by dynamic programming over subsets (small n only: O(2^n n^2)).

    Returns:
        (length, tour) with the tour 0-based, starting at node 0.
    """
    d = distance_matrix(coords)
    n = d.shape[0]
    if n > 13:
        raise ConfigError(f"held_karp is for n <= 13, got {n}")
    best: dict[tuple[int, int], tuple[float, int]] = {(1 << k, k): (d[0, k], 0) for k in range(1, n)}
    for size in range(2, n):
        for subset in itertools.combinations(range(1, n), size):
            bits = sum(1 << k for k in subset)
            for k in subset:
                prev = bits & ~(1 << k)
                best[(bits, k)] = min((best[(prev, m)][0] + d[m, k], m) for m in subset if m != k)
    full = (1 << n) - 2
    length, last = min((best[(full, k)][0] + d[k, 0], k) for k in range(1, n))
    tour, bits = [], full
    while last:
        tour.append(last)
        bits, last = bits & ~(1 << last), best[(bits, last)][1]
    return float(length), np.array([0, *reversed(tour)], dtype=np.int64)
