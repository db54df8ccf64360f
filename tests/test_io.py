"""Reading imagery and labels, reprojecting weak labels, writing class maps: real sample tiles."""


import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geo_ppp.errors import GeoPPPError, InputError
from geo_ppp.geo.grid import Grid
from geo_ppp.geo.legend import load_legend
from geo_ppp.io import read_class_raster, read_image, read_labels_on_grid, write_class_map
from tests.conftest import NAIP, NLCD, ROOT, TRUTH, sample_tile

PATCHES_1M = ROOT.parent / "shared" / "data" / "chesapeake-wv-patches"
UTM17 = CRS.from_epsg(26917)
ALBERS = CRS.from_epsg(5070)


def from_origin(west, north, xres, yres):
    return Affine(xres, 0.0, west, 0.0, -yres, north)


def _naip_grid():
    with rasterio.open(NAIP) as ds:
        return Grid(ds.crs, ds.transform, ds.width, ds.height)


# ----------------------------------------------------------------------------------------- read_image


def test_read_image_sample_tile():
    data, valid, grid = read_image(NAIP)
    assert data.shape == (4, 256, 256) and data.dtype == np.float32
    assert valid.shape == (256, 256) and valid.dtype == bool and valid.all()
    assert grid.crs == UTM17 and (grid.width, grid.height) == (256, 256)
    assert grid.transform.a == 1.0 and grid.transform.e == -1.0
    assert 0 <= data.min() and data.max() <= 255 and data.std() > 5
    with rasterio.open(NAIP) as ds:
        assert np.array_equal(data, ds.read().astype(np.float32))
    left, bottom, right, top = grid.bounds
    assert (right - left, top - bottom) == (256.0, 256.0)
    assert grid.to_dict()["crs"] == "EPSG:26917"
    rgb, _, _ = read_image(NAIP, bands=(3, 2, 1))
    assert np.array_equal(rgb[0], data[2])


def test_read_image_scales_uint16(tmp_path, make_geotiff):
    rng = np.random.default_rng(0)
    img = rng.integers(1000, 5000, size=(3, 32, 32)).astype(np.uint16)
    path = make_geotiff(tmp_path / "u16.tif", img, transform=from_origin(500000, 4000000, 1, 1))
    data, valid, _ = read_image(path)
    assert data.dtype == np.float32 and valid.all()
    assert data.min() == 0.0 and data.max() == 255.0
    # order preserved: brighter input pixels stay brighter
    a, b = np.unravel_index(img[0].argmin(), img[0].shape), np.unravel_index(img[0].argmax(), img[0].shape)
    assert data[0][a] < data[0][b]


def test_read_image_not_a_raster(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("this is not a GeoTIFF\n")
    with pytest.raises(InputError, match="not a raster GDAL can read"):
        read_image(path)
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "missing.tif")


def test_read_image_no_crs(tmp_path, make_geotiff):
    img = np.zeros((3, 16, 16), np.uint8)
    path = make_geotiff(tmp_path / "nocrs.tif", img, crs=None, transform=from_origin(500000, 4000000, 1, 1))
    with pytest.raises(InputError, match="has no CRS.*gdal_edit"):
        read_image(path)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_read_image_no_geotransform(tmp_path, make_geotiff):
    path = make_geotiff(tmp_path / "pixels.tif", np.zeros((3, 16, 16), np.uint8))
    with pytest.raises(InputError, match="no geotransform"):
        read_image(path)


def test_read_image_two_bands(tmp_path, make_geotiff):
    path = make_geotiff(tmp_path / "two.tif", np.zeros((2, 16, 16), np.uint8), transform=from_origin(0, 16, 1, 1))
    with pytest.raises(InputError, match=r"2 band\(s\).*R, G, B"):
        read_image(path)


def test_read_image_float64(tmp_path, make_geotiff):
    path = make_geotiff(tmp_path / "f64.tif", np.zeros((3, 16, 16)), transform=from_origin(0, 16, 1, 1))
    with pytest.raises(InputError, match="dtype float64.*gdal_translate"):
        read_image(path)


def test_read_image_nans(tmp_path, make_geotiff):
    img = np.ones((3, 16, 16), np.float32)
    img[1, 2, 3] = img[0, 0, 0] = np.nan
    path = make_geotiff(tmp_path / "nan.tif", img, transform=from_origin(0, 16, 1, 1))
    with pytest.raises(InputError, match="2 NaN values"):
        read_image(path)


def test_read_image_bad_band_selection():
    with pytest.raises(InputError, match=r"bands \[5\] out of range"):
        read_image(NAIP, bands=(1, 2, 5))


# --------------------------------------------------------------------------------------- weak labels


def test_real_nlcd_onto_naip_grid():
    grid = _naip_grid()
    codes, nodata = read_labels_on_grid(NLCD, grid)
    with rasterio.open(NLCD) as ds:
        assert ds.crs == ALBERS and ds.res == (30.0, 30.0)
        in_file = set(np.unique(ds.read(1)).tolist())
    assert nodata == 0 and codes.shape == (256, 256)
    assert set(np.unique(codes).tolist()) <= in_file
    assert (codes == nodata).mean() < 0.01  # the 30 m grid covers the patch
    assert {21, 41, 81, 82} <= set(np.unique(codes).tolist())
    # NLCD forest is mostly truth tree canopy (Chesapeake code 2)
    truth, truth_nodata, truth_grid = read_class_raster(TRUTH, "truth")
    assert truth_nodata == 15 and truth_grid.crs == grid.crs and truth_grid.transform == grid.transform
    assert (truth[codes == 41] == 2).mean() > 0.8
    # and pure-forest patches come back as forest
    codes2, _ = read_labels_on_grid(sample_tile("nlcd", 2), _grid_of(sample_tile("naip", 2)))
    assert (codes2 == 41).mean() > 0.99


def _grid_of(path):
    with rasterio.open(path) as ds:
        return Grid(ds.crs, ds.transform, ds.width, ds.height)


@pytest.mark.skipif(not PATCHES_1M.is_dir(), reason="raw Chesapeake patches not present")
@pytest.mark.parametrize("patch", [0, 3])
def test_reprojected_nlcd_agrees_with_the_original_1m_nlcd(patch):
    """The sample NLCD was made at 30 m from the patch's 1 m NLCD; reprojection must land on it again."""
    codes, _ = read_labels_on_grid(sample_tile("nlcd", patch), _grid_of(sample_tile("naip", patch)))
    original = np.load(PATCHES_1M / f"wv_1m_2014-m_3708020_sw_17_1-{patch}.npz")["nlcd"]
    assert (codes == original).mean() > 0.8


def test_weak_labels_far_away(tmp_path, make_geotiff):
    # a synthetic NLCD raster in Albers over California, far from the West Virginia tile
    path = make_geotiff(tmp_path / "far.tif", np.full((10, 10), 41, np.uint8), crs=ALBERS,
                        transform=from_origin(-2000000, 2000000, 30, 30), nodata=0)
    with pytest.raises(InputError, match="do not overlap the image"):
        read_labels_on_grid(path, _naip_grid())


def test_weak_labels_only_nodata(tmp_path, make_geotiff):
    with rasterio.open(NLCD) as ds:
        profile_tf, shape = ds.transform, ds.shape
    path = make_geotiff(tmp_path / "empty.tif", np.zeros(shape, np.uint8), crs=ALBERS, transform=profile_tf, nodata=0)
    with pytest.raises(InputError, match="only nodata"):
        read_labels_on_grid(path, _naip_grid(), what="truth")


def test_weak_labels_must_be_integer(tmp_path, make_geotiff):
    with rasterio.open(NLCD) as ds:
        tf, shape = ds.transform, ds.shape
    path = make_geotiff(tmp_path / "float.tif", np.full(shape, 41.0, np.float32), crs=ALBERS, transform=tf)
    with pytest.raises(InputError, match="integer class codes"):
        read_labels_on_grid(path, _naip_grid())
    with pytest.raises(InputError, match="integer class codes"):
        read_class_raster(path)


def test_errors_are_catchable_as_builtin_and_base():
    with pytest.raises(ValueError):
        read_image("/nonexistent/file.tif")
    with pytest.raises(GeoPPPError):
        read_image("/nonexistent/file.tif")


# ----------------------------------------------------------------------------------------- write map


def test_write_class_map(tmp_path):
    legend = load_legend("chesapeake")
    grid = _naip_grid()
    truth, _, _ = read_class_raster(TRUTH)
    codes = legend.to_codes(legend.to_index(truth))
    codes[:8, :8] = legend.nodata
    out = write_class_map(tmp_path / "map.tif", codes, grid, legend, tags={"RUN": "test"})
    assert out == tmp_path / "map.tif"
    assert [p.name for p in tmp_path.iterdir()] == ["map.tif"]  # no temporary file left behind
    with rasterio.open(out) as ds:
        assert ds.count == 1 and ds.dtypes[0] == "uint8" and ds.nodata == legend.nodata
        assert ds.crs == grid.crs and ds.transform == grid.transform
        assert np.array_equal(ds.read(1), codes)
        cmap = ds.colormap(1)
        for code, rgb in zip(legend.codes, legend.colors, strict=True):
            assert cmap[code] == (*rgb, 255)
        assert cmap[legend.nodata][3] == 0
        assert ds.tags()["LEGEND"] == "chesapeake" and ds.tags()["RUN"] == "test"
        assert "2=tree canopy" in ds.tags(1)["CLASS_NAMES"]
        assert not ds.dataset_mask()[:8, :8].any() and ds.dataset_mask()[8:, 8:].all()
    back, nodata, back_grid = read_class_raster(out)
    assert nodata == 0 and np.array_equal(back, codes) and back_grid == grid


def test_write_class_map_refuses_wrong_shape(tmp_path):
    legend = load_legend("chesapeake")
    with pytest.raises(InputError, match=r"\(128, 256\) does not match the grid \(256, 256\)"):
        write_class_map(tmp_path / "map.tif", np.ones((128, 256), np.uint8), _naip_grid(), legend)
    assert list(tmp_path.iterdir()) == []
