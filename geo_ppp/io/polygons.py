"""Polygonised maps: a class map written as dissolved, simplified class polygons (GeoPackage).

:func:`write_polygons` polygonises the map block by block (memory bounded by the block), dissolves
the pieces along the block seams exactly, simplifies all classes as one coverage (shared borders stay
shared) and writes one layer atomically, with its QGIS style inside the GeoPackage.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from affine import Affine
from rasterio.features import shapes
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from geo_ppp.core.atomic import atomic_path
from geo_ppp.errors import InputError
from geo_ppp.geo.legend import Legend, load_legend
from geo_ppp.io.rasters import open_raster, write_errors
from geo_ppp.io.styles import polygon_qml

__all__ = ["LAYER", "write_polygons"]

log = logging.getLogger(__name__)


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


#: the polygons' layer in the GeoPackage
LAYER = "landcover"


def _embed_style(gpkg: Path, legend: Legend) -> None:
    """Store the categorised style as the layer's default in the GeoPackage's ``layer_styles`` table.

    QGIS loads a GeoPackage layer's default style from this table before any ``.qml`` beside the file
    (the raster map's ``landcover.qml`` would otherwise style ``landcover.gpkg`` too).
    """
    record = {
        "f_table_catalog": [""],
        "f_table_schema": [""],
        "f_table_name": [LAYER],
        "f_geometry_column": ["geom"],
        "styleName": [LAYER],
        "styleQML": [polygon_qml(legend)],
        "styleSLD": [""],
        "useAsDefault": [True],
        "description": [f"geo_ppp land cover ({legend.name})"],
        "owner": [""],
        "ui": [""],
        "update_time": [datetime.now(UTC)],
    }
    pyogrio.write_dataframe(pd.DataFrame(record), gpkg, layer="layer_styles", driver="GPKG")


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
    geometry. The parts are moved to the map's CRS and all parts of all classes are simplified
    together as one polygon coverage (``shapely.coverage_simplify``), so neighbouring classes keep
    exactly shared borders: no overlap and no gap between them. The GeoPackage is version 1.2 (QGIS
    3.22's GDAL opens it without a warning) and carries its categorised style in ``layer_styles``.

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
    with open_raster(class_map_path, "class map") as ds:
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

    parts: list[shapely.Polygon] = []
    part_codes: list[int] = []
    for code in present_codes:
        mine = inner.pop(code, [])
        if code in seam:
            mine.extend(_dissolve_pieces(seam.pop(code)))
        parts += mine
        part_codes += [code] * len(mine)
    pieces = _as_array(parts)
    if tolerance > 0:
        # the parts of all classes form a coverage; with a vertex at every pixel corner, the edges two
        # neighbours share match vertex for vertex, and simplifying them as one coverage moves each
        # shared edge once, for both sides: neighbours keep exact common borders (no overlap, no gap)
        pieces = shapely.coverage_simplify(
            shapely.transform(shapely.segmentize(pieces, 1.0), to_world), tolerance
        )
    else:
        pieces = shapely.transform(pieces, to_world)
    codes_of = np.asarray(part_codes)
    geoms = []
    for code in present_codes:
        merged = shapely.multipolygons(pieces[codes_of == code])
        if not merged.is_valid:  # parts of one class that meet at a corner point
            merged = _valid_polygonal(merged)
        geoms.append(merged)
    names = [legend.names[legend.codes.index(c)] for c in present_codes]
    frame = gpd.GeoDataFrame(
        {"code": np.asarray(present_codes, dtype=np.int64), "name": names},
        geometry=geoms,
        crs=crs.to_wkt(),
    )
    with atomic_path(out_path) as tmp, write_errors(out_path):
        tmp.unlink()  # GDAL creates the GeoPackage itself
        # GeoPackage 1.2: GDAL >= 3.6 writes 1.4 by default, which QGIS 3.22's GDAL warns about
        frame.to_file(
            tmp, layer=LAYER, driver="GPKG", engine="pyogrio", promote_to_multi=True,
            dataset_options={"VERSION": "1.2"},
        )  # fmt: skip
        _embed_style(tmp, legend)
    return out_path
