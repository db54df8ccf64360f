"""Weak labels on the region's grid: class-code rasters in any CRS and resolution, or polygons.

:func:`open_weak_labels` checks the sources once and returns a :class:`WeakSpec` (small, frozen,
picklable); :class:`WeakReader` reads them for any window of the working grid: rasters by nearest
reprojection (they are class codes), polygons by rasterising their class attribute per tile.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds

from geo_ppp.errors import InputError
from geo_ppp.geo.grid import Grid
from geo_ppp.io.rasters import absolute_path, open_raster, reproject_codes

__all__ = ["VECTOR_SUFFIXES", "WeakReader", "WeakSpec", "open_weak_labels"]

log = logging.getLogger(__name__)

#: relative difference of resolutions below which two grids count as the same resolution

# -- weak labels ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeakSpec:
    """Weak-label sources (small and picklable).

    Attributes:
        paths: class-code rasters (first wins where they overlap) or one vector file.
        kind: ``raster`` or ``vector``.
        attribute: the vector's class attribute.
        nodata: the code meaning "no label".
        codes: the codes present over the region (checked against the co-occurrence matrix).
    """

    paths: tuple[str, ...]
    kind: str
    nodata: int
    attribute: str | None = None
    codes: tuple[int, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "paths": list(self.paths),
            "kind": self.kind,
            "attribute": self.attribute,
            "nodata": self.nodata,
        }


VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".parquet")


def open_weak_labels(
    paths: str | os.PathLike[str] | list[str | os.PathLike[str]],
    region: Grid,
    *,
    attribute: str | None = None,
) -> WeakSpec:
    """Check weak labels against a region: overlap, integer codes; list the codes present.

    Args:
        paths: class-code rasters (any CRS and resolution), or one vector file with ``attribute``.
        region: the grid the labels must cover.
        attribute: class attribute of a vector file.

    Raises:
        InputError: unreadable, no CRS/transform, not integer codes, no overlap with the region,
            a vector without the attribute.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [absolute_path(p) for p in paths]
    if not paths:
        raise InputError("no weak labels given; pass --weak-labels")
    if any(Path(p).suffix.lower() in VECTOR_SUFFIXES for p in paths):
        return _open_weak_vector(paths, region, attribute)
    if attribute is not None:
        raise InputError(f"--label-attribute {attribute!r} applies to vector weak labels, not rasters")
    codes: set[int] = set()
    nodata_code = None
    overlapping = 0
    for path in paths:
        with open_raster(path, "weak labels") as ds:
            if np.dtype(ds.dtypes[0]).kind not in "iu":
                raise InputError(f"weak labels {path} must hold integer class codes, not {ds.dtypes[0]}")
            nodata = int(ds.nodata) if ds.nodata is not None else 0
            if nodata_code is None:
                nodata_code = nodata
            elif nodata != nodata_code:
                raise InputError(
                    f"weak labels {path} have nodata {nodata} but {paths[0]} has {nodata_code}; "
                    "give files with one nodata code"
                )
            left, bottom, right, top = transform_bounds(region.crs, ds.crs, *region.bounds, densify_pts=21)
            b = ds.bounds
            if left >= b.right or right <= b.left or bottom >= b.top or top <= b.bottom:
                continue
            overlapping += 1
            win = ds.window(max(left, b.left), max(bottom, b.bottom), min(right, b.right), min(top, b.top))
            win = win.round_offsets().round_lengths()
            f = max(1, math.ceil(max(win.width, win.height) / 4096))
            shape = (max(1, int(win.height) // f), max(1, int(win.width) // f))
            data = ds.read(1, window=win, out_shape=shape, resampling=Resampling.nearest)
            codes.update(int(c) for c in np.unique(data))
    if not overlapping:
        raise InputError(
            f"weak labels {', '.join(paths)} do not overlap the image (bounds "
            f"{tuple(round(v) for v in region.bounds)} in {region.crs}); give weak labels that cover it"
        )
    assert nodata_code is not None
    codes.discard(nodata_code)
    if not codes:
        raise InputError(
            f"weak labels {', '.join(paths)} hold only nodata over the image; give labels that cover it"
        )
    return WeakSpec(tuple(paths), "raster", nodata_code, None, tuple(sorted(codes)))


def _vector_labels(path: str, attribute: str | None) -> Any:
    """The polygons of a vector weak-label file, read once per process while the file is unchanged.

    Planning reads them to check the attribute and the overlap, the reader to rasterise tiles: in
    one process (a serial run) the file is read once, not twice.
    """
    st = os.stat(path)
    return _cached_vector_labels(path, attribute, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _cached_vector_labels(path: str, attribute: str | None, size: int, mtime_ns: int) -> Any:
    from geo_ppp.io.vectors import read_vector_labels

    return read_vector_labels(path, attribute)


def _open_weak_vector(paths: list[str], region: Grid, attribute: str | None) -> WeakSpec:
    if len(paths) != 1:
        raise InputError("give one vector file of weak labels (merge several with ogrmerge.py)")
    if attribute is None:
        raise InputError(
            f"vector weak labels {paths[0]} need the name of their class attribute: "
            "pass --label-attribute NAME"
        )
    gdf = _vector_labels(paths[0], attribute)
    gdf = gdf.to_crs(region.crs)
    left, bottom, right, top = region.bounds
    inside = gdf.cx[left:right, bottom:top]
    if inside.empty:
        raise InputError(
            f"weak labels {paths[0]} do not overlap the image "
            f"(bounds {tuple(round(v) for v in region.bounds)} in "
            f"{region.crs}); give weak labels that cover it"
        )
    codes = tuple(sorted({int(c) for c in inside[attribute]} - {0}))
    return WeakSpec(tuple(paths), "vector", 0, attribute, codes)


class WeakReader:
    """Reads weak-label codes on any window grid (opens files lazily, in this process)."""

    def __init__(self, spec: WeakSpec) -> None:
        self.spec = spec
        self._handles: list[rasterio.DatasetReader] | None = None
        self._gdf: Any = None
        self._gdf_crs: Any = None

    def close(self) -> None:
        """Close the open files."""
        for ds in self._handles or []:
            ds.close()
        self._handles = None
        self._gdf = None

    def __enter__(self) -> WeakReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, grid: Grid) -> np.ndarray:
        """(H, W) int64 weak codes on ``grid`` (nodata where there is no label)."""
        if self.spec.kind == "vector":
            from geo_ppp.io.vectors import rasterize_labels

            if self._gdf is None or self._gdf_crs != grid.crs:
                self._gdf = _vector_labels(self.spec.paths[0], self.spec.attribute).to_crs(grid.crs)
                self._gdf_crs = grid.crs
            return rasterize_labels(self._gdf, self.spec.attribute, grid, nodata=self.spec.nodata)
        if self._handles is None:
            self._handles = [rasterio.open(p) for p in self.spec.paths]
        nodata = self.spec.nodata
        out = np.full((grid.height, grid.width), nodata, np.int64)
        for ds in self._handles:
            part = reproject_codes(ds, grid, nodata)
            fill = out == nodata
            out[fill] = part[fill]
        return out
