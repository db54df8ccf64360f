"""Vectors: polygon weak labels, areas of interest, and polygonised maps.

* :func:`read_vector_labels` reads polygons with an integer class attribute (GeoPackage, Shapefile,
  GeoJSON, anything GDAL/pyogrio reads) and checks what rasterising them needs;
* :func:`rasterize_labels` burns them onto a :class:`~geo_ppp.io.rasters.Grid` (or a window of one),
  touching only the features that overlap it, so a county-sized file stays fast window by window;
* :func:`read_aoi` / :func:`aoi_mask` turn an area of interest (a vector file or a bbox string) into a
  geometry and a pixel mask;
* :func:`write_polygons` polygonises a class map block by block into a dissolved GeoPackage layer.

Every reader raises :class:`~geo_ppp.errors.InputError` saying what is wrong and how to fix it.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyproj
import shapely
from affine import Affine
from pyproj.exceptions import CRSError
from rasterio.features import rasterize, shapes
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from geo_ppp.core.atomic import atomic_path
from geo_ppp.errors import InputError
from geo_ppp.io.rasters import Grid, _open
from geo_ppp.landcover.legends import Legend, load_legend

__all__ = ["aoi_mask", "rasterize_labels", "read_aoi", "read_vector_labels", "write_polygons"]

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


# ------------------------------------------------------------------------------------ polygonised maps


def _as_array(geoms: list[Any]) -> np.ndarray:
    out = np.empty(len(geoms), dtype=object)
    out[:] = geoms
    return out


def _polygon(rings: list[list[tuple[float, float]]]) -> shapely.Polygon:
    """A polygon from GeoJSON-style rings, without shapely's slow per-coordinate Python path."""
    shell = shapely.linearrings(np.asarray(rings[0], dtype=np.float64))
    holes = [shapely.linearrings(np.asarray(r, dtype=np.float64)) for r in rings[1:]]
    return shapely.polygons(shell, holes=holes or None)


def _drop_collinear(ring: shapely.LinearRing) -> shapely.LinearRing:
    """Remove the vertices inside straight runs of a ring whose edges are all horizontal or vertical."""
    pts = shapely.get_coordinates(ring)[:-1]
    prev, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
    inside = ((prev[:, 0] == pts[:, 0]) & (pts[:, 0] == nxt[:, 0])) | (
        (prev[:, 1] == pts[:, 1]) & (pts[:, 1] == nxt[:, 1])
    )
    if not inside.any():
        return ring
    kept = pts[~inside]
    return shapely.linearrings(np.vstack([kept, kept[:1]]))


def _dissolve_pieces(pieces: list[shapely.Polygon]) -> list[shapely.Polygon]:
    """Dissolve same-class polygons from different blocks (pixel coordinates) along the block seams.

    A piece's holes lie inside its own block, away from every seam, so only the shells need a union;
    the holes are put back into the part that contains their piece. The shells of pieces that reach
    a seam never overlap, so they form a coverage: with a vertex at every pixel corner (segmentize)
    their shared seam edges match vertex for vertex and ``shapely.coverage_union_all`` dissolves them
    exactly, much faster than ``shapely.union_all`` (which also has to place thousands of holes).
    """
    arr = _as_array(pieces)
    shells = shapely.polygons(shapely.get_exterior_ring(arr))
    merged = shapely.get_parts(shapely.coverage_union_all(shapely.segmentize(shells, 1.0)))
    holes: list[list[shapely.LinearRing]] = [
        [_drop_collinear(r) for r in shapely.get_interior_ring(m, range(shapely.get_num_interior_rings(m)))]
        for m in merged
    ]
    with_holes = np.flatnonzero(shapely.get_num_interior_rings(arr) > 0)
    if with_holes.size:
        probes = shapely.STRtree(shapely.point_on_surface(shells[with_holes]))
        part_idx, probe_idx = probes.query(merged, predicate="contains")
        for part, probe in zip(part_idx.tolist(), probe_idx.tolist(), strict=True):
            piece = arr[with_holes[probe]]
            holes[part].extend(shapely.get_interior_ring(piece, range(shapely.get_num_interior_rings(piece))))
    return [
        shapely.polygons(_drop_collinear(shapely.get_exterior_ring(m)), holes=h or None)
        for m, h in zip(merged, holes, strict=True)
    ]


def _valid_polygonal(geom: BaseGeometry) -> BaseGeometry:
    """Make valid, uniting overlapping parts, and keep only the polygonal result (no stray lines)."""
    parts = shapely.get_parts(shapely.make_valid(geom, method="structure", keep_collapsed=False))
    return shapely.union_all(parts[np.isin(shapely.get_type_id(parts), (3, 6))])


def write_polygons(
    out_path: str | os.PathLike[str],
    class_map_path: str | os.PathLike[str],
    legend: Legend | str,
    *,
    simplify_m: float | None = None,
    block: int = 2048,
) -> Path:
    """Polygonise a class-code GeoTIFF into a GeoPackage: one dissolved (multi)polygon per class.

    The map is read and polygonised (4-connected regions) in ``block`` x ``block`` windows; pixels
    equal to the raster's nodata (the legend's when it has none) are left out. Memory holds one block
    of pixels plus the polygons, whose size grows with the map's boundary length, not its area.
    Polygonising happens in pixel coordinates, where block edges are exact integers: only the
    polygons that reach an inner block edge are dissolved (coverage union of their outlines, see
    :func:`_dissolve_pieces`), which removes every seam exactly, so any ``block`` gives the same
    geometry. Each part is then moved to the map's CRS and simplified with ``preserve_topology=True``
    (part by part: GEOS's cost grows faster than linearly with the holes of one geometry). Classes
    are simplified independently, so neighbouring classes may overlap or leave slivers up to the
    tolerance along their shared borders.

    Args:
        out_path: the GeoPackage to write (layer ``"landcover"``); replaced atomically if it exists.
        class_map_path: a single-band integer class-code GeoTIFF (as :func:`write_class_map` writes).
        legend: the legend the codes belong to (a :class:`Legend` or its name); gives the names.
        simplify_m: simplification tolerance in CRS units (metres); default one pixel; 0 keeps the
            exact pixel outlines.
        block: the block size in pixels (the result does not depend on it).

    Returns:
        ``out_path`` as a Path. Columns ``code`` (int), ``name`` (str) and the geometry, one row per
        class present, in legend order.

    Raises:
        InputError: the map is not an integer raster with CRS and transform, holds codes the legend
            does not know, or holds only nodata; ``block`` < 1 or ``simplify_m`` < 0.
    """
    legend = load_legend(legend)
    out_path = Path(out_path)
    if block < 1:
        raise InputError(f"block must be a positive number of pixels, not {block}")
    if simplify_m is not None and not simplify_m >= 0:
        raise InputError(f"simplify_m must be >= 0 (metres), not {simplify_m}; 0 keeps pixel outlines")
    known = set(legend.codes)
    # pixel-space polygons per class: those that reach an inner block edge are dissolved, the rest pass
    seam: dict[int, list[shapely.Polygon]] = defaultdict(list)
    inner: dict[int, list[shapely.Polygon]] = defaultdict(list)
    with _open(class_map_path, "class map") as ds:
        dtype = np.dtype(ds.dtypes[0])
        if dtype.kind not in "iu":
            raise InputError(f"class map {class_map_path} must hold integer class codes, not {dtype}")
        nodata = int(ds.nodata) if ds.nodata is not None else legend.nodata
        transform, crs = ds.transform, ds.crs
        width, height = ds.width, ds.height
        for row in range(0, height, block):
            for col in range(0, width, block):
                w, h = min(block, width - col), min(block, height - row)
                data = ds.read(1, window=Window(col, row, w, h))
                valid = data != nodata
                if not valid.any():
                    continue
                unknown = sorted(set(np.unique(data[valid]).tolist()) - known)
                if unknown:
                    raise InputError(
                        f"class map {class_map_path} holds codes {unknown} that legend {legend.name!r} does "
                        f"not have (codes {list(legend.codes)}, nodata {nodata}); pass the legend the map "
                        "was written with"
                    )
                if data.dtype not in (np.uint8, np.uint16, np.int16, np.int32):
                    data = data.astype(np.int32)  # the types GDAL polygonises
                # whole-raster pixel coordinates: exact integers, identical on both sides of a seam
                px = Affine.translation(col, row)
                for geojson, value in shapes(data, mask=valid, connectivity=4, transform=px):
                    poly = _polygon(geojson["coordinates"])
                    minx, miny, maxx, maxy = poly.bounds
                    on_seam = (
                        (minx == col > 0)
                        or (miny == row > 0)
                        or (maxx == col + w < width)
                        or (maxy == row + h < height)
                    )
                    (seam if on_seam else inner)[int(value)].append(poly)
                del data, valid
    present_codes = [c for c in legend.codes if c in seam or c in inner]
    if not present_codes:
        raise InputError(f"class map {class_map_path} holds only nodata ({nodata}); nothing to polygonise")
    tolerance = math.hypot(transform.a, transform.d) if simplify_m is None else float(simplify_m)
    a, b, c, d, e, f = transform[:6]

    def to_world(xy: np.ndarray) -> np.ndarray:
        return np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f])

    geoms = []
    for code in present_codes:
        parts = inner.pop(code, [])
        if code in seam:
            parts.extend(_dissolve_pieces(seam.pop(code)))
        world = shapely.transform(_as_array(parts), to_world)
        if tolerance > 0:
            # part by part: parts of one class meet at most at corner points, and the cost of a
            # topology-preserving simplification grows faster than linearly with the geometry's size
            world = shapely.simplify(world, tolerance, preserve_topology=True)
        merged = shapely.multipolygons(world)
        if tolerance > 0 and not merged.is_valid:  # simplified parts that met at a corner may overlap
            merged = _valid_polygonal(merged)
        geoms.append(merged)
    names = [legend.names[legend.codes.index(c)] for c in present_codes]
    frame = gpd.GeoDataFrame(
        {"code": np.asarray(present_codes, dtype=np.int64), "name": names},
        geometry=geoms,
        crs=crs.to_wkt(),
    )
    with atomic_path(out_path) as tmp:
        tmp.unlink()  # GDAL creates the GeoPackage itself
        frame.to_file(tmp, layer="landcover", driver="GPKG", engine="pyogrio", promote_to_multi=True)
    return out_path
