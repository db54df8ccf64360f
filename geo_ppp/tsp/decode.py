"""From a soft adjacency to a tour: the paper's greedy edge merging, then batched 2-opt.

:func:`greedy_tours` adds edges in decreasing order of ``A_ij / d_ij`` (``A`` symmetrised), keeping
every node at degree <= 2 and never closing a cycle early; with every pair of nodes a candidate, this
always ends in one Hamiltonian path, which is then closed. The result is a valid permutation for any
adjacency, however poor. A constant ``A`` makes it the classic greedy-edge heuristic (``--no-prior``).

:func:`two_opt` improves a batch of tours at once in torch: each round scores every 2-opt move of
every tour as one (B, n, n) tensor, applies each tour's best improving move, and stops when no tour
improves. A 2-opt move never lengthens a tour, so the output is never longer than the input.

Example:
    >>> import numpy as np
    >>> coords = np.random.default_rng(0).random((2, 12, 2))
    >>> tours = greedy_tours(coords, np.ones((2, 12, 12)))
    >>> sorted(two_opt(coords, tours)[0].tolist()) == list(range(12))
    True
"""

from __future__ import annotations

import numpy as np
import torch

from geo_ppp.tsp.instances import distance_matrix

__all__ = ["greedy_tour", "greedy_tours", "two_opt", "two_opt_reference"]

#: a 2-opt move must shorten a tour by more than this (guards against float round-off loops)
_MIN_GAIN = 1e-9


def greedy_tour(coords: np.ndarray, adjacency: np.ndarray) -> np.ndarray:
    """One instance: greedy edge merging by ``A_ij / d_ij``; returns a 0-based tour (n,)."""
    n = coords.shape[0]
    d = distance_matrix(coords)
    a = np.asarray(adjacency, np.float64)
    a = a + a.T + 1e-9  # pairs the adjacency leaves at 0 (not candidates) still go shortest first
    iu, ju = np.triu_indices(n, 1)
    score = a[iu, ju] / np.maximum(d[iu, ju], 1e-12)
    order = np.argsort(-score, kind="stable")
    degree = np.zeros(n, np.int64)
    parent = list(range(n))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    nbrs: list[list[int]] = [[] for _ in range(n)]
    added = 0
    for e in order.tolist():
        i, j = int(iu[e]), int(ju[e])
        if degree[i] >= 2 or degree[j] >= 2:
            continue
        ri, rj = root(i), root(j)
        if ri == rj:
            continue
        parent[ri] = rj
        degree[i] += 1
        degree[j] += 1
        nbrs[i].append(j)
        nbrs[j].append(i)
        added += 1
        if added == n - 1:
            break
    start = int(np.flatnonzero(degree < 2)[0])
    tour = [start]
    prev, cur = -1, start
    while len(tour) < n:
        nxt = nbrs[cur][0] if nbrs[cur][0] != prev else nbrs[cur][1]
        tour.append(nxt)
        prev, cur = cur, nxt
    return np.asarray(tour, dtype=np.int64)


def greedy_tours(coords: np.ndarray, adjacency: np.ndarray) -> np.ndarray:
    """Batch of :func:`greedy_tour`: coords (B, n, 2), adjacency (B, n, n) -> tours (B, n)."""
    return np.stack([greedy_tour(c, a) for c, a in zip(coords, adjacency, strict=True)])


def two_opt(
    coords: np.ndarray | torch.Tensor,
    tours: np.ndarray | torch.Tensor,
    max_rounds: int | None = None,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Best-improvement 2-opt on a batch of tours until none improves (or ``max_rounds``).

    Args:
        coords: (B, n, 2).
        tours: (B, n) 0-based permutations.
        max_rounds: cap on rounds (default ``10 * n``).
        device: where to compute.

    Returns:
        The improved tours (B, n) int64, each a permutation, none longer than its input.
    """
    c = torch.as_tensor(np.asarray(coords), dtype=torch.float64, device=device)
    t = torch.as_tensor(np.asarray(tours), dtype=torch.long, device=device).clone()
    b, n = t.shape
    if n < 4:
        return t.cpu().numpy()
    dist = torch.cdist(c, c)
    idx = torch.arange(n, device=device)
    # a move (i, j), i < j, replaces edges (t_i, t_i+1) and (t_j, t_j+1) by (t_i, t_j), (t_i+1, t_j+1)
    valid = (idx[:, None] < idx[None, :]) & ~((idx[:, None] == 0) & (idx[None, :] == n - 1))
    valid = valid & (idx[None, :] - idx[:, None] >= 2)
    rows = torch.arange(b, device=device)
    active = torch.ones(b, dtype=torch.bool, device=device)
    for _ in range(max_rounds if max_rounds is not None else 10 * n):
        ta = t[active]
        da = dist[active]
        nxt = ta.roll(-1, dims=1)
        r = torch.arange(ta.shape[0], device=device)[:, None]
        d_next = da[r, ta, nxt]  # (b', n): length of edge i -> i+1
        d_tt = da[r[..., None], ta[:, :, None], ta[:, None, :]]  # (b', n, n)
        d_nn = da[r[..., None], nxt[:, :, None], nxt[:, None, :]]
        gain = d_next[:, :, None] + d_next[:, None, :] - d_tt - d_nn
        gain = gain.masked_fill(~valid, -1.0)
        best, flat = gain.flatten(1).max(dim=1)
        improve = best > _MIN_GAIN
        if not improve.any():
            break
        i, j = (flat // n)[:, None], (flat % n)[:, None]
        seg = (idx[None] > i) & (idx[None] <= j) & improve[:, None]
        src = torch.where(seg, i + 1 + j - idx[None], idx[None])
        new = torch.gather(ta, 1, src)
        act_rows = rows[active]
        t[act_rows] = new
        still = torch.zeros_like(active)
        still[act_rows[improve]] = True
        active = still
    return t.cpu().numpy()


def two_opt_reference(coords: np.ndarray, tour: np.ndarray) -> np.ndarray:
    """A plain-Python best-improvement 2-opt with the same move order: the test oracle of :func:`two_opt`."""
    d = distance_matrix(coords)
    t = [int(v) for v in tour]
    n = len(t)
    while True:
        best, move = _MIN_GAIN, None
        for i in range(n):
            for j in range(i + 2, n):
                if i == 0 and j == n - 1:
                    continue
                a, b_, c, e = t[i], t[(i + 1) % n], t[j], t[(j + 1) % n]
                g = d[a, b_] + d[c, e] - d[a, c] - d[b_, e]
                if g > best:
                    best, move = g, (i, j)
        if move is None:
            return np.asarray(t, dtype=np.int64)
        i, j = move
        t[i + 1 : j + 1] = t[i + 1 : j + 1][::-1]
