"""Vectors read: polygon weak labels and areas of interest.

* :func:`read_vector_labels` reads polygons with an integer class attribute (GeoPackage, Shapefile,
  GeoJSON, anything GDAL/pyogrio reads) and checks what rasterising them needs;
* :func:`rasterize_labels` burns them onto a :class:`~geo_ppp.geo.grid.Grid` (or a window of one),
  touching only the features that overlap it, so a county-sized file stays fast window by window;
* :func:`read_aoi` / :func:`aoi_mask` turn an area of interest (a vector file or a bbox string) into a
  geometry and a pixel mask.

Writing class polygons is :mod:`geo_ppp.io.polygons`.

Every reader raises :class:`~geo_ppp.errors.InputError` saying what is wrong and how to fix it.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyproj
import shapely
from pyproj.exceptions import CRSError
from rasterio.features import rasterize
from shapely.geometry.base import BaseGeometry

from geo_ppp.errors import InputError
from geo_ppp.geo.grid import Grid

__all__ = ["aoi_mask", "rasterize_labels", "read_aoi", "read_vector_labels"]

log = logging.getLogger(__name__)

_POLYGONAL = ("Polygon", "MultiPolygon")
_BBOX_HELP = "'minx,miny,maxx,maxy' optionally followed by '@CRS', e.g. '-80.7,37.6,-80.6,37.7@EPSG:4326'"


# ------------------------------------------------------------------------------------------ helpers


def _to_pyproj(crs: Any) -> pyproj.CRS:
    """A pyproj CRS from a rasterio CRS, a pyproj CRS, an EPSG code or any string pyproj accepts."""
    return crs if isinstance(crs, pyproj.CRS) else pyproj.CRS.from_user_input(crs)


def _vector_layer(path: str | os.PathLike[str], what: str, layer: str | int | None) -> tuple[str, list[str]]:
    """Check a vector file without reading its features; returns (layer name, field names).

    Checks existence, readability, the layer choice and the CRS.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} {p} does not exist; check the path")
    try:
        names = [str(row[0]) for row in pyogrio.list_layers(p)]
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise InputError(
            f"{what} {p} is not a vector file GDAL/pyogrio can read ({exc}); give a GeoPackage (.gpkg), "
            "Shapefile (.shp with its .shx/.dbf/.prj) or GeoJSON"
        ) from exc
    if not names:
        raise InputError(f"{what} {p} holds no vector layer; give a file with a polygon layer")
    if layer is None:
        if len(names) > 1:
            raise InputError(
                f"{what} {p} has {len(names)} layers {names}; say which one to use (layer=...), or extract "
                f"it, e.g. `ogr2ogr out.gpkg {p} {names[0]}`"
            )
        name = names[0]
    elif isinstance(layer, int) and 0 <= layer < len(names):
        name = names[layer]
    elif isinstance(layer, str) and layer in names:
        name = layer
    else:
        raise InputError(f"{what} {p} has no layer {layer!r}; its layers are {names}")
    info = pyogrio.read_info(p, layer=name)
    if info["crs"] is None:
        raise InputError(
            f"{what} {p} has no CRS (for a Shapefile: no .prj file); set one, e.g. "
            f"`ogr2ogr -a_srs EPSG:4326 fixed.gpkg {p}` (use the CRS the coordinates are really in)"
        )
    if info.get("features") == 0:
        raise InputError(f"{what} {p} holds no features (layer {name!r} is empty); give a file with polygons")
    return name, [str(f) for f in info["fields"]]


def _read_frame(path: str | os.PathLike[str], layer: str, columns: list[str], what: str) -> gpd.GeoDataFrame:
    """Read a vector layer; geometries GEOS cannot build (an unclosed ring...) become a clear error."""
    try:
        return gpd.read_file(path, layer=layer, columns=columns, engine="pyogrio")
    except (shapely.errors.ShapelyError, ValueError) as exc:
        raise InputError(
            f"{what} {path} holds a geometry that cannot be read ({str(exc).splitlines()[0]}), e.g. a "
            f"polygon ring that is not closed; repair the file, e.g. `ogr2ogr -makevalid fixed.gpkg {path}`"
        ) from None


def _repair(gdf: gpd.GeoDataFrame, what: str) -> gpd.GeoDataFrame:
    """Make invalid polygons (bow-ties, self-intersections) valid with shapely, saying how many."""
    geoms = gdf.geometry.to_numpy()
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        log.warning(
            "%s: %d of %d polygons were invalid (self-intersecting, e.g. bow-ties) and were repaired "
            "with shapely.make_valid; check them if the weak labels look wrong there",
            what, int(invalid.sum()), len(geoms),
        )
        fixed = geoms.copy()
        fixed[invalid] = shapely.make_valid(geoms[invalid])
        gdf = gdf.set_geometry(fixed)
    return gdf


def _drop_empty(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    geoms = gdf.geometry.array
    keep = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    return gdf if keep.all() else gdf[keep]


def _polygonal(gdf: gpd.GeoDataFrame) -> np.ndarray:
    return np.isin(np.asarray(gdf.geom_type, dtype=object), _POLYGONAL)


def _is_null(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _integer_codes(values: pd.Series, what: str, attribute: str) -> np.ndarray:
    """Attribute values as int64, or an InputError naming the values that are not integers."""
    if values.dtype.kind in "iu" and not values.isna().any():  # pandas' nullable Int64 may hold NA
        return values.to_numpy(dtype=np.int64)
    if values.dtype.kind == "b":
        raise InputError(
            f"{what}: attribute {attribute!r} holds booleans, not integer class codes; store the class code "
            "(e.g. the NLCD code) in an integer column"
        )
    numbers = pd.to_numeric(values, errors="coerce")
    as_float = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    ok = np.isfinite(as_float) & (np.round(as_float) == as_float)
    if not ok.all():
        bad_values = pd.unique(values[~ok].astype(object))
        shown = [None if _is_null(v) else v for v in bad_values[:10]]
        more = f" and {len(bad_values) - 10} more" if len(bad_values) > 10 else ""
        raise InputError(
            f"{what}: attribute {attribute!r} must hold integer class codes, but {int((~ok).sum())} "
            f"feature(s) hold {shown}{more} (nulls show as None); map class names to integer codes (e.g. "
            "NLCD codes) and fill or delete features without a class"
        )
    return as_float.astype(np.int64)


# -------------------------------------------------------------------------------------- weak labels


def read_vector_labels(
    path: str | os.PathLike[str], attribute: str, *, layer: str | int | None = None
) -> gpd.GeoDataFrame:
    """Read polygon weak labels whose ``attribute`` holds integer class codes (e.g. NLCD codes).

    Only the attribute and the geometries are read. Features with no or empty geometry are dropped,
    and so are points and lines when the layer also holds polygons.

    Args:
        path: a GeoPackage, Shapefile, GeoJSON or any vector file GDAL/pyogrio reads.
        attribute: the column with the class codes.
        layer: the layer to read (name or index); needed only when the file has several.

    Returns:
        A GeoDataFrame with columns ``[attribute, "geometry"]``, the codes as int64, in the file's CRS.

    Raises:
        InputError: the file is missing or unreadable, has several layers and none was chosen, has no
            CRS, lacks ``attribute``, holds non-integer codes, or holds no polygons.
    """
    what = "vector labels"
    p = Path(path)
    # check the attribute against the layer's fields before reading: a clear error, and only that one
    # column is read from what may be a large file
    name, fields = _vector_layer(p, what, layer)
    if attribute not in fields:
        near = [f for f in fields if f.lower() == attribute.lower()]
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        trunc = " Shapefiles cut column names to 10 characters." if p.suffix.lower() == ".shp" else ""
        raise InputError(
            f"{what} {p} has no attribute {attribute!r}{hint}; its columns are {fields}. Pass the column "
            f"that holds the integer class codes.{trunc}"
        )
    gdf = _drop_empty(_read_frame(p, name, [attribute], what))
    polygonal = _polygonal(gdf)
    if not polygonal.any():
        kinds = sorted(set(gdf.geom_type)) if len(gdf) else []
        raise InputError(
            f"{what} {p} holds no polygons (geometry types: {kinds or 'none, or all empty'}); weak labels "
            "must be polygons (buffer points or lines into polygons first, e.g. with `ogr2ogr -dialect "
            "sqlite -sql 'SELECT ST_Buffer(geometry, 15) ...'`)"
        )
    if not polygonal.all():
        gdf = gdf[polygonal]
    gdf = _repair(gdf, f"{what} {p}")
    polygonal = _polygonal(gdf)  # make_valid may return collections holding lines too
    if not polygonal.all():
        def areal(geom: BaseGeometry) -> BaseGeometry:
            return shapely.union_all([g for g in shapely.get_parts(geom) if g.geom_type in _POLYGONAL])

        parts = [g if ok else areal(g) for g, ok in zip(gdf.geometry.to_numpy(), polygonal, strict=True)]
        gdf = _drop_empty(gdf.set_geometry(parts))
    codes = _integer_codes(gdf[attribute], f"{what} {p}", attribute)
    return gpd.GeoDataFrame({attribute: codes}, geometry=gdf.geometry.to_numpy(), crs=gdf.crs)


def _grid_bounds_in(grid: Grid, crs: pyproj.CRS) -> tuple[float, float, float, float]:
    """The grid's bounds (plus one pixel) in ``crs``, densified so curved edges stay inside."""
    left, bottom, right, top = grid.bounds
    pad = max(abs(grid.transform.a), abs(grid.transform.e), abs(grid.transform.b), abs(grid.transform.d))
    left, bottom, right, top = left - pad, bottom - pad, right + pad, top + pad
    grid_crs = _to_pyproj(grid.crs)
    if grid_crs == crs:
        return left, bottom, right, top
    tf = pyproj.Transformer.from_crs(grid_crs, crs, always_xy=True)
    return tf.transform_bounds(left, bottom, right, top, densify_pts=21)


def rasterize_labels(gdf: gpd.GeoDataFrame, attribute: str, grid: Grid, nodata: int = 0) -> np.ndarray:
    """Burn polygon class codes onto a grid (or a window of one); uncovered pixels get ``nodata``.

    Only features whose bounding box meets the grid are used (spatial-index query, in the frame's own
    CRS), and only those are reprojected to ``grid.crs``. The spatial index is built once and cached
    on ``gdf``, so rasterising many windows of one frame is cheap; reproject the frame once with
    ``gdf.to_crs(grid.crs)`` beforehand to avoid reprojecting per window: a frame already in the grid's
    CRS is used as is, without a copy.

    A pixel takes the code of the polygon that contains its centre (``all_touched=False``); where
    polygons overlap, the later feature wins. Codes equal to ``nodata`` are burnt as nodata, i.e.
    such polygons mark pixels without a label.

    Args:
        gdf: polygons with integer codes in ``attribute`` (as :func:`read_vector_labels` returns).
        attribute: the class-code column.
        grid: the target grid.
        nodata: the code for pixels no polygon covers.

    Returns:
        int64 codes of shape (grid.height, grid.width); all ``nodata`` when no polygon meets the grid.

    Raises:
        InputError: ``gdf`` has no CRS or no ``attribute`` column.
    """
    if gdf.crs is None:
        raise InputError(
            "vector labels have no CRS; set it with gdf.set_crs(...) to the CRS of the coordinates"
        )
    if attribute not in gdf.columns:
        raise InputError(
            f"vector labels have no attribute {attribute!r}; columns are {list(gdf.columns)}; pass the "
            "column with the class codes"
        )
    out_shape = (grid.height, grid.width)
    if len(gdf) == 0:
        return np.full(out_shape, nodata, dtype=np.int64)
    grid_crs = _to_pyproj(grid.crs)
    idx = gdf.sindex.query(shapely.box(*_grid_bounds_in(grid, gdf.crs)))
    if idx.size == 0:
        return np.full(out_shape, nodata, dtype=np.int64)
    subset = gdf.iloc[np.sort(idx)]  # file order, so "later feature wins" holds
    if subset.crs != grid_crs:
        subset = subset.to_crs(grid_crs)
    values = _integer_codes(subset[attribute], "vector labels", attribute)
    geoms = subset.geometry.to_numpy()
    keep = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    if not keep.any():
        return np.full(out_shape, nodata, dtype=np.int64)
    return rasterize(
        zip(geoms[keep], values[keep].tolist(), strict=True),
        out_shape=out_shape,
        transform=grid.transform,
        fill=nodata,
        all_touched=False,
        dtype="int64",
    )


# ------------------------------------------------------------------------------------ area of interest


def _parse_bbox(text: str, crs: pyproj.CRS) -> BaseGeometry:
    box_text, _, crs_text = text.partition("@")
    parts = [s.strip() for s in box_text.split(",")]
    try:
        numbers = [float(s) for s in parts]
    except ValueError:
        numbers = []
    if len(parts) != 4 or len(numbers) != 4 or not all(math.isfinite(v) for v in numbers):
        raise InputError(f"AOI bbox {text!r} is not 4 numbers; write it as {_BBOX_HELP}")
    minx, miny, maxx, maxy = numbers
    if minx >= maxx or miny >= maxy:
        raise InputError(
            f"AOI bbox {text!r} has min >= max (x {minx} .. {maxx}, y {miny} .. {maxy}); the order is "
            f"minx,miny,maxx,maxy (for a geographic CRS: lon,lat,lon,lat), e.g. {_BBOX_HELP}"
        )
    box = shapely.box(minx, miny, maxx, maxy)
    if not crs_text.strip():
        return box
    try:
        src = pyproj.CRS.from_user_input(crs_text.strip())
    except CRSError as exc:
        raise InputError(
            f"AOI bbox {text!r}: unknown CRS {crs_text.strip()!r} ({exc}); use a code pyproj knows, e.g. "
            "EPSG:4326"
        ) from exc
    if src == crs:
        return box
    # densify so that the box's straight edges follow their curved image in the target CRS
    dense = shapely.segmentize(box, max(maxx - minx, maxy - miny) / 64)
    tf = pyproj.Transformer.from_crs(src, crs, always_xy=True)
    out = shapely.transform(dense, lambda xy: np.column_stack(tf.transform(xy[:, 0], xy[:, 1])))
    if not np.isfinite(shapely.get_coordinates(out)).all():
        raise InputError(
            f"AOI bbox {text!r} cannot be transformed from {src.to_string()} to {crs.to_string()} (outside "
            "the area that CRS covers); check the coordinates and their CRS (lon,lat order for EPSG:4326)"
        )
    return out


def read_aoi(spec: str | os.PathLike[str], crs: Any, *, layer: str | int | None = None) -> BaseGeometry:
    """An area of interest as one shapely geometry in ``crs``.

    Args:
        spec: the path of a vector file (the union of all its polygons is used), or a bbox string
            ``"minx,miny,maxx,maxy"`` in ``crs``, optionally followed by ``"@CRS"`` (``"@EPSG:4326"``,
            or any CRS string pyproj accepts) when it is in another CRS. x comes first: lon,lat for
            geographic CRSs.
        crs: the CRS to return the geometry in (rasterio or pyproj CRS, or a string such as
            ``"EPSG:26917"``).
        layer: the layer of a vector file with several layers.

    Returns:
        A valid, non-empty (multi)polygon in ``crs``.

    Raises:
        InputError: malformed bbox (not 4 numbers, min >= max), unknown CRS, missing or unreadable file,
            a file without CRS or polygons, or an empty area.
    """
    try:
        target = _to_pyproj(crs)
    except CRSError as exc:
        raise InputError(f"unknown target CRS {crs!r} for the AOI ({exc}); give e.g. 'EPSG:26917'") from exc
    text = os.fspath(spec)
    is_file = not isinstance(spec, str) or Path(text).exists()
    if not is_file and "," not in text:
        raise InputError(
            f"AOI {text!r} is neither an existing vector file nor a bbox; check the path, or write a bbox "
            f"as {_BBOX_HELP}"
        )
    if is_file:
        name, _ = _vector_layer(text, "AOI", layer)
        gdf = _drop_empty(_read_frame(text, name, [], "AOI"))
        gdf = gdf[_polygonal(gdf)] if len(gdf) else gdf
        if len(gdf) == 0:
            raise InputError(f"AOI {text} holds no polygons; give a file with the area as polygon(s)")
        if gdf.crs != target:
            gdf = gdf.to_crs(target)
        geom = shapely.union_all(shapely.make_valid(gdf.geometry.to_numpy()))
    else:
        geom = _parse_bbox(text, target)
    geom = shapely.make_valid(geom)
    if geom.is_empty or geom.area <= 0:
        raise InputError(f"AOI {text!r} is empty (zero area); give polygons or a bbox that enclose an area")
    return geom


def aoi_mask(geometry: BaseGeometry, grid: Grid) -> np.ndarray:
    """Pixels of ``grid`` (or a window) whose centre lies in ``geometry`` (given in ``grid.crs``).

    Returns:
        bool array of shape (grid.height, grid.width); all False when the AOI misses the grid.
    """
    out_shape = (grid.height, grid.width)
    if geometry is None or geometry.is_empty:
        return np.zeros(out_shape, dtype=bool)
    pad = max(abs(grid.transform.a), abs(grid.transform.e), abs(grid.transform.b), abs(grid.transform.d))
    left, bottom, right, top = grid.bounds
    # a country-sized AOI costs nothing on a small window once clipped to it
    clipped = shapely.clip_by_rect(geometry, left - pad, bottom - pad, right + pad, top + pad)
    if clipped.is_empty:
        return np.zeros(out_shape, dtype=bool)
    burnt = rasterize([(clipped, 1)], out_shape=out_shape, transform=grid.transform, fill=0, dtype="uint8")
    return burnt.astype(bool)
