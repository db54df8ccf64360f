"""Blend overlapping tile probabilities into strips of the region (pure arrays, bounded memory).

Each tile's probabilities are weighted by :func:`~geo_ppp.pipeline.tiling.feather_weights` (1 in
the middle, ramping to ~0 at its edges) and by its validity, summed, and normalised per pixel: a
convex combination, so there is no visible seam where tiles meet. A strip of rows only needs the
tiles that touch it, so memory is ``K x strip x width`` whatever the region's height.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from geo_ppp.pipeline.tiling import Tile, TileGrid, feather_weights

__all__ = ["blend_strip", "iter_strips"]


def blend_strip(
    tiles: TileGrid,
    y0: int,
    y1: int,
    load: Callable[[Tile], np.ndarray | None],
    classes: int,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Blend region rows ``[y0, y1)``.

    Args:
        tiles: the tile grid.
        y0: first row.
        y1: row after the last.
        load: tile -> its (K, T, T) probabilities (0 at invalid pixels), or None (skipped tile).
        classes: K.
        weights: (T, T) blend weights (default: feathered over the grid's overlap).

    Returns:
        probabilities (K, y1 - y0, width) float32 and valid (y1 - y0, width) bool; probabilities are
        0 where no tile has a valid pixel.
    """
    if weights is None:
        weights = feather_weights(tiles.size, tiles.overlap)
    width = tiles.width
    acc = np.zeros((classes, y1 - y0, width), np.float32)
    wsum = np.zeros((y1 - y0, width), np.float32)
    size = tiles.size
    for tile in tiles.tiles_touching(y0, y1):
        ty, tx = tile.y, tile.x
        a, b = max(y0, ty), min(y1, ty + size)  # region rows of this tile inside the strip
        probs = load(tile)
        if probs is None:
            continue
        xe = min(tx + size, width)
        p = np.asarray(probs[:, a - ty : b - ty, : xe - tx], dtype=np.float32)
        ok = p.sum(0) > 0.5
        w = weights[a - ty : b - ty, : xe - tx] * ok
        acc[:, a - y0 : b - y0, tx:xe] += p * w
        wsum[a - y0 : b - y0, tx:xe] += w
    valid = wsum > 0
    acc /= np.where(valid, wsum, 1.0)
    return acc, valid


def iter_strips(height: int, strip: int) -> Iterator[tuple[int, int]]:
    """Row ranges ``(y0, y1)`` of at most ``strip`` rows covering ``height`` rows."""
    for y0 in range(0, height, strip):
        yield y0, min(height, y0 + strip)
