"""Messages users meet: each bad input names the problem and the fix, exits non-zero, changes nothing."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geo_ppp.cli import main
from geo_ppp.io.imagery import open_region
from tests.conftest import NAIP, NLCD, TRUTH


def _snapshot(folder: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir" for p in folder.rglob("*")}


def _naip_bands(count: int = 4) -> np.ndarray:
    """The sample NAIP's pixels, its bands repeated up to ``count`` bands."""
    with rasterio.open(NAIP) as src:
        data = src.read()
    return np.concatenate([data, data[: count - 4]]) if count > 4 else data


LOCAL_WKT = 'LOCAL_CS["site grid",LOCAL_DATUM["site",0],UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'


@pytest.mark.parametrize(
    "case, message",
    [
        ("geographic_non_square", "geographic CRS (degrees): reproject first"),
        ("local_crs", "local (engineering) CRS"),
        ("bands_repeated", "uses band(s) [1] more than once"),
        ("bands_too_few", "selects 2 band(s); give at least R, G, B"),
    ],
)
def test_segment_messages(tmp_path: Path, make_geotiff, case: str, message: str) -> None:
    image, extra = NAIP, []
    if case == "geographic_non_square":
        image = make_geotiff(tmp_path / "geo.tif", _naip_bands(), crs="EPSG:4326",
                             transform=rasterio.Affine(1e-5, 0, -80.6, 0, -8e-6, 37.6))
    elif case == "local_crs":
        image = make_geotiff(tmp_path / "local.tif", _naip_bands(), crs=rasterio.crs.CRS.from_wkt(LOCAL_WKT),
                             origin=(0, 256))
    elif case == "bands_repeated":
        extra = ["--bands", "1,1,1"]
    elif case == "bands_too_few":
        extra = ["--bands", "1,2"]
    before = _snapshot(tmp_path)
    res = CliRunner().invoke(main, ["segment", str(image), "--weak-labels", str(NLCD), "--out",
                                    str(tmp_path / "map.tif"), *extra])
    assert res.exit_code == 1, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    assert _snapshot(tmp_path) == before


def test_run_on_a_folder_says_to_pass_the_spec(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text("[job]\n")
    before = _snapshot(tmp_path)
    res = CliRunner().invoke(main, ["run", str(tmp_path)])
    assert res.exit_code == 1
    assert "is a folder (it holds job.toml); pass the TOML file itself" in res.output
    assert "does not exist" not in res.output
    assert _snapshot(tmp_path) == before


def test_an_eight_band_image_is_read_as_rgbn_with_a_warning(tmp_path: Path, make_geotiff, caplog) -> None:
    image = make_geotiff(tmp_path / "eight.tif", _naip_bands(8), origin=(535399.0, 4170486.0))
    with caplog.at_level(logging.WARNING, logger="geo_ppp"):
        spec = open_region([str(image)])
    assert spec.bands == (1, 2, 3, 4)
    assert "8 bands" in caplog.text and "--bands" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geo_ppp"):
        open_region([str(image)], bands=(3, 2, 1, 4))
    assert "8 bands" not in caplog.text  # the user said which


@pytest.mark.parametrize(
    "case, message",
    [
        ("scheduler_malformed", "is not a scheduler address"),
        ("out_is_a_folder", "is a folder; give this output a file name"),
        ("empty_geojson", "holds no features"),
    ],
)
def test_more_segment_messages(tmp_path: Path, case: str, message: str) -> None:
    weak, out, extra = NLCD, tmp_path / "map.tif", []
    if case == "scheduler_malformed":
        extra = ["--scheduler", "tcp://"]
    elif case == "out_is_a_folder":
        out.mkdir()
        extra = ["--overwrite"]
    elif case == "empty_geojson":
        weak = tmp_path / "empty.geojson"
        weak.write_text('{"type": "FeatureCollection", "features": []}')
        extra = ["--label-attribute", "nlcd"]
    before = _snapshot(tmp_path)
    res = CliRunner().invoke(main, ["segment", str(NAIP), "--weak-labels", str(weak), "--out", str(out), *extra])
    assert res.exit_code == 1, res.output
    assert message in res.output
    assert "no attribute" not in res.output and "Traceback" not in res.output
    assert _snapshot(tmp_path) == before  # no work dir left, nothing replaced


def test_evaluate_names_the_file_with_unknown_codes(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["evaluate", str(NLCD), str(TRUTH)])
    assert res.exit_code == 1
    assert f"prediction {NLCD}: label codes [21, 41" in res.output


def _geojson(path: Path, ring: list[list[float]]) -> Path:
    import json

    path.write_text(json.dumps({
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::26917"}},
        "features": [{"type": "Feature", "properties": {"nlcd": 41},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}}],
    }))
    return path


X0, Y0 = 535399.0, 4170486.0
OPEN_RING = [[X0, Y0], [X0 + 256, Y0], [X0 + 256, Y0 - 256], [X0, Y0 - 256]]
BOW_TIE = [[X0, Y0], [X0 + 256, Y0 - 256], [X0 + 256, Y0], [X0, Y0 - 256], [X0, Y0]]


@pytest.mark.parametrize("role", ["weak labels", "aoi"])
def test_an_unclosed_ring_is_named_not_a_traceback(tmp_path: Path, role: str) -> None:
    bad = _geojson(tmp_path / "open.geojson", OPEN_RING)
    extra = (["--weak-labels", str(bad), "--label-attribute", "nlcd"] if role == "weak labels"
             else ["--weak-labels", str(NLCD), "--aoi", str(bad)])
    before = _snapshot(tmp_path)
    res = CliRunner().invoke(main, ["segment", str(NAIP), *extra, "--out", str(tmp_path / "m.tif")])
    assert res.exit_code == 1
    assert "polygon ring that is not closed" in res.output and "ogr2ogr -makevalid" in res.output
    assert "Traceback" not in res.output
    assert _snapshot(tmp_path) == before


def test_bow_ties_are_repaired_and_counted(tmp_path: Path, caplog) -> None:
    from geo_ppp.io.vectors import read_vector_labels

    path = _geojson(tmp_path / "bow.geojson", BOW_TIE)
    with caplog.at_level(logging.WARNING, logger="geo_ppp"):
        gdf = read_vector_labels(path, "nlcd")
    assert "1 of 1 polygons were invalid" in caplog.text
    assert gdf.geometry.is_valid.all()
    assert gdf.geometry.area.sum() == pytest.approx(2 * 256 * 128 / 2)  # the two triangles of the bow-tie


def test_a_true_alpha_band_masks_instead_of_being_read_as_nir(tmp_path: Path, caplog) -> None:
    from geo_ppp.io.imagery import ImageReader

    with rasterio.open(NAIP) as src:
        bands, profile = src.read(), src.profile
    rgb = bands[:3]
    alpha = np.full((1, *rgb.shape[1:]), 255, np.uint8)
    alpha[0, :64, :64] = 0  # a transparent corner
    profile.update(count=4, photometric="RGB", alpha="YES", nodata=None)
    path = tmp_path / "rgba.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.concatenate([rgb, alpha]))
    with caplog.at_level(logging.WARNING, logger="geo_ppp"):
        spec = open_region([str(path)])
    assert spec.bands == (1, 2, 3)
    assert "is an alpha mask" in caplog.text and "--bands" in caplog.text
    with ImageReader(spec) as reader:
        _, valid = reader.read(0, 0, 128, 128)
    assert not valid[:64, :64].any() and valid[64:, 64:].all()
    # NAIP as many users hold it: the NIR band flagged alpha (RGB photometric with an alpha extra
    # sample). That one is data (its values are not only 0 and 255): read as band 4, no warning
    nir = tmp_path / "nir_flagged_alpha.tif"
    with rasterio.open(nir, "w", **profile) as dst:
        dst.write(bands)
        assert dst.colorinterp[3] == rasterio.enums.ColorInterp.alpha  # what makes this half meaningful
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geo_ppp"):
        assert open_region([str(nir)]).bands == (1, 2, 3, 4)
    assert "alpha mask" not in caplog.text
    with ImageReader(open_region([str(nir)])) as reader:
        data, valid = reader.read(0, 0, 256, 256)
    assert valid.all() and np.array_equal(data[3], bands[3].astype(np.float32))  # NIR zeros (water) are data


def test_run_with_an_unreachable_scheduler_creates_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "job.toml"
    spec.write_text(f'[job]\nworkdir = "work"\n\n[[region]]\nname = "a"\nimage = "{NAIP}"\n'
                    f'weak_labels = "{NLCD}"\nout = "maps/a.tif"\n')
    before = _snapshot(tmp_path)
    res = CliRunner().invoke(main, ["run", str(spec), "--scheduler", "tcp://127.0.0.1:1"])
    assert res.exit_code == 1
    assert "cannot reach the Dask scheduler" in res.output and "Traceback" not in res.output
    assert _snapshot(tmp_path) == before  # no maps/ folder, no work dir


def test_weak_labels_on_part_of_the_image_are_warned_about_and_recorded(tmp_path: Path, tiny_lc_prior, caplog):
    """NLCD cut to the western half of the patch: the map still covers it all, on weaker ground."""
    import json

    from rasterio.warp import transform as warp

    from geo_ppp.pipeline import segment
    from tests.conftest import pixelwise

    with rasterio.open(NLCD) as ds:
        profile, codes = ds.profile, ds.read(1)
        with rasterio.open(NAIP) as img:
            mid_x = (img.bounds.left + img.bounds.right) / 2
        # blank every NLCD cell whose centre lies east of the patch's middle (in the image's CRS)
        cols = np.arange(ds.width) + 0.5
        rows = np.arange(ds.height) + 0.5
        xs, ys = ds.transform * (cols[None, :].repeat(ds.height, 0), rows[:, None].repeat(ds.width, 1))
        ux, _ = warp(ds.crs, "EPSG:26917", xs.ravel(), ys.ravel())
    half = codes.copy()
    half[np.asarray(ux).reshape(codes.shape) > mid_x] = 0
    weak = tmp_path / "half.tif"
    with rasterio.open(weak, "w", **profile) as dst:
        dst.write(half, 1)
    with caplog.at_level(logging.WARNING, logger="geo_ppp"):
        res = segment(NAIP, weak, out=tmp_path / "map.tif", prior=tiny_lc_prior, infer=pixelwise, tile_size=128)
    share = json.loads((tmp_path / "map.tif.json").read_text())["weak_label_coverage"]
    assert 0.3 < share < 0.7 and res.config["weak_label_coverage"] == share
    assert "of the mapped area had weak labels" in caplog.text and "cover the whole image" in caplog.text
    # full weak labels: recorded as (nearly) all, no warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geo_ppp"):
        res = segment(NAIP, NLCD, out=tmp_path / "full.tif", prior=tiny_lc_prior, infer=pixelwise, tile_size=128)
    assert res.config["weak_label_coverage"] > 0.95 and "had weak labels" not in caplog.text


def test_the_planning_scan_reads_only_what_the_aoi_covers(tmp_path: Path, tiny_lc_prior):
    """NaNs in the south of a float image stop a run over the whole image, not one over an AOI in its north."""
    from geo_ppp.errors import InputError
    from geo_ppp.pipeline import segment
    from tests.conftest import pixelwise

    with rasterio.open(NAIP) as ds:
        profile, data, bounds = ds.profile, ds.read().astype(np.float32), ds.bounds
    data[:, 200:, :] = np.nan
    image = tmp_path / "float.tif"
    with rasterio.open(image, "w", **{**profile, "dtype": "float32"}) as dst:
        dst.write(data)
    north = f"{bounds.left},{bounds.top - 100},{bounds.right},{bounds.top}"
    kw = {"prior": tiny_lc_prior, "infer": pixelwise, "tile_size": 128}
    with pytest.raises(InputError, match="holds NaN values"):
        segment(image, NLCD, out=tmp_path / "all.tif", **kw)
    res = segment(image, NLCD, out=tmp_path / "north.tif", aoi=north, **kw)
    assert res.stats["ran"] > 0 and not (tmp_path / "all.tif").exists()
