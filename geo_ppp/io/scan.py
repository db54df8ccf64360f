"""Scanning a region's image files before any tile runs: damage and NaNs found at plan time.

A block that cannot be read (a truncated COG, a VRT whose source is missing) or NaN values outside
the file's nodata would otherwise stop a run only when their tile is reached, hours in.
"""

from __future__ import annotations

import math

import numpy as np
import rasterio
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from geo_ppp.errors import InputError
from geo_ppp.io.imagery import ImageSpec

__all__ = ["SCAN_ROWS", "scan_image_files"]

#: rows read at a time (memory is bounded by a strip of this height)
SCAN_ROWS = 512


def scan_image_files(spec: ImageSpec) -> None:
    """Read every file of a region once, strip by strip, before any tile runs (bounded memory).

    A block that cannot be read (a truncated COG, a VRT whose source is missing) or NaN values
    outside the file's nodata would otherwise stop the run only when their tile is reached. Only
    the part of each file inside the region is read: with a small AOI, a small part of a big file.

    Raises:
        InputError: naming the file, the rows, and the fix.
    """
    for path in spec.paths:
        try:
            ds = rasterio.open(path)
        except RasterioIOError as err:
            raise InputError(f"image {path} cannot be opened ({err}); check the file") from None
        with ds:
            floating = np.dtype(ds.dtypes[spec.bands[0] - 1]).kind == "f"
            col0, row0, col1, row1 = _inside(ds, spec)
            for row in range(row0, row1, SCAN_ROWS):
                window = Window(col0, row, col1 - col0, min(SCAN_ROWS, row1 - row))
                try:
                    data = ds.read(list(spec.bands), window=window)
                except (RasterioIOError, RasterioError) as err:
                    raise InputError(
                        f"image {path} is damaged: rows {row}-{row + window.height} cannot be read "
                        f"({str(err).splitlines()[0]}); download or rebuild the file (a VRT's sources must "
                        "all exist)"
                    ) from None
                if floating:
                    nan = np.isnan(data)
                    if ds.nodata is not None and np.isnan(ds.nodata):
                        nan[:] = False
                    if nan.any():
                        raise InputError(
                            f"image {path} holds NaN values (first in rows {row}-{row + window.height}); "
                            "set a nodata value for them (e.g. `gdal_translate -a_nodata 0`) or fill them"
                        )


def _inside(ds: rasterio.DatasetReader, spec: ImageSpec) -> tuple[int, int, int, int]:
    """The file's pixel box (col0, row0, col1, row1) inside the region, one pixel of margin."""
    left, bottom, right, top = transform_bounds(spec.grid.crs, ds.crs, *spec.grid.bounds, densify_pts=21)
    win = ds.window(left, bottom, right, top)
    col0 = max(0, math.floor(win.col_off) - 1)
    row0 = max(0, math.floor(win.row_off) - 1)
    col1 = min(ds.width, math.ceil(win.col_off + win.width) + 1)
    row1 = min(ds.height, math.ceil(win.row_off + win.height) + 1)
    if col1 <= col0 or row1 <= row0:
        return 0, 0, 0, 0
    return col0, row0, col1, row1
