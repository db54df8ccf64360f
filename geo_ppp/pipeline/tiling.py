"""Tile grids with overlap, feathered blend weights, and per-tile seeds (pure arrays, no files).

A :class:`TileGrid` covers a ``height x width`` region with square tiles of ``size`` pixels that
overlap by at least ``overlap`` pixels. Every tile has the full size: the last row and column are
shifted back to end on the region's edge (so they overlap their neighbour by more), and a region
smaller than one tile gets one tile that reaches past its edge (read as nodata).

A region made of scattered files (say eight separate patches of one NAIP tile) would waste most
of a regular grid on tiles that only graze a file. Given ``footprints`` (pixel boxes of the data),
the grid is instead the union of one regular grid per footprint, so each file is covered the way
it would be alone.

Example:
    >>> grid = TileGrid(height=600, width=500, size=256, overlap=32)
    >>> len(grid), grid.tiles[0], grid.tiles[-1].y, grid.tiles[-1].x
    (9, Tile(row=0, col=0, y=0, x=0), 344, 244)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from geo_ppp.errors import ConfigError

__all__ = ["Tile", "TileGrid", "axis_starts", "feather_weights", "tile_seed"]


@dataclass(frozen=True, order=True)
class Tile:
    """One tile: its grid row and column and its top-left pixel (y, x) in the region."""

    row: int
    col: int
    y: int
    x: int

    @property
    def key(self) -> str:
        """A stable name, e.g. ``r0003_c0012``."""
        return f"r{self.row:04d}_c{self.col:04d}"


def axis_starts(length: int, size: int, overlap: int) -> list[int]:
    """Tile start offsets along one axis of ``length`` pixels (the last ends on the edge)."""
    if length <= size:
        return [0]
    stride = size - overlap
    starts = list(range(0, length - size, stride))
    starts.append(length - size)
    return starts


@dataclass(frozen=True)
class TileGrid:
    """Square tiles of ``size`` pixels overlapping by at least ``overlap`` over a region.

    Raises:
        ConfigError: size < 1, overlap < 0, overlap >= size, or an empty region.
    """

    height: int
    width: int
    size: int
    overlap: int
    footprints: tuple[tuple[int, int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ConfigError(f"tile size must be positive, got {self.size}")
        if not 0 <= self.overlap < self.size:
            raise ConfigError(
                f"overlap {self.overlap} must be >= 0 and smaller than the tile size {self.size}; "
                f"e.g. --overlap {self.size // 8}"
            )
        if self.height < 1 or self.width < 1:
            raise ConfigError(f"empty region ({self.width} x {self.height} pixels)")

    @cached_property
    def _origins(self) -> list[tuple[int, int]]:
        if self.footprints is None:
            ys = axis_starts(self.height, self.size, self.overlap)
            xs = axis_starts(self.width, self.size, self.overlap)
            return [(y, x) for y in ys for x in xs]
        origins = set()
        for y0, x0, y1, x1 in self.footprints:
            y0, x0 = max(0, y0), max(0, x0)
            y1, x1 = min(self.height, y1), min(self.width, x1)
            if y0 >= y1 or x0 >= x1:
                continue
            for y in axis_starts(y1 - y0, self.size, self.overlap):
                for x in axis_starts(x1 - x0, self.size, self.overlap):
                    origins.add((y0 + y, x0 + x))
        return sorted(origins)

    @cached_property
    def ys(self) -> list[int]:
        """Row starts (sorted, unique)."""
        return sorted({y for y, _ in self._origins})

    @cached_property
    def xs(self) -> list[int]:
        """Column starts (sorted, unique)."""
        return sorted({x for _, x in self._origins})

    @cached_property
    def tiles(self) -> list[Tile]:
        """All tiles in row-major order (row and column index ``ys`` and ``xs``)."""
        row = {y: r for r, y in enumerate(self.ys)}
        col = {x: c for c, x in enumerate(self.xs)}
        return [Tile(row[y], col[x], y, x) for y, x in self._origins]

    def __len__(self) -> int:
        return len(self._origins)

    def rows_touching(self, y0: int, y1: int) -> list[int]:
        """Tile rows whose pixels intersect region rows ``[y0, y1)``."""
        return [r for r, y in enumerate(self.ys) if y < y1 and y + self.size > y0]

    def tiles_touching(self, y0: int, y1: int) -> list[Tile]:
        """Tiles whose pixels intersect region rows ``[y0, y1)``."""
        return [t for t in self.tiles if t.y < y1 and t.y + self.size > y0]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready description."""
        out: dict[str, object] = {
            "height": self.height, "width": self.width, "size": self.size, "overlap": self.overlap
        }
        if self.footprints is not None:
            out["footprints"] = [list(f) for f in self.footprints]
        return out


def feather_weights(size: int, overlap: int) -> np.ndarray:
    """(size, size) float32 blend weights: 1 inside, ramping linearly to near 0 over ``overlap`` px.

    Weights never reach 0 (the outermost pixel gets ``0.5 / overlap``), so a pixel that only one
    tile covers (at the region's edge) keeps that tile's value after normalisation.
    """
    if overlap <= 0:
        return np.ones((size, size), np.float32)
    i = np.arange(size, dtype=np.float64) + 0.5
    ramp = np.minimum(1.0, np.minimum(i, size - i) / overlap)
    return np.outer(ramp, ramp).astype(np.float32)


def tile_seed(seed: int, y: int, x: int) -> int:
    """A seed for the tile at region pixel (y, x): the same wherever and whenever it runs."""
    digest = hashlib.sha256(f"geo_ppp:{seed}:{y}:{x}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
