"""Imagery made of one or many files, read tile by tile on one working grid.

:func:`open_region` checks every image file once (raster, CRS, geotransform, bands, dtype) and
returns an :class:`ImageSpec`: small, frozen and picklable (paths, bands, grids, scaling), so a
Dask task can carry it. :class:`ImageReader` opens the files lazily in the process that reads and
returns (data, valid) for any window of the working grid; reads are windowed, so memory is bounded
by the tile whatever the raster size.

The output grid is the first file's CRS, resolution and pixel alignment, extended over the union
of all files (or cropped to an AOI). The working grid covers the same bounds at the resolution the
prior wants; when it equals the output grid (the usual case) files aligned to it are read directly,
and anything else goes through a GDAL warped VRT.

Validity: nodata values and internal masks mark invalid pixels. A band flagged *alpha* marks
validity only when it is not one of the bands read as data: 4-band NAIP files often flag the
near-infrared band as alpha, and its zeros (water) are data, not holes.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from geo_ppp.errors import InputError
from geo_ppp.geo.grid import Grid, grid_for, pixel_size
from geo_ppp.io.rasters import IMAGE_DTYPES, absolute_path, open_raster

__all__ = ["ImageReader", "ImageSpec", "open_region"]

log = logging.getLogger(__name__)

#: relative difference of resolutions below which two grids count as the same resolution
RES_TOLERANCE = 0.02


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to read a region's imagery anywhere (small and picklable).

    Attributes:
        paths: image files, first one wins where they overlap.
        bands: 1-based bands read, in order.
        grid: the output grid (first file's CRS, resolution and alignment).
        work: the working grid inference runs on (same bounds, the prior's resolution).
        resolution_m: pixel size of ``grid`` in metres; ``work_resolution_m`` that of ``work``.
        scale: per-band (low, high) mapped to 0-255, for non-uint8 imagery (None for uint8).
        footprints: each file's bounds in the region's CRS.
    """

    paths: tuple[str, ...]
    bands: tuple[int, ...]
    grid: Grid
    work: Grid
    resolution_m: float
    work_resolution_m: float
    scale: tuple[tuple[float, float], ...] | None = None
    footprints: tuple[tuple[float, float, float, float], ...] = ()

    @property
    def resampled(self) -> bool:
        """True when inference runs on another grid than the output's."""
        return self.work != self.grid

    def footprint_boxes(self) -> list[tuple[int, int, int, int]]:
        """Each file's footprint as a (y0, x0, y1, x1) pixel box of the working grid."""
        inv = ~self.work.transform
        boxes = []
        for left, bottom, right, top in self.footprints:
            x0, y0 = inv * (left, top)
            x1, y1 = inv * (right, bottom)
            eps = 1e-6
            box = (math.floor(y0 + eps), math.floor(x0 + eps), math.ceil(y1 - eps), math.ceil(x1 - eps))
            boxes.append(box)
        return boxes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "paths": list(self.paths),
            "bands": list(self.bands),
            "grid": self.grid.to_dict(),
            "work_grid": self.work.to_dict(),
            "resolution_m": self.resolution_m,
            "work_resolution_m": self.work_resolution_m,
            "scale": [list(s) for s in self.scale] if self.scale else None,
        }


def open_region(
    paths: str | os.PathLike[str] | list[str | os.PathLike[str]],
    *,
    bands: tuple[int, ...] | None = None,
    work_resolution_m: float | None = None,
    aoi_bounds: tuple[float, float, float, float] | None = None,
) -> ImageSpec:
    """Check imagery files and define the region's output and working grids.

    Args:
        paths: one or more GeoTIFF/VRT files (any CRS) forming one region.
        bands: 1-based bands to read, in order (default: the first 4, or all when fewer).
        work_resolution_m: resolution inference wants; ``None`` keeps the imagery's.
        aoi_bounds: crop the region to these bounds (in the first file's CRS).

    Raises:
        InputError: a file that is not a raster, has no CRS/transform, fewer than 3 bands, an
            unexpected dtype or bands out of range; files with different band counts; an AOI that
            misses the imagery.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [absolute_path(p) for p in paths]
    if not paths:
        raise InputError("no image given; pass at least one GeoTIFF or VRT")
    first: Grid | None = None
    union: list[float] | None = None
    footprints: list[tuple[float, float, float, float]] = []
    count = None
    dtypes = set()
    for path in paths:
        with open_raster(path, "image") as ds:
            if ds.count < 3:
                raise InputError(
                    f"image {path} has {ds.count} band(s); geo_ppp needs at least R, G, B (NAIP: R, G, B, "
                    "NIR). Stack the bands into one file, e.g. with `gdalbuildvrt -separate`"
                )
            if ds.dtypes[0] not in IMAGE_DTYPES:
                raise InputError(
                    f"image {path} has dtype {ds.dtypes[0]}; expected one of {IMAGE_DTYPES} (NAIP: uint8). "
                    "Convert it, e.g. `gdal_translate -ot Byte -scale`"
                )
            if count is not None and ds.count != count:
                raise InputError(
                    f"image {path} has {ds.count} bands but {paths[0]} has {count}; the files of one region "
                    "must have the same bands"
                )
            count = ds.count
            dtypes.add(ds.dtypes[0])
            grid = Grid(ds.crs, ds.transform, ds.width, ds.height)
            pixel_size(grid, f"image {path}")
            if first is None:
                first = grid
                union = list(grid.bounds)
                footprints.append(tuple(grid.bounds))
            else:
                b = transform_bounds(ds.crs, first.crs, *ds.bounds, densify_pts=21)
                footprints.append(tuple(b))
                union = [min(union[0], b[0]), min(union[1], b[1]), max(union[2], b[2]), max(union[3], b[3])]
    assert first is not None and union is not None and count is not None
    alpha = _true_alpha(paths[0]) if bands is None else None
    if alpha is not None:
        bands = tuple(b for b in range(1, min(count, 5)) if b != alpha)[:4]
        log.warning(
            "band %d of %s is an alpha mask (flagged alpha, values 0 and 255 only), not NIR: reading bands "
            "%s as R, G, B[, NIR] and masking the transparent pixels. If band %d really is NIR, pass "
            "--bands with it",
            alpha,
            paths[0],
            ",".join(map(str, bands)),
            alpha,
        )
    if bands is None:
        if count > 4:
            log.warning(
                "the image has %d bands; reading bands 1-4 as R, G, B, NIR. If that is not their order, "
                "say which with --bands (e.g. --bands 3,2,1,4)",
                count,
            )
        bands = tuple(range(1, min(count, 4) + 1))
    bands = tuple(int(b) for b in bands)
    bad = [b for b in bands if not 1 <= b <= count]
    if bad:
        raise InputError(f"bands {bad} out of range: the image has bands 1..{count}; fix --bands")
    repeated = sorted({b for b in bands if bands.count(b) > 1})
    if repeated:
        raise InputError(
            f"--bands {','.join(map(str, bands))} uses band(s) {repeated} more than once; R, G, B (and NIR) "
            "must each be their own band"
        )
    if len(bands) < 3:
        raise InputError(f"--bands {list(bands)} selects {len(bands)} band(s); give at least R, G, B")
    res = pixel_size(first, "image")
    bounds = tuple(union)
    if aoi_bounds is not None:
        a = aoi_bounds
        bounds = (max(bounds[0], a[0]), max(bounds[1], a[1]), min(bounds[2], a[2]), min(bounds[3], a[3]))
        if bounds[0] >= bounds[2] or bounds[1] >= bounds[3]:
            raise InputError(
                f"the AOI (bounds {tuple(round(v) for v in a)} in {first.crs}) does not overlap the image "
                f"(bounds {tuple(round(v) for v in union)}); give an AOI inside the image"
            )
    if len(paths) == 1 and aoi_bounds is None:
        grid = first
    else:
        grid = grid_for(first.crs, bounds, res, anchor=first.transform)
    unit = first.crs.linear_units_factor[1]
    work_res = res if work_resolution_m is None else work_resolution_m / unit
    if abs(work_res - res) / res <= RES_TOLERANCE:
        work, work_res = grid, res
    else:
        work = grid_for(first.crs, grid.bounds, work_res, anchor=grid.transform)
    scale = None
    if dtypes != {"uint8"}:
        scale = _percentile_scale(paths, bands)
    return ImageSpec(tuple(paths), bands, grid, work, res * unit, work_res * unit, scale, tuple(footprints))


def _true_alpha(path: str) -> int | None:
    """The band flagged alpha among the first four, if it really is a mask (only 0 and 255 in it).

    NAIP files often flag their NIR band as alpha; a real alpha band holds 0/255 only.
    """
    with rasterio.open(path) as ds:
        flagged = [i + 1 for i, c in enumerate(ds.colorinterp[:4]) if c == ColorInterp.alpha]
        if not flagged:
            return None
        f = max(1, math.ceil(max(ds.width, ds.height) / 1024))
        shape = (max(1, ds.height // f), max(1, ds.width // f))
        try:
            values = np.unique(ds.read(flagged[0], out_shape=shape, resampling=Resampling.nearest))
        except (RasterioIOError, RasterioError):
            return None  # a damaged file: geo_ppp.io.scan names the damage
    return flagged[0] if set(values.tolist()) <= {0, 255} else None


def _percentile_scale(paths: list[str], bands: tuple[int, ...]) -> tuple[tuple[float, float], ...]:
    """Per-band 2-98 % range over all files (from decimated reads), mapped to 0-255 later."""
    samples: list[list[np.ndarray]] = [[] for _ in bands]
    for path in paths:
        with rasterio.open(path) as ds:
            f = max(1, math.ceil(max(ds.width, ds.height) / 1024))
            shape = (max(1, ds.height // f), max(1, ds.width // f))
            try:
                data = ds.read(list(bands), out_shape=(len(bands), *shape), resampling=Resampling.nearest)
                valid = _validity(ds, bands, None, out_shape=shape)
            except (RasterioIOError, RasterioError) as err:
                raise InputError(
                    f"image {path} is damaged: it cannot be read ({str(err).splitlines()[0]}); download or "
                    "rebuild the file"
                ) from None
            for i in range(len(bands)):
                samples[i].append(data[i][valid].astype(np.float64))
    out = []
    for s in samples:
        v = np.concatenate(s) if s else np.zeros(1)
        if v.size == 0:
            v = np.zeros(1)
        v = v[~np.isnan(v)]
        lo, hi = np.percentile(v, [2, 98]) if v.size else (0.0, 1.0)
        out.append((float(lo), float(max(hi, lo + 1e-6))))
    return tuple(out)


def _validity(
    ds: rasterio.DatasetReader,
    bands: tuple[int, ...],
    window: Window | None,
    out_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """(H, W) bool: valid pixels of ``window`` (see the module notes on alpha bands)."""
    kw: dict[str, Any] = {"window": window}
    if out_shape is not None:
        kw["out_shape"] = out_shape
    flags = ds.mask_flag_enums[bands[0] - 1]
    if MaskFlags.alpha in flags:
        alpha = [i + 1 for i, c in enumerate(ds.colorinterp) if c == ColorInterp.alpha]
        if alpha and alpha[0] not in bands:
            return ds.read(alpha[0], **kw) > 0
        if ds.nodata is None:
            shape = out_shape or ((window.height, window.width) if window else ds.shape)
            return np.ones(shape, bool)
        data = ds.read(list(bands), **kw)
        return ~(data == ds.nodata).all(0)
    if MaskFlags.all_valid in flags:
        shape = out_shape or ((int(window.height), int(window.width)) if window else ds.shape)
        return np.ones(shape, bool)
    if MaskFlags.nodata in flags:
        data = ds.read(list(bands), **kw)
        return ~(data == ds.nodata).all(0)
    return ds.read_masks(bands[0], **kw) > 0


def _without_alpha_vrt(ds: rasterio.DatasetReader) -> str:
    """A VRT document of all bands of ``ds`` (same grid and nodata) in which no band is flagged alpha."""
    from xml.sax.saxutils import escape

    from rasterio.dtypes import _gdal_typename

    name = ds.name if ds.name.startswith("/vsi") or "://" in ds.name else os.path.abspath(ds.name)
    nodata = f"<NoDataValue>{ds.nodata!r}</NoDataValue>" if ds.nodata is not None else ""
    bands = "".join(
        f'<VRTRasterBand dataType="{_gdal_typename(ds.dtypes[i - 1])}" band="{i}">{nodata}'
        "<ColorInterp>Undefined</ColorInterp><SimpleSource>"
        f'<SourceFilename relativeToVRT="0">{escape(name)}</SourceFilename>'
        f"<SourceBand>{i}</SourceBand></SimpleSource></VRTRasterBand>"
        for i in ds.indexes
    )
    transform = ", ".join(repr(v) for v in ds.transform.to_gdal())
    return (
        f'<VRTDataset rasterXSize="{ds.width}" rasterYSize="{ds.height}"><SRS>{escape(ds.crs.to_wkt())}</SRS>'
        f"<GeoTransform>{transform}</GeoTransform>{bands}</VRTDataset>"
    )


def _vrt_valid(vrt: WarpedVRT, window: Window) -> np.ndarray:
    """Valid pixels of a warped VRT: its alpha band when it has one, else its nodata mask.

    GDAL reports such VRTs as all-valid in their mask flags, so ``dataset_mask`` would call the area
    outside the file valid.
    """
    alpha = [i + 1 for i, c in enumerate(vrt.colorinterp) if c == ColorInterp.alpha]
    if alpha:
        return vrt.read(alpha[-1], window=window) > 0
    return vrt.dataset_mask(window=window) > 0


def _aligned(ds: rasterio.DatasetReader, work: Grid) -> tuple[int, int] | None:
    """(row, col) offset of the file in ``work`` when its pixels coincide with the grid's, else None."""
    if ds.crs != work.crs:
        return None
    a, b = ds.transform, work.transform
    if abs(a.a - b.a) > 1e-9 * abs(b.a) or abs(a.e - b.e) > 1e-9 * abs(b.e) or a.b or a.d:
        return None
    col = (a.c - b.c) / b.a
    row = (a.f - b.f) / b.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return round(row), round(col)


class ImageReader:
    """Reads windows of a region's working grid from its files (open lazily, in this process)."""

    def __init__(self, spec: ImageSpec) -> None:
        self.spec = spec
        self._files: list[tuple[rasterio.DatasetReader, tuple[int, int] | None, Any]] | None = None
        self._views: list[rasterio.DatasetReader] = []

    def _open_files(self) -> list[tuple[rasterio.DatasetReader, tuple[int, int] | None, Any]]:
        if self._files is None:
            files = []
            work = self.spec.work
            for path in self.spec.paths:
                ds = rasterio.open(path)
                offset = _aligned(ds, work)
                vrt = None
                if offset is None:
                    alpha = [i + 1 for i, c in enumerate(ds.colorinterp) if c == ColorInterp.alpha]
                    source = ds
                    if alpha and alpha[0] in self.spec.bands:
                        # The band flagged alpha is data (NAIP's NIR): GDAL's warper would take it as
                        # the source mask (rasterio always passes a flagged alpha band on), turning
                        # NIR zeros (water) into holes. Warp a view of the file without the flag.
                        source = rasterio.open(_without_alpha_vrt(ds))
                        self._views.append(source)
                    has_alpha = any(c == ColorInterp.alpha for c in source.colorinterp)
                    down = abs(work.transform.a) > abs(ds.transform.a) * 1.5
                    vrt = WarpedVRT(
                        source,
                        crs=work.crs,
                        transform=work.transform,
                        width=work.width,
                        height=work.height,
                        resampling=Resampling.average if down else Resampling.bilinear,
                        add_alpha=not has_alpha and ds.nodata is None,
                    )
                files.append((ds, offset, vrt))
            self._files = files
        return self._files

    def close(self) -> None:
        """Close the open files."""
        for ds, _, vrt in self._files or []:
            if vrt is not None:
                vrt.close()
            ds.close()
        for view in self._views:
            view.close()
        self._views = []
        self._files = None

    def __enter__(self) -> ImageReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, y: int, x: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Window (y, x, height, width) of the working grid: float32 (C, H, W) in 0-255 and valid (H, W).

        Pixels outside every file, or nodata in all, are invalid (data 0).
        """
        nb = len(self.spec.bands)
        data = np.zeros((nb, height, width), np.float32)
        valid = np.zeros((height, width), bool)
        work = self.spec.work
        for ds, offset, vrt in self._open_files():
            if offset is not None:
                r0, c0 = y - offset[0], x - offset[1]
                src_h, src_w = ds.height, ds.width
                source = ds
            else:
                r0, c0 = y, x
                src_h, src_w = work.height, work.width
                source = vrt
            # the part of the window inside this source
            rr0, cc0 = max(r0, 0), max(c0, 0)
            rr1, cc1 = min(r0 + height, src_h), min(c0 + width, src_w)
            if rr0 >= rr1 or cc0 >= cc1:
                continue
            win = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
            ys = slice(rr0 - r0, rr1 - r0)
            xs = slice(cc0 - c0, cc1 - c0)
            todo = ~valid[ys, xs]
            if not todo.any():
                continue
            part = source.read(list(self.spec.bands), window=win).astype(np.float32)
            if offset is not None:
                ok = _validity(ds, self.spec.bands, win)
            else:
                ok = _vrt_valid(vrt, win)
            if np.isnan(part).any():
                raise InputError(
                    f"image {ds.name} holds NaN values; set a nodata value for them (e.g. "
                    "`gdal_translate -a_nodata 0`) or fill them"
                )
            take = todo & ok
            sub = data[:, ys, xs]
            sub[:, take] = part[:, take]
            data[:, ys, xs] = sub
            valid[ys, xs] |= take
        if self.spec.scale is not None:
            for c, (lo, hi) in enumerate(self.spec.scale):
                data[c] = np.clip((data[c] - lo) / (hi - lo), 0, 1) * 255
            data[:, ~valid] = 0
        return data, valid
