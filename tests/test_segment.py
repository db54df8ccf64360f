"""`geo-ppp segment` and the segment API on the real sample tiles, with a tiny land-cover prior.

The tiny prior has random weights (fast); the shipped prior is exercised in the slow tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geo_ppp.cli import main
from geo_ppp.geo.legend import load_legend
from geo_ppp.io import read_class_raster, read_image
from geo_ppp.landcover.metrics import score
from tests.conftest import NAIP, NLCD, TRUTH


def _segment(args: list[str]):
    return CliRunner().invoke(main, ["segment", *args])


def test_segment_writes_codes_on_the_image_grid(tmp_path: Path, tiny_lc_prior: Path) -> None:
    out = tmp_path / "map.tif"
    res = _segment([str(NAIP), "--weak-labels", str(NLCD), "--legend", "chesapeake", "--out", str(out),
                    "--prior", str(tiny_lc_prior), "--seed", "3"])
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as dst, rasterio.open(NAIP) as src:
        assert dst.crs == src.crs
        assert dst.transform == src.transform
        assert (dst.width, dst.height) == (src.width, src.height)
        assert dst.dtypes[0] == "uint8" and dst.nodata == 0
        codes = dst.read(1)
        cmap = dst.colormap(1)
    assert set(np.unique(codes)) <= {1, 2, 3, 4}
    assert cmap[2][:3] == load_legend("chesapeake").colors[1]
    sidecar = json.loads((tmp_path / "map.tif.json").read_text())
    assert sidecar["seed"] == 3 and sidecar["infer"]["pnp"]["steps"] == 3
    assert not (tmp_path / "map.tif.work").exists()  # the default work dir goes once the map is out
    assert sidecar["legend"]["name"] == "chesapeake"
    # the map follows the image, not only the 30 m weak labels: far better than chance on real truth
    truth, nodata, _ = read_class_raster(TRUTH)
    lg = load_legend("chesapeake")
    s = score(lg.to_index(codes.astype(np.int64), 0), lg.to_index(truth, nodata), 4)
    assert s.accuracy > 0.6


def test_segment_is_deterministic_and_seed_sensitive(tmp_path: Path, tiny_lc_prior: Path) -> None:
    from geo_ppp.pipeline import segment

    def run(seed: int, name: str) -> np.ndarray:
        segment(NAIP, NLCD, out=tmp_path / f"{name}.tif", prior=tiny_lc_prior, seed=seed,
                probabilities=tmp_path / f"{name}.p.tif")
        with rasterio.open(tmp_path / f"{name}.p.tif") as ds:
            return ds.read()

    a, b, c = run(1, "a"), run(1, "b"), run(2, "c")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)  # the seed reaches the optimisation


def test_segment_refuses_to_overwrite(tmp_path: Path, tiny_lc_prior: Path) -> None:
    out = tmp_path / "map.tif"
    out.write_bytes(b"precious")
    res = _segment([str(NAIP), "--weak-labels", str(NLCD), "--out", str(out), "--prior", str(tiny_lc_prior)])
    assert res.exit_code != 0
    assert "--overwrite" in res.output
    assert out.read_bytes() == b"precious"
    assert not (tmp_path / "map.tif.json").exists()


ORIGIN = (535399.0, 4170486.0)  # the top-left corner of NAIP, 1 m pixels (EPSG:26917)


def _naip() -> np.ndarray:
    data, _, _ = read_image(NAIP)
    return data.astype(np.uint8)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("two_bands", "at least R, G, B"),
        ("float64", "dtype float64"),
        ("nan", "NaN"),
        ("far_weak", "do not overlap"),
        ("unknown_codes", "not in the co-occurrence matrix"),
        ("bad_tile_size", "does not fit the prior"),
        ("other_legend_prior", "trained for legend"),
    ],
)
def test_segment_bad_input(tmp_path: Path, tiny_lc_prior: Path, make_tiny_lc_prior, make_geotiff, case: str,
                           expected: str) -> None:
    image, weak, prior, legend = NAIP, NLCD, tiny_lc_prior, "chesapeake"
    if case == "two_bands":
        image = make_geotiff(tmp_path / "img.tif", _naip()[:2], origin=ORIGIN)
    elif case == "float64":
        image = make_geotiff(tmp_path / "img.tif", _naip().astype(np.float64), origin=ORIGIN)
    elif case == "nan":
        data = _naip().astype(np.float32)
        data[:, 10:20, 10:20] = np.nan
        image = make_geotiff(tmp_path / "img.tif", data, origin=ORIGIN)
    elif case == "far_weak":
        weak = make_geotiff(tmp_path / "weak.tif", np.full((1, 10, 10), 41, np.uint8), crs="EPSG:5070",
                            origin=(0.0, 0.0), res=30.0, nodata=0)
    elif case == "unknown_codes":
        with rasterio.open(NLCD) as src:
            codes = src.read()
            profile = src.profile
        codes[codes == 41] = 99  # not an NLCD class
        with rasterio.open(tmp_path / "weak.tif", "w", **profile) as dst:
            dst.write(codes)
        weak = tmp_path / "weak.tif"
    elif case == "other_legend_prior":
        prior = make_tiny_lc_prior(tmp_path / "ea", "enviroatlas")
    out = tmp_path / "out.tif"
    extra = ["--tile-size", "250"] if case == "bad_tile_size" else []
    res = _segment([str(image), "--weak-labels", str(weak), "--legend", legend, "--out", str(out),
                    "--prior", str(prior), *extra])
    assert res.exit_code != 0
    assert expected in res.output, res.output
    assert not out.exists()
    assert not list(tmp_path.glob(".out*"))  # no temporary left behind
