"""Vector weak labels, areas of interest and polygonised maps: real sample tiles plus synthetic edge cases."""

import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pyproj
import pytest
import rasterio
import shapely
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from rasterio.crs import CRS
from rasterio.features import rasterize, shapes

from geo_ppp.errors import InputError
from geo_ppp.geo.grid import Grid
from geo_ppp.geo.legend import load_legend
from geo_ppp.io import read_labels_on_grid, write_class_map
from geo_ppp.io.polygons import _valid_polygonal, write_polygons
from geo_ppp.io.vectors import aoi_mask, rasterize_labels, read_aoi, read_vector_labels
from tests.conftest import NAIP, NLCD, TILES, TRUTH

UTM17 = CRS.from_epsg(26917)
CHES = load_legend("chesapeake")


def _naip_grid():
    with rasterio.open(NAIP) as ds:
        return Grid(ds.crs, ds.transform, ds.width, ds.height)


@pytest.fixture(scope="module")
def nlcd_polygons():
    """NLCD patch0 polygonised (undissolved, one polygon per connected region) in EPSG:5070."""
    with rasterio.open(NLCD) as ds:
        codes = ds.read(1)
        feats = list(shapes(codes, mask=codes != ds.nodata, transform=ds.transform))
        crs = ds.crs
    gdf = gpd.GeoDataFrame(
        {"nlcd_code": [int(v) for _, v in feats], "source": "nlcd"},
        geometry=[shapely.geometry.shape(g) for g, _ in feats],
        crs=crs.to_wkt(),
    )
    assert gdf.crs.to_epsg() == 5070 and set(gdf.nlcd_code) == {21, 41, 81, 82}
    return gdf


def _save(gdf, path, **kw):
    gdf.to_file(path, engine="pyogrio", **kw)
    return path


@pytest.fixture(scope="module")
def truth_map(tmp_path_factory):
    """sample_tiles/truth/patch0.tif in chesapeake codes, written with write_class_map; (path, codes)."""
    with rasterio.open(TRUTH) as ds:
        raw = ds.read(1)
        nodata = int(ds.nodata)
        grid = Grid(ds.crs, ds.transform, ds.width, ds.height)
    codes = CHES.to_codes(CHES.to_index(raw, extra_nodata=nodata))
    path = tmp_path_factory.mktemp("truth") / "truth_ches.tif"
    write_class_map(path, codes, grid, CHES)
    return path, codes


# ------------------------------------------------------------------------------ read / rasterize labels


@pytest.mark.parametrize("ext", ["gpkg", "geojson", "shp"])
def test_vector_nlcd_agrees_with_raster_nlcd(tmp_path, nlcd_polygons, ext):
    # GeoJSON is written the RFC 7946 way, in lon/lat: a third CRS on the way to the NAIP grid
    gdf = nlcd_polygons.to_crs(4326) if ext == "geojson" else nlcd_polygons
    path = _save(gdf, tmp_path / f"nlcd.{ext}")
    labels = read_vector_labels(path, "nlcd_code")
    assert list(labels.columns) == ["nlcd_code", "geometry"]
    assert labels["nlcd_code"].dtype == np.int64 and len(labels) == len(nlcd_polygons)
    grid = _naip_grid()
    burnt = rasterize_labels(labels, "nlcd_code", grid)
    assert burnt.shape == (256, 256) and burnt.dtype == np.int64
    reference, nodata = read_labels_on_grid(NLCD, grid)
    assert nodata == 0
    agree = (burnt == reference).mean()
    assert agree >= 0.97, agree
    assert set(np.unique(burnt)) <= {0, 21, 41, 81, 82}


def test_read_vector_labels_keeps_attribute_and_drops_empty(tmp_path):
    gdf = gpd.GeoDataFrame(
        {"cls": [41, 21, 82, 11], "note": ["a", "b", "c", "d"]},
        geometry=[shapely.box(0, 0, 1, 1), None, shapely.Polygon(), shapely.box(2, 2, 3, 3)],
        crs="EPSG:26917",
    )
    path = _save(gdf, tmp_path / "l.gpkg")
    out = read_vector_labels(path, "cls")
    assert list(out.columns) == ["cls", "geometry"]
    assert out["cls"].tolist() == [41, 11]
    assert out.crs.to_epsg() == 26917


def test_read_vector_labels_accepts_whole_floats_and_drops_points(tmp_path):
    gdf = gpd.GeoDataFrame(
        {"cls": [41.0, 21.0]}, geometry=[shapely.box(0, 0, 1, 1), shapely.Point(5, 5)], crs="EPSG:26917"
    )
    out = read_vector_labels(_save(gdf, tmp_path / "l.gpkg"), "cls")
    assert out["cls"].dtype == np.int64 and out["cls"].tolist() == [41]


def test_read_vector_labels_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist; check the path"):
        read_vector_labels(tmp_path / "nope.gpkg", "cls")


@pytest.mark.parametrize("path", [NAIP, TILES / "index.json"])
def test_read_vector_labels_not_a_vector(path):
    with pytest.raises(InputError, match="not a vector file GDAL/pyogrio can read.*GeoPackage"):
        read_vector_labels(path, "cls")


def test_read_vector_labels_no_crs(tmp_path):
    gdf = gpd.GeoDataFrame({"cls": [41]}, geometry=[shapely.box(0, 0, 1, 1)])
    with pytest.warns(UserWarning, match="'crs' was not provided"):
        path = _save(gdf, tmp_path / "nocrs.shp")
    assert not path.with_suffix(".prj").exists()
    with pytest.raises(InputError, match=r"no CRS \(for a Shapefile: no .prj file\); set one, e.g. `ogr2ogr"):
        read_vector_labels(path, "cls")


def test_read_vector_labels_missing_attribute_lists_columns(tmp_path, nlcd_polygons):
    path = _save(nlcd_polygons, tmp_path / "l.gpkg")
    with pytest.raises(InputError, match=r"no attribute 'code'.*columns are \['nlcd_code', 'source'\]"):
        read_vector_labels(path, "code")
    with pytest.raises(InputError, match="did you mean 'nlcd_code'"):
        read_vector_labels(path, "NLCD_CODE")


@pytest.mark.parametrize(
    ("values", "shown"),
    [([41.0, 1.5], r"\[1\.5\]"), (["41", "forest"], r"\['forest'\]"), ([41.0, None], r"\[None\]")],
)
def test_read_vector_labels_non_integer_values(tmp_path, values, shown):
    gdf = gpd.GeoDataFrame(
        {"cls": values}, geometry=[shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1)], crs="EPSG:26917"
    )
    path = _save(gdf, tmp_path / "l.gpkg")
    with pytest.raises(InputError, match=r"must hold integer class codes, but 1 feature\(s\) hold " + shown):
        read_vector_labels(path, "cls")


def test_read_vector_labels_no_polygons(tmp_path):
    gdf = gpd.GeoDataFrame(
        {"cls": [41, 21]}, geometry=[shapely.Point(0, 0), shapely.LineString([(0, 0), (1, 1)])], crs="EPSG:26917"
    )
    with pytest.raises(InputError, match=r"holds no polygons \(geometry types: \['LineString', 'Point'\]\)"):
        read_vector_labels(_save(gdf, tmp_path / "l.gpkg"), "cls")


def test_read_vector_labels_several_layers(tmp_path):
    gdf = gpd.GeoDataFrame({"cls": [41]}, geometry=[shapely.box(0, 0, 1, 1)], crs="EPSG:26917")
    path = _save(gdf, tmp_path / "l.gpkg", layer="a")
    _save(gdf.assign(cls=[21]), path, layer="b")
    with pytest.raises(InputError, match=r"has 2 layers \['a', 'b'\]; say which one"):
        read_vector_labels(path, "cls")
    assert read_vector_labels(path, "cls", layer="b")["cls"].tolist() == [21]
    with pytest.raises(InputError, match="no layer 'c'"):
        read_vector_labels(path, "cls", layer="c")


def test_rasterize_same_crs_no_copy_and_windows(monkeypatch, nlcd_polygons):
    grid = _naip_grid()
    labels = nlcd_polygons.to_crs(grid.crs)
    full = rasterize_labels(labels, "nlcd_code", grid)

    def refuse(*args, **kwargs):
        raise AssertionError("a frame already in the grid's CRS must not be reprojected")

    monkeypatch.setattr(gpd.GeoDataFrame, "to_crs", refuse)
    assert np.array_equal(rasterize_labels(labels, "nlcd_code", grid), full)
    # a window of the grid gives the matching slice of the whole
    t = grid.transform
    window = Grid(grid.crs, t @ Affine.translation(64, 96), 100, 50)
    assert np.array_equal(rasterize_labels(labels, "nlcd_code", window), full[96:146, 64:164])
    # a window far away: nothing meets it
    far = Grid(grid.crs, Affine.translation(10_000, 0) @ t, 16, 16)
    assert (rasterize_labels(labels, "nlcd_code", far, nodata=255) == 255).all()


def test_rasterize_uses_only_features_near_the_grid():
    # 10 000 small squares; a 20 x 20 window over a few of them must match burning them all
    xs, ys = np.meshgrid(np.arange(100) * 10.0, np.arange(100) * 10.0)
    boxes = shapely.box(xs.ravel(), ys.ravel(), xs.ravel() + 6, ys.ravel() + 6)
    gdf = gpd.GeoDataFrame({"cls": np.arange(1, boxes.size + 1)}, geometry=boxes, crs="EPSG:26917")
    grid = Grid(UTM17, Affine(1, 0, 495, 0, -1, 515), 20, 20)
    out = rasterize_labels(gdf, "cls", grid)
    reference = rasterize(
        zip(gdf.geometry, gdf.cls, strict=True), out_shape=(20, 20), transform=grid.transform, fill=0, dtype="int64"
    )
    assert np.array_equal(out, reference)
    expected = {0} | {j * 100 + i + 1 for i in (49, 50, 51) for j in (49, 50, 51)}  # the 3 x 3 boxes it meets
    assert set(np.unique(out).tolist()) == expected


def test_rasterize_overlap_later_wins_and_nodata_code():
    gdf = gpd.GeoDataFrame(
        {"cls": [1, 2, 0]},
        geometry=[shapely.box(0, 0, 10, 10), shapely.box(5, 0, 10, 10), shapely.box(0, 0, 2, 10)],
        crs="EPSG:26917",
    )
    out = rasterize_labels(gdf, "cls", Grid(UTM17, Affine(1, 0, 0, 0, -1, 10), 12, 10))
    assert (out[:, :2] == 0).all() and (out[:, 2:5] == 1).all() and (out[:, 5:10] == 2).all()
    assert (out[:, 10:] == 0).all()


def test_rasterize_errors():
    gdf = gpd.GeoDataFrame({"cls": [1]}, geometry=[shapely.box(0, 0, 1, 1)])
    grid = Grid(UTM17, Affine(1, 0, 0, 0, -1, 1), 1, 1)
    with pytest.raises(InputError, match="no CRS; set it"):
        rasterize_labels(gdf, "cls", grid)
    with pytest.raises(InputError, match=r"no attribute 'code'; columns are \['cls', 'geometry'\]"):
        rasterize_labels(gdf.set_crs(26917), "code", grid)


# ------------------------------------------------------------------------------------- areas of interest


def test_read_aoi_bbox_in_grid_crs_and_mask_half():
    grid = _naip_grid()
    left, bottom, right, top = grid.bounds
    mid = (left + right) / 2
    aoi = read_aoi(f"{left},{bottom},{mid},{top}", grid.crs)
    assert aoi.equals(shapely.box(left, bottom, mid, top))
    mask = aoi_mask(aoi, grid)
    assert mask.shape == (256, 256) and mask.dtype == bool
    assert mask.mean() == pytest.approx(0.5, abs=0.01)
    assert mask[:, :127].all() and not mask[:, 129:].any()
    # spaces are fine, and a bbox that covers the grid covers every pixel
    assert aoi_mask(read_aoi(f" {left - 5}, {bottom - 5}, {right + 5}, {top + 5} ", "EPSG:26917"), grid).all()


def test_read_aoi_bbox_in_wgs84():
    grid = _naip_grid()
    left, bottom, right, top = grid.bounds
    inner = (left + 64, bottom + 64, right - 64, top - 64)  # the middle quarter of the tile
    lon0, lat0, lon1, lat1 = pyproj.Transformer.from_crs(26917, 4326, always_xy=True).transform_bounds(*inner)
    aoi = read_aoi(f"{lon0!r},{lat0!r},{lon1!r},{lat1!r}@EPSG:4326", grid.crs)
    # the lon/lat box, back in UTM, holds the middle quarter and not much more
    assert aoi.buffer(1e-6).contains(shapely.box(*inner))
    assert aoi.area == pytest.approx(128 * 128, rel=0.05)
    mask = aoi_mask(aoi, grid)
    assert mask.mean() == pytest.approx(0.25, rel=0.05)
    assert mask[64:192, 64:192].all() and not mask[:60].any() and not mask[:, 196:].any()
    # any CRS string pyproj knows works
    assert read_aoi(f"{lon0},{lat0},{lon1},{lat1}@epsg:4326", grid.crs).equals_exact(aoi, 1e-6)


def test_read_aoi_vector_file(tmp_path):
    grid = _naip_grid()
    left, bottom, right, top = grid.bounds
    parts = [shapely.box(left, bottom, left + 100, top), shapely.box(left + 50, bottom, left + 128, top)]
    gdf = gpd.GeoDataFrame(geometry=parts, crs="EPSG:26917").to_crs(4326)
    path = _save(gdf, tmp_path / "aoi.gpkg")
    aoi = read_aoi(path, grid.crs)
    assert aoi.geom_type == "Polygon"  # the union of the two
    assert aoi.area == pytest.approx(128 * 256, rel=1e-3)
    assert aoi_mask(aoi, grid).mean() == pytest.approx(0.5, abs=0.01)
    assert read_aoi(str(path), "EPSG:26917").equals_exact(aoi, 1e-6)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("1,2,3", "is not 4 numbers; write it as 'minx,miny,maxx,maxy'"),
        ("a,b,c,d", "is not 4 numbers"),
        ("1,2,3,4,5", "is not 4 numbers"),
        ("1,2,nan,4", "is not 4 numbers"),
        ("5,0,1,10", r"has min >= max \(x 5.0 .. 1.0"),
        ("0,3,10,3", "has min >= max"),
        ("0,0,1,1@EPSG:999999", "unknown CRS 'EPSG:999999'.*use a code pyproj knows, e.g. EPSG:4326"),
        ("0,0,1,1@nonsense", "unknown CRS 'nonsense'"),
        ("nope.gpkg", "neither an existing vector file nor a bbox"),
    ],
)
def test_read_aoi_errors(spec, message):
    with pytest.raises(InputError, match=message):
        read_aoi(spec, UTM17)


def test_read_aoi_empty_and_file_errors(tmp_path):
    flat = gpd.GeoDataFrame(geometry=[shapely.Polygon([(0, 0), (1, 1), (2, 2)])], crs="EPSG:26917")
    with pytest.raises(InputError, match=r"is empty \(zero area\)"):
        read_aoi(_save(flat, tmp_path / "flat.gpkg"), UTM17)
    points = gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)], crs="EPSG:26917")
    with pytest.raises(InputError, match="holds no polygons"):
        read_aoi(_save(points, tmp_path / "points.gpkg"), UTM17)
    with pytest.raises(InputError, match="does not exist"):
        read_aoi(tmp_path / "nope.gpkg", UTM17)
    with pytest.warns(UserWarning, match="'crs' was not provided"):
        nocrs = _save(gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)]), tmp_path / "nocrs.shp")
    with pytest.raises(InputError, match="no CRS"):
        read_aoi(nocrs, UTM17)
    with pytest.raises(InputError, match="unknown target CRS"):
        read_aoi("0,0,1,1", "EPSG:999999")


def test_aoi_mask_outside_and_empty():
    grid = _naip_grid()
    assert not aoi_mask(shapely.box(0, 0, 10, 10), grid).any()
    assert not aoi_mask(shapely.Polygon(), grid).any()


# -------------------------------------------------------------------------------------- write_polygons


def test_write_polygons_truth_areas_names(tmp_path, truth_map):
    path, codes = truth_map
    out = write_polygons(tmp_path / "truth.gpkg", path, CHES)
    assert out == tmp_path / "truth.gpkg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["truth.gpkg"]  # no temporary file left
    assert pyogrio.list_layers(out)[:, 0].tolist() == ["landcover", "layer_styles"]  # its QGIS style inside
    gdf = gpd.read_file(out, layer="landcover")
    assert gdf.crs.to_epsg() == 26917
    assert list(gdf.columns) == ["code", "name", "geometry"]
    present = sorted(set(np.unique(codes).tolist()) - {CHES.nodata})
    assert gdf["code"].tolist() == present == [2, 3, 4]
    assert gdf["name"].tolist() == ["tree canopy", "low vegetation", "impervious/built"]
    assert set(gdf.geom_type) == {"MultiPolygon"} and gdf.is_valid.all()
    for code, area in zip(gdf["code"], gdf.area, strict=True):
        pixels = int((codes == code).sum())  # 1 m pixels: 1 m2 each
        assert area == pytest.approx(pixels, rel=0.02), (code, area, pixels)
    # simplification (one pixel by default) drops most staircase vertices
    exact = gpd.read_file(write_polygons(tmp_path / "exact.gpkg", path, CHES, simplify_m=0))
    assert shapely.get_num_coordinates(gdf.geometry).sum() < 0.8 * shapely.get_num_coordinates(exact.geometry).sum()


def test_write_polygons_neighbours_share_borders_and_the_package_styles_itself(tmp_path, truth_map):
    """Simplified as one coverage: no overlap and no gap between classes; GeoPackage 1.2 with its style."""
    import sqlite3
    import xml.etree.ElementTree as ET

    path, codes = truth_map
    out = write_polygons(tmp_path / "truth.gpkg", path, CHES, simplify_m=3.0)  # coarse: borders move a lot
    gdf = gpd.read_file(out, layer="landcover")
    geoms = list(gdf.geometry)
    overlap = sum(a.intersection(b).area for i, a in enumerate(geoms) for b in geoms[i + 1 :])
    union = shapely.union_all(geoms).area
    assert overlap < 1e-6  # per-class simplification overlapped its neighbours by hundreds of m2
    assert union == pytest.approx(sum(g.area for g in geoms), abs=1e-6) == pytest.approx((codes != 0).sum())
    with sqlite3.connect(out) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200  # GeoPackage 1.2
        table, default, qml = db.execute("SELECT f_table_name, useAsDefault, styleQML FROM layer_styles").fetchone()
    assert table == "landcover" and default
    renderer = ET.fromstring(qml.split("\n", 1)[1]).find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "code"
    cats = [(c.get("value"), c.get("label")) for c in renderer.iter("category")]
    assert cats == [(str(c), n) for c, n in zip(CHES.codes, CHES.names, strict=True)]
    fills = [p.get("v") for p in renderer.iter("prop") if p.get("k") == "color"]
    assert fills == ["{},{},{},255".format(*rgb) for rgb in CHES.colors]


def test_write_polygons_blocks_leave_no_seams(tmp_path, truth_map):
    path, codes = truth_map
    one = gpd.read_file(write_polygons(tmp_path / "one.gpkg", path, CHES, simplify_m=0, block=4096))
    tiled = gpd.read_file(write_polygons(tmp_path / "tiled.gpkg", path, CHES, simplify_m=0, block=64))
    assert one["code"].tolist() == tiled["code"].tolist()
    for code, a, b in zip(one["code"], one.geometry, tiled.geometry, strict=True):
        assert a.area == b.area == int((codes == code).sum())
        assert a.symmetric_difference(b).area == 0
        assert abs(len(shapely.get_parts(a)) - len(shapely.get_parts(b))) <= 1
        # no vertex left along the block edges beyond what the outline needs
        assert shapely.get_num_coordinates(a) == shapely.get_num_coordinates(b)
    # simplified, the tiled result keeps the same areas too
    one_s = gpd.read_file(write_polygons(tmp_path / "one_s.gpkg", path, CHES, block=4096))
    tiled_s = gpd.read_file(write_polygons(tmp_path / "tiled_s.gpkg", path, CHES, block=64))
    assert np.allclose(one_s.area, tiled_s.area, rtol=0.01)


def test_write_polygons_errors(tmp_path):
    raw = TRUTH  # Chesapeake 7-class codes (2, 3, 5): 5 is no chesapeake code
    with pytest.raises(InputError, match=r"holds codes \[5\] that legend 'chesapeake' does not have"):
        write_polygons(tmp_path / "x.gpkg", raw, CHES)
    grid = Grid(UTM17, Affine(1, 0, 0, 0, -1, 8), 8, 8)
    empty = write_class_map(tmp_path / "empty.tif", np.zeros((8, 8), np.uint8), grid, CHES)
    with pytest.raises(InputError, match="holds only nodata"):
        write_polygons(tmp_path / "x.gpkg", empty, CHES)
    with pytest.raises(InputError, match="block must be a positive"):
        write_polygons(tmp_path / "x.gpkg", empty, CHES, block=0)
    with pytest.raises(InputError, match="does not exist"):
        write_polygons(tmp_path / "x.gpkg", tmp_path / "nope.tif", CHES)
    assert not (tmp_path / "x.gpkg").exists()


def test_valid_polygonal_keeps_polygons_only():
    overlapping = shapely.MultiPolygon([shapely.box(0, 0, 2, 2), shapely.box(1, 1, 3, 3)])
    bowtie = shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])
    for geom in (overlapping, bowtie, shapely.MultiPolygon([bowtie, shapely.box(5, 5, 6, 6)])):
        assert not geom.is_valid
        fixed = _valid_polygonal(geom)
        assert fixed.is_valid and fixed.geom_type in ("Polygon", "MultiPolygon")
    assert _valid_polygonal(overlapping).area == 7


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    codes=arrays(np.uint8, st.tuples(st.integers(1, 14), st.integers(1, 14)), elements=st.integers(0, 3)),
    block=st.integers(1, 6),
    pixel=st.sampled_from([1.0, 0.6, 30.0]),
)
def test_write_polygons_areas_equal_pixel_counts(codes, block, pixel):
    legend = load_legend("chesapeake")
    h, w = codes.shape
    grid = Grid(UTM17, Affine(pixel, 0, 500_000.3, 0, -pixel, 4_000_000.7), w, h)
    with tempfile.TemporaryDirectory() as tmp:
        tif = write_class_map(Path(tmp) / "m.tif", codes, grid, legend)
        present = sorted(set(np.unique(codes).tolist()) - {0})
        if not present:
            with pytest.raises(InputError, match="only nodata"):
                write_polygons(Path(tmp) / "p.gpkg", tif, legend, simplify_m=0, block=block)
            return
        tiled = gpd.read_file(write_polygons(Path(tmp) / "p.gpkg", tif, legend, simplify_m=0, block=block))
        whole = gpd.read_file(write_polygons(Path(tmp) / "q.gpkg", tif, legend, simplify_m=0, block=64))
    assert tiled["code"].tolist() == present
    assert tiled.is_valid.all()
    for code, a, b in zip(tiled["code"], tiled.geometry, whole.geometry, strict=True):
        assert a.area == pytest.approx((codes == code).sum() * pixel * pixel, rel=1e-9)
        assert a.symmetric_difference(b).area == pytest.approx(0, abs=1e-6 * pixel * pixel)
