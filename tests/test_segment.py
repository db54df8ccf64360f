"""`geo-ppp segment` and the segment API on the real sample tiles, with a tiny land-cover prior.

The tiny prior has random weights (fast); the shipped prior is exercised in the slow tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from rasterio.transform import from_origin

from geo_ppp.cli import main
from geo_ppp.core import NoiseSchedule, Prior, UNetConfig, UNetDenoiser, save_prior
from geo_ppp.geo.legend import load_legend
from geo_ppp.io import read_class_raster, read_image
from geo_ppp.landcover.metrics import score

TILES = Path(__file__).resolve().parent.parent / "sample_tiles"
NAIP = TILES / "naip" / "patch0.tif"
NLCD = TILES / "nlcd" / "patch0.tif"
TRUTH = TILES / "truth" / "patch0.tif"


def _tiny_landcover_prior(folder: Path, legend: str = "chesapeake") -> Path:
    lg = load_legend(legend)
    torch.manual_seed(0)
    den = UNetDenoiser(UNetConfig(in_channels=lg.num_classes, base_channels=8, channel_mult=(1, 2), num_res_blocks=1))
    with torch.no_grad():  # break the zero-initialised output layer, or the prior has no gradient
        for p in den.parameters():
            p.add_(0.02 * torch.randn_like(p))
    meta = {
        "name": f"tiny-{legend}",
        "kind": "landcover",
        "legend": lg.name,
        "codes": list(lg.codes),
        "image_size": 64,
        "resolution_m": 4.0,
        "infer": {"pnp": {"steps": 3}, "clusters": {"iterations": 3, "warmup_iterations": 1}},
    }
    save_prior(Prior(den.freeze(), NoiseSchedule.create("linear", 1000), meta), folder)
    return folder


@pytest.fixture(scope="module")
def tiny_lc_prior(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_landcover_prior(tmp_path_factory.mktemp("prior") / "tiny")


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


def _write(path: Path, data: np.ndarray, crs: str | None = "EPSG:26917", origin=(535399.0, 4170486.0), res=1.0,
           nodata=None) -> Path:
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "transform": from_origin(origin[0], origin[1], res, res)}
    if crs:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


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
def test_segment_bad_input(tmp_path: Path, tiny_lc_prior: Path, case: str, expected: str) -> None:
    image, weak, prior, legend = NAIP, NLCD, tiny_lc_prior, "chesapeake"
    if case == "two_bands":
        image = _write(tmp_path / "img.tif", _naip()[:2])
    elif case == "float64":
        image = _write(tmp_path / "img.tif", _naip().astype(np.float64))
    elif case == "nan":
        data = _naip().astype(np.float32)
        data[:, 10:20, 10:20] = np.nan
        image = _write(tmp_path / "img.tif", data)
    elif case == "far_weak":
        weak = _write(tmp_path / "weak.tif", np.full((1, 10, 10), 41, np.uint8), "EPSG:5070", (0.0, 0.0), 30.0, 0)
    elif case == "unknown_codes":
        with rasterio.open(NLCD) as src:
            codes = src.read()
            profile = src.profile
        codes[codes == 41] = 99  # not an NLCD class
        with rasterio.open(tmp_path / "weak.tif", "w", **profile) as dst:
            dst.write(codes)
        weak = tmp_path / "weak.tif"
    elif case == "other_legend_prior":
        prior = _tiny_landcover_prior(tmp_path / "ea", "enviroatlas")
    out = tmp_path / "out.tif"
    extra = ["--tile-size", "250"] if case == "bad_tile_size" else []
    res = _segment([str(image), "--weak-labels", str(weak), "--legend", legend, "--out", str(out),
                    "--prior", str(prior), *extra])
    assert res.exit_code != 0
    assert expected in res.output, res.output
    assert not out.exists()
    assert not list(tmp_path.glob(".out*"))  # no temporary left behind
