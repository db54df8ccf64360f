"""Rasters: reading imagery and weak labels, writing maps.

Every reader checks what the inference needs and raises :class:`~geo_ppp.errors.InputError` with
the fix: a file that is not a raster, no CRS or geotransform, too few bands, an unexpected dtype,
NaNs, weak labels that miss the image. Weak labels in another CRS or resolution are reprojected
onto the image grid (nearest neighbour: they are class codes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioIOError
from rasterio.transform import array_bounds
from rasterio.warp import reproject, transform_bounds

from geo_ppp.core.atomic import atomic_path
from geo_ppp.errors import InputError
from geo_ppp.landcover.legends import Legend

__all__ = ["Grid", "read_class_raster", "read_image", "read_labels_on_grid", "write_class_map"]

IMAGE_DTYPES = ("uint8", "uint16", "int16", "float32")


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and size."""

    crs: CRS
    transform: Any
    width: int
    height: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        west, south, east, north = array_bounds(self.height, self.width, self.transform)
        return west, south, east, north

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "crs": self.crs.to_string(),
            "transform": list(self.transform)[:6],
            "width": self.width,
            "height": self.height,
        }


def _open(path: str | os.PathLike[str], what: str) -> rasterio.DatasetReader:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} {p} does not exist")
    try:
        ds = rasterio.open(p)
    except RasterioIOError as exc:
        raise InputError(f"{what} {p} is not a raster GDAL can read ({exc}); give a GeoTIFF or VRT") from exc
    if ds.crs is None:
        ds.close()
        raise InputError(f"{what} {p} has no CRS; set one, e.g. `gdal_edit.py -a_srs EPSG:26917 {p}`")
    if ds.transform.is_identity:
        ds.close()
        raise InputError(
            f"{what} {p} has no geotransform (pixel coordinates only); georeference it first, e.g. with "
            "`gdal_translate -a_ullr` or `gdal_edit.py -a_ullr`"
        )
    return ds


def read_image(
    path: str | os.PathLike[str], bands: tuple[int, ...] | None = None
) -> tuple[np.ndarray, np.ndarray, Grid]:
    """Read imagery as float32 (C, H, W) with a validity mask (H, W) and its grid.

    Args:
        path: a GeoTIFF or VRT with at least 3 bands (R, G, B[, NIR]).
        bands: 1-based bands to read, in order (default: all, at most the first 4).

    Raises:
        InputError: not a raster, no CRS/transform, fewer than 3 bands, unexpected dtype, NaNs.
    """
    with _open(path, "image") as ds:
        if ds.count < 3:
            raise InputError(
                f"image {path} has {ds.count} band(s); geo_ppp needs at least R, G, B (NAIP: R, G, B, NIR). "
                "Stack the bands into one file, e.g. with `gdalbuildvrt -separate`"
            )
        dtype = ds.dtypes[0]
        if dtype not in IMAGE_DTYPES:
            raise InputError(
                f"image {path} has dtype {dtype}; expected one of {IMAGE_DTYPES} (NAIP: uint8). Convert it, "
                "e.g. `gdal_translate -ot Byte -scale`"
            )
        if bands is None:
            bands = tuple(range(1, min(ds.count, 4) + 1))
        bad = [b for b in bands if not 1 <= b <= ds.count]
        if bad:
            raise InputError(f"bands {bad} out of range: image {path} has bands 1..{ds.count}")
        data = ds.read(list(bands)).astype(np.float32)
        valid = ds.dataset_mask() > 0
        grid = Grid(ds.crs, ds.transform, ds.width, ds.height)
    nan = np.isnan(data)
    if nan.any():
        raise InputError(
            f"image {path} holds {int(nan.sum())} NaN values; set a nodata value for them (e.g. "
            "`gdal_translate -a_nodata 0`) or fill them"
        )
    if dtype != "uint8":
        # scale other dtypes to the 0-255 range of NAIP by their valid 2-98 % range, per band
        for c in range(data.shape[0]):
            v = data[c][valid]
            if v.size:
                lo, hi = np.percentile(v, [2, 98])
                data[c] = np.clip((data[c] - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    return data, valid, grid


def read_labels_on_grid(
    path: str | os.PathLike[str], grid: Grid, what: str = "weak labels"
) -> tuple[np.ndarray, int]:
    """Read a class-code raster reprojected (nearest) onto ``grid``; returns (codes, nodata code).

    Pixels outside the raster get its nodata code (0 when it has none).

    Raises:
        InputError: not a raster, no CRS/transform, not an integer band, or no overlap with ``grid``.
    """
    with _open(path, what) as ds:
        if np.dtype(ds.dtypes[0]).kind not in "iu":
            raise InputError(f"{what} {path} must hold integer class codes, not {ds.dtypes[0]}")
        nodata = int(ds.nodata) if ds.nodata is not None else 0
        left, bottom, right, top = transform_bounds(grid.crs, ds.crs, *grid.bounds, densify_pts=21)
        b = ds.bounds
        if left >= b.right or right <= b.left or bottom >= b.top or top <= b.bottom:
            raise InputError(
                f"{what} {path} (bounds {tuple(round(v) for v in b)} in {ds.crs}) do not overlap the image "
                f"(bounds {tuple(round(v) for v in (left, bottom, right, top))} in that CRS); give {what} "
                "that cover the image"
            )
        out = np.full((grid.height, grid.width), nodata, dtype=np.int64)
        reproject(
            source=rasterio.band(ds, 1),
            destination=out,
            src_nodata=nodata,
            dst_nodata=nodata,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            resampling=Resampling.nearest,
        )
    if (out == nodata).all():
        raise InputError(f"{what} {path} hold only nodata over the image; give {what} that cover it")
    return out, nodata


def read_class_raster(
    path: str | os.PathLike[str], what: str = "labels"
) -> tuple[np.ndarray, int | None, Grid]:
    """Read band 1 of a class raster on its own grid: (codes, nodata, grid)."""
    with _open(path, what) as ds:
        if np.dtype(ds.dtypes[0]).kind not in "iu":
            raise InputError(f"{what} {path} must hold integer class codes, not {ds.dtypes[0]}")
        data = ds.read(1).astype(np.int64)
        nodata = int(ds.nodata) if ds.nodata is not None else None
        return data, nodata, Grid(ds.crs, ds.transform, ds.width, ds.height)


def write_class_map(
    path: str | os.PathLike[str],
    codes: np.ndarray,
    grid: Grid,
    legend: Legend,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write uint8 legend codes as a tiled, DEFLATE GeoTIFF with nodata, colour table and class names.

    The file is written under a temporary name and renamed, so a crash never leaves half a map.
    """
    path = Path(path)
    codes = np.asarray(codes, dtype=np.uint8)
    if codes.shape != (grid.height, grid.width):
        raise InputError(f"map {codes.shape} does not match the grid {(grid.height, grid.width)}")
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "dtype": "uint8",
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": legend.nodata,
        "compress": "deflate",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    colormap = {i: (0, 0, 0, 0) for i in range(256)}
    for code, rgb in zip(legend.codes, legend.colors, strict=True):
        colormap[code] = (*rgb, 255)
    categories = [""] * (max(legend.codes) + 1)
    for code, name in zip(legend.codes, legend.names, strict=True):
        categories[code] = name
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(codes, 1)
            dst.write_colormap(1, colormap)
            dst.colorinterp = [ColorInterp.palette]
            dst.set_band_description(1, f"land cover ({legend.name})")
            dst.update_tags(LEGEND=legend.name, **(tags or {}))
            dst.update_tags(
                1, CLASS_NAMES=";".join(f"{c}={n}" for c, n in zip(legend.codes, legend.names, strict=True))
            )
    return path
