"""A raster grid as a small validated value, and the window maths on it (no file access).

Modelled on odc-geo's ``GeoBox``: a :class:`Grid` is a CRS, a north-up or general affine
transform and a size, checked when it is made, so that a bad grid fails where it is built and not
deep inside a warp. Windows of a grid are grids (:meth:`Grid.window`); :func:`grid_for` builds the
grid that covers bounds at a resolution, snapped to another grid's pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from affine import Affine
from rasterio.crs import CRS

from geo_ppp.errors import InputError

__all__ = ["Grid", "grid_for", "pixel_of", "pixel_size", "window_grid"]


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform (pixel -> CRS coordinates) and size in pixels.

    Raises:
        ValueError: no CRS, a transform that is not a 6-term affine, a non-invertible transform,
            or a size that is not a positive integer.
    """

    crs: CRS
    transform: Affine
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.crs is None:
            raise ValueError("a Grid needs a CRS")
        if not isinstance(self.crs, CRS):
            object.__setattr__(self, "crs", CRS.from_user_input(self.crs))
        t = self.transform
        if not isinstance(t, Affine):
            values = list(t)
            if len(values) not in (6, 9):
                raise ValueError(f"a Grid's transform has 6 terms (a, b, c, d, e, f), got {values}")
            t = Affine(*values[:6])
            object.__setattr__(self, "transform", t)
        if t.is_degenerate:
            raise ValueError(f"a Grid's transform must be invertible, got {tuple(t)[:6]}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"a Grid's {name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return self.height, self.width

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        corners = [
            self.transform * (c, r)
            for c, r in ((0, 0), (self.width, 0), (0, self.height), (self.width, self.height))
        ]
        xs = [p[0] for p in corners]
        ys = [p[1] for p in corners]
        return min(xs), min(ys), max(xs), max(ys)

    def window(self, y: int, x: int, height: int, width: int) -> Grid:
        """The grid of the window at pixel (y, x) (it may reach past this grid's edge)."""
        return Grid(self.crs, self.transform * Affine.translation(x, y), width, height)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "crs": self.crs.to_string(),
            "transform": list(self.transform)[:6],
            "width": self.width,
            "height": self.height,
        }


def window_grid(grid: Grid, y: int, x: int, height: int, width: int) -> Grid:
    """The grid of the window at pixel (y, x) of ``grid`` (see :meth:`Grid.window`)."""
    return grid.window(y, x, height, width)


def grid_for(
    crs: Any, bounds: tuple[float, float, float, float], res: float, anchor: Affine | None = None
) -> Grid:
    """A north-up grid of square ``res`` pixels covering ``bounds``, snapped to ``anchor``'s pixels."""
    left, bottom, right, top = bounds
    if anchor is not None:
        ox, oy = anchor.c, anchor.f
        left = ox + math.floor((left - ox) / res + 1e-6) * res
        top = oy - math.floor((oy - top) / res + 1e-6) * res
    width = max(1, math.ceil((right - left) / res - 1e-6))
    height = max(1, math.ceil((top - bottom) / res - 1e-6))
    return Grid(crs, Affine(res, 0, left, 0, -res, top), width, height)


def pixel_size(grid: Grid, what: str = "image") -> float:
    """Pixel size of a north-up, square-pixel, projected grid, in its CRS units.

    Raises:
        InputError: rotated or sheared grids, non-square pixels, geographic CRSs (each with the fix).
    """
    a = grid.transform
    if abs(a.b) > 1e-9 or abs(a.d) > 1e-9:
        raise InputError(f"{what} has a rotated or sheared grid; warp it to a north-up grid (gdalwarp)")
    rx, ry = abs(a.a), abs(a.e)
    if grid.crs.is_geographic:  # first: its pixels are rarely square in degrees, and that is not the fix
        raise InputError(
            f"{what} is in a geographic CRS (degrees): reproject first, to a projected CRS in metres, "
            "e.g. `gdalwarp -t_srs EPSG:26917`"
        )
    if not grid.crs.is_projected:
        raise InputError(
            f"{what} is in a local (engineering) CRS, which cannot be placed on the Earth; assign its real "
            "projected CRS (`gdal_edit.py -a_srs EPSG:...`) or reproject it"
        )
    if abs(rx - ry) / max(rx, ry) > 0.01:
        raise InputError(
            f"{what} pixels are not square ({rx} x {ry}); warp it to square pixels (gdalwarp -tr)"
        )
    return rx


def pixel_of(grid: Grid, x: float, y: float) -> tuple[int, int]:
    """(row, col) of the pixel holding the point (x, y) of ``grid``'s CRS."""
    col, row = ~grid.transform * (x, y)
    return math.floor(row), math.floor(col)
