"""Rasters: reading imagery and weak labels, writing maps.

Every reader checks what the inference needs and raises :class:`~geo_ppp.errors.InputError` with
the fix: a file that is not a raster, no CRS or geotransform, too few bands, an unexpected dtype,
NaNs, weak labels that miss the image. Weak labels in another CRS or resolution are reprojected
onto the image grid (nearest neighbour: they are class codes).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.shutil import copy as rio_copy
from rasterio.transform import Affine
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window

from geo_ppp.core.atomic import atomic_path
from geo_ppp.errors import GeoPPPError, InputError
from geo_ppp.geo.grid import Grid
from geo_ppp.geo.legend import Legend
from geo_ppp.outputs import OutputError

__all__ = [
    "RasterWriter",
    "class_bits",
    "write_errors",
    "gdal_env",
    "read_class_raster",
    "read_decimated",
    "read_image",
    "read_labels_on_grid",
    "read_warped_rows",
    "read_window",
    "reproject_codes",
    "write_class_map",
]

IMAGE_DTYPES = ("uint8", "uint16", "int16", "float32")


#: GDAL's block cache for a run (its default, 5 % of RAM, lets a long run's resident memory grow by GBs)
GDAL_CACHE_MB = 64


def gdal_env(cache_mb: int = GDAL_CACHE_MB) -> rasterio.Env:
    """The GDAL settings of a run: a bounded block cache (use as a context manager)."""
    return rasterio.Env(GDAL_CACHEMAX=cache_mb * 2**20)


def absolute_path(path: str | os.PathLike[str]) -> str:
    """An existing local path made absolute (specs travel to workers with another working dir)."""
    p = Path(path)
    return str(p.resolve()) if p.exists() else str(path)


def open_raster(path: str | os.PathLike[str], what: str) -> rasterio.DatasetReader:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} {p} does not exist")
    try:
        with warnings.catch_warnings():  # no georeferencing is reported below, as one line with its fix
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(p)
    except RasterioIOError as exc:
        raise InputError(f"{what} {p} is not a raster GDAL can read ({exc}); give a GeoTIFF or VRT") from exc
    if p.suffix.lower() in (".tif", ".tiff") and ds.driver not in ("GTiff", "COG"):
        driver = ds.driver
        ds.close()
        raise InputError(
            f"{what} {p} is named .tif but is a {driver} file, not a GeoTIFF; convert and georeference it, "
            f"e.g. `gdal_translate -of GTiff -a_srs EPSG:26917 -a_ullr ... {p} {p.stem}_geo.tif`"
        )
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
    with open_raster(path, "image") as ds:
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


def reproject_codes(ds: rasterio.DatasetReader, grid: Grid, nodata: int) -> np.ndarray:
    """Band 1 of an open class raster on ``grid`` (nearest; reads only what the grid needs)."""
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
    return out


def read_labels_on_grid(
    path: str | os.PathLike[str], grid: Grid, what: str = "weak labels"
) -> tuple[np.ndarray, int]:
    """Read a class-code raster reprojected (nearest) onto ``grid``; returns (codes, nodata code).

    Pixels outside the raster get its nodata code (0 when it has none).

    Raises:
        InputError: not a raster, no CRS/transform, not an integer band, or no overlap with ``grid``.
    """
    with open_raster(path, what) as ds:
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
        out = reproject_codes(ds, grid, nodata)
    if (out == nodata).all():
        raise InputError(f"{what} {path} hold only nodata over the image; give {what} that cover it")
    return out, nodata


def read_class_raster(
    path: str | os.PathLike[str], what: str = "labels"
) -> tuple[np.ndarray, int | None, Grid]:
    """Read band 1 of a class raster on its own grid: (codes, nodata, grid)."""
    with open_raster(path, what) as ds:
        if np.dtype(ds.dtypes[0]).kind not in "iu":
            raise InputError(f"{what} {path} must hold integer class codes, not {ds.dtypes[0]}")
        data = ds.read(1).astype(np.int64)
        nodata = int(ds.nodata) if ds.nodata is not None else None
        return data, nodata, Grid(ds.crs, ds.transform, ds.width, ds.height)


def read_map_legend(path: str | os.PathLike[str], what: str = "prediction") -> tuple[str | None, str | None]:
    """The legend a geo_ppp map records: (``LEGEND`` tag, band 1's ``CLASS_NAMES``), None where absent."""
    with open_raster(path, what) as ds:
        return ds.tags().get("LEGEND"), ds.tags(1).get("CLASS_NAMES")


def write_class_map(
    path: str | os.PathLike[str],
    codes: np.ndarray,
    grid: Grid,
    legend: Legend,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write uint8 legend codes as a tiled, DEFLATE GeoTIFF with nodata, colour table and class names.

    The file is written under a temporary name and renamed, so a crash never leaves half a map. It
    holds :func:`class_bits` bits per pixel.

    Raises:
        InputError: a map of another shape than the grid, or codes the legend does not have.
    """
    path = Path(path)
    codes = np.asarray(codes)
    if codes.shape != (grid.height, grid.width):
        raise InputError(f"map {codes.shape} does not match the grid {(grid.height, grid.width)}")
    unknown = sorted(set(np.unique(codes).tolist()) - {*legend.codes, legend.nodata})
    if unknown:
        raise InputError(
            f"map codes {unknown} are not in legend {legend.name!r} (codes {list(legend.codes)}, "
            f"nodata {legend.nodata}); map class indices to codes with Legend.to_codes first"
        )
    codes = codes.astype(np.uint8)
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
    if class_bits(legend) < 8:
        profile["nbits"] = class_bits(legend)
    colormap = _palette(legend)
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


def class_bits(legend: Legend) -> int:
    """The fewest bits per pixel that hold every code of ``legend`` (its nodata included), at most 8.

    A class map is written with this many bits (GDAL's ``NBITS``): a TIFF colour table has one
    entry per possible value, and QGIS lists every entry, so with 3 bits it lists the 4 Chesapeake
    classes, nodata and 3 values the map never holds, instead of 251 of those.
    """
    return max(1, min(8, int(max(*legend.codes, legend.nodata)).bit_length()))


def _palette(legend: Legend) -> dict[int, tuple[int, int, int, int]]:
    # one entry per value the map's bits hold (a TIFF colour table has no alpha: unused ones are black)
    colormap = {i: (0, 0, 0, 0) for i in range(2 ** class_bits(legend))}
    for code, rgb in zip(legend.codes, legend.colors, strict=True):
        colormap[code] = (*rgb, 255)
    return colormap


@contextlib.contextmanager
def write_errors(path: Path) -> Iterator[None]:
    """GDAL's write failures (rasterio raises them as its own exception types) as an OutputError."""
    try:
        yield
    except GeoPPPError:
        raise
    except Exception as err:  # rasterio's CPLE_* and RasterioIOError, OSError: all mean "not written"
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise OutputError(
            f"writing {path} failed ({first}); is the disk full? Nothing was left half-written: free space, "
            "then rerun (a segment run resumes its finished tiles)"
        ) from err


class RasterWriter:
    """Write a raster strip by strip, then publish it as a Cloud Optimized GeoTIFF in one rename.

    Rows go to a hidden, tiled scratch GeoTIFF beside the output; :meth:`commit` converts it to a
    COG (DEFLATE, internal overviews) under a temporary name and renames that onto the output. If
    the run fails before, the scratch file is removed and the output is untouched.

    Args:
        path: the output.
        grid: its grid.
        count, dtype: bands and data type.
        nodata: nodata value (None: none).
        legend: for a class map: colour table, palette interpretation and class names.
        descriptions: band descriptions.
        tags: dataset metadata.
        overview_resampling: ``mode`` for class maps, ``average`` for probabilities.

    Example:
        >>> with RasterWriter("map.tif", grid, legend=lg) as w:  # doctest: +SKIP
        ...     w.write(0, strip)
        ...     w.commit()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        grid: Grid,
        *,
        count: int = 1,
        dtype: str = "uint8",
        nodata: float | None = None,
        legend: Legend | None = None,
        descriptions: list[str] | None = None,
        tags: dict[str, str] | None = None,
        overview_resampling: str = "mode",
    ) -> None:
        self.path = Path(path)
        self.grid = grid
        self.legend = legend
        self.overview_resampling = overview_resampling
        self._atomic = atomic_path(self.path.with_name(f".{self.path.name}.scratch.tif"))
        self._scratch = self._atomic.__enter__()
        profile = {
            "driver": "GTiff",
            "width": grid.width,
            "height": grid.height,
            "count": count,
            "dtype": dtype,
            "crs": grid.crs,
            "transform": grid.transform,
            "nodata": legend.nodata if legend is not None and nodata is None else nodata,
            "compress": "deflate",
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "BIGTIFF": "IF_SAFER",
        }
        self._ds = rasterio.open(self._scratch, "w", **profile)
        if legend is not None:
            self._ds.write_colormap(1, _palette(legend))
            self._ds.colorinterp = [ColorInterp.palette]
            self._ds.set_band_description(1, f"land cover ({legend.name})")
            self._ds.update_tags(
                1, CLASS_NAMES=";".join(f"{c}={n}" for c, n in zip(legend.codes, legend.names, strict=True))
            )
            self._ds.update_tags(LEGEND=legend.name)
        for i, text in enumerate(descriptions or []):
            self._ds.set_band_description(i + 1, text)
        if tags:
            self._ds.update_tags(**tags)
        self._committed = False

    def write(self, row: int, data: np.ndarray) -> None:
        """Write rows ``row .. row + len`` ((H, W) for one band or (C, H, W)).

        Raises:
            OutputError: GDAL could not write (a full disk, a file-size limit); the output is untouched.
        """
        arr = data if data.ndim == 3 else data[None]
        window = Window(0, row, arr.shape[2], arr.shape[1])
        with write_errors(self.path):
            self._ds.write(arr.astype(self._ds.dtypes[0], copy=False), window=window)

    def commit(self) -> Path:
        """Convert to a COG with overviews and rename it onto the output.

        Raises:
            OutputError: GDAL could not write (a full disk, a file-size limit); the output is untouched.
        """
        with write_errors(self.path):
            return self._commit()

    def _commit(self) -> Path:
        self._ds.close()
        extra = {}
        if self.legend is not None and class_bits(self.legend) < 8:
            extra["nbits"] = class_bits(self.legend)
        with atomic_path(self.path) as tmp:
            rio_copy(
                self._scratch,
                tmp,
                **extra,
                driver="COG",
                compress="DEFLATE",
                overview_resampling=self.overview_resampling.upper(),
                blocksize=512,
                bigtiff="IF_SAFER",
                num_threads="ALL_CPUS",  # compression and overviews in parallel (2x on 2 cores)
            )
        self._committed = True
        return self.path

    def close(self) -> None:
        """Drop the scratch file (the output stays as it is if :meth:`commit` was not reached)."""
        if not self._ds.closed:
            self._ds.close()
        self._atomic.__exit__(RuntimeError, RuntimeError("discard"), None)

    def __enter__(self) -> RasterWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_decimated(path: str | os.PathLike[str], max_size: int = 1024) -> tuple[np.ndarray, Grid]:
    """Band 1 of a raster read at most ``max_size`` pixels across (nearest; uses overviews)."""
    with open_raster(path, "raster") as ds:
        f = max(1, -(-max(ds.width, ds.height) // max_size))
        shape = (max(1, ds.height // f), max(1, ds.width // f))
        data = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
        transform = ds.transform @ Affine.scale(ds.width / shape[1], ds.height / shape[0])
        return data, Grid(ds.crs, transform, shape[1], shape[0])


def read_window(path: str | os.PathLike[str], y: int, x: int, height: int, width: int) -> np.ndarray:
    """Band 1 of a raster in the window at pixel (y, x)."""
    with open_raster(path, "raster") as ds:
        return ds.read(1, window=Window(x, y, width, height))


def read_warped_rows(
    path: str | os.PathLike[str], grid: Grid, y0: int, y1: int, resampling: str = "nearest"
) -> np.ndarray:
    """Rows ``[y0, y1)`` of ``grid`` warped from a raster (all bands): (C, y1 - y0, width)."""
    from rasterio.vrt import WarpedVRT

    with open_raster(path, "raster") as ds, WarpedVRT(
        ds,
        crs=grid.crs,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        resampling=Resampling[resampling],
    ) as vrt:
        return vrt.read(window=Window(0, y0, grid.width, y1 - y0))
