"""Shared test code: sample-data paths, on-demand rasters and priors, tiny models, skip rules.

Fixtures build the inputs tests need when they need them (in the style of rio-tiler's fixtures):

* ``make_geotiff(path, data, crs=..., origin=..., res=..., nodata=...)`` writes a GeoTIFF;
* ``tiny_lc_prior`` is one tiny random-weight land-cover prior for the session, and
  ``make_tiny_lc_prior(folder, legend)`` builds a fresh one (to damage it, or for another legend);
* ``tiny_prior`` / ``digits_prior`` are digits-sized priors.

Plain constants and functions that test modules need at import time live here too, imported as
``from tests.conftest import TILES, NAIP, NLCD, TRUTH, ...``; no test module imports another.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from geo_ppp.core import NoiseSchedule, Prior, UNetConfig, UNetDenoiser

# -- the repository's sample data --------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
TILES = ROOT / "sample_tiles"  # eight real 256 x 256 patches: naip/, nlcd/ and truth/ patch{0..7}.tif


def sample_tile(kind: str, i: int = 0) -> Path:
    """``sample_tiles/<kind>/patch<i>.tif``, kind ``naip`` (1 m imagery), ``nlcd`` (30 m) or ``truth``."""
    return TILES / kind / f"patch{i}.tif"


NAIP = sample_tile("naip")  # 4-band uint8, EPSG:26917, 1 m
NLCD = sample_tile("nlcd")  # NLCD codes, EPSG:5070, 30 m, nodata 0
TRUTH = sample_tile("truth")  # Chesapeake 7-class codes on the NAIP grid, nodata 15


# -- skip rules ----------------------------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``gpu`` tests without CUDA (the ``qgis`` ones skip themselves: see tests/test_qgis.py)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


# -- rasters on demand ---------------------------------------------------------------------------------


def _write_geotiff(
    path: str | Path,
    data: np.ndarray,
    *,
    crs: object | None = "EPSG:26917",
    origin: tuple[float, float] | None = None,
    res: float = 1.0,
    transform: rasterio.Affine | None = None,
    nodata: float | None = None,
    dtype: str | None = None,
    **creation_options: object,
) -> Path:
    if origin is not None and transform is not None:
        raise ValueError("give the grid as origin (and res) or as transform, not both")
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": dtype or data.dtype.name,
        **creation_options,
    }
    if crs is not None:
        profile["crs"] = crs
    if origin is not None:
        transform = from_origin(origin[0], origin[1], res, res)
    if transform is not None:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. NotGeoreferencedWarning for deliberately bad files
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
    return Path(path)


@pytest.fixture(scope="session")
def make_geotiff() -> Callable[..., Path]:
    """A factory: ``make_geotiff(path, data, **options) -> path`` writes ``data`` as a GeoTIFF.

    ``data`` is (bands, H, W), or (H, W) for one band. Options:

    * ``crs``: anything rasterio takes (default ``"EPSG:26917"``, the sample tiles'); None writes none;
    * ``origin=(west, north)`` and ``res`` (square pixels, default 1.0), or an affine ``transform``;
      with neither the file has no geotransform;
    * ``nodata`` (default none), ``dtype`` (default the array's);
    * any other keyword is a GDAL creation option (``tiled=True, blockxsize=128, compress="deflate"``).

    Warnings while writing (deliberately bad files) are silenced.
    """
    return _write_geotiff


# -- priors --------------------------------------------------------------------------------------------


TINY_UNET = UNetConfig(in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1)


@pytest.fixture
def tiny_prior() -> Prior:
    """A small random-weight U-Net prior on 16x16 single-channel images."""
    torch.manual_seed(0)
    den = UNetDenoiser(TINY_UNET)
    # Break the zero-initialised output layers so the network is not the zero function.
    with torch.no_grad():
        for p in den.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return Prior(den.freeze(), NoiseSchedule.create("linear", 1000), {"image_size": 16})


@pytest.fixture(scope="session")
def digits_prior() -> Prior:
    """The shipped digits prior (real trained weights)."""
    from geo_ppp.core import load_prior

    return load_prior("digits")


def _tiny_landcover_prior(folder: Path, legend: str = "chesapeake") -> Path:
    """Save a tiny random-weight land-cover prior for ``legend`` (64 px, 4 m) in ``folder``.

    The weights are the same on every call (seed 0); the global torch RNG is left as it was.
    """
    from geo_ppp.core import save_prior
    from geo_ppp.geo.legend import load_legend

    lg = load_legend(legend)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        den = UNetDenoiser(
            UNetConfig(in_channels=lg.num_classes, base_channels=8, channel_mult=(1, 2), num_res_blocks=1)
        )
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


@pytest.fixture(scope="session")
def make_tiny_lc_prior() -> Callable[..., Path]:
    """A factory: ``make_tiny_lc_prior(folder, legend="chesapeake") -> folder``, a fresh tiny prior.

    For tests that damage the prior or need another legend; the others share ``tiny_lc_prior``.
    """
    return _tiny_landcover_prior


@pytest.fixture(scope="session")
def tiny_lc_prior(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a tiny random-weight chesapeake land-cover prior, shared by the session (read only)."""
    return _tiny_landcover_prior(tmp_path_factory.mktemp("prior") / "tiny")


# -- oracles -------------------------------------------------------------------------------------------

_A = np.array(
    [[1.6, -0.4, -0.9, -1.8], [-0.6, 1.5, -0.7, 0.3], [0.2, -1.2, 1.1, 0.6], [-1.1, 0.1, 0.4, 0.7]],
    np.float32,
)
_C = np.array([-0.2, 0.1, -0.3, 0.15], np.float32)
_D = np.array([0.5, -0.8, 0.6, -0.3], np.float32)


def pixelwise(image, valid, weak, seeds, timings) -> np.ndarray:
    """The pixel-wise stand-in for the land-cover inference: the tiling oracle of the pipeline tests.

    (B, C, T, T) image, weak codes -> (B, 4, T, T) probabilities, each pixel's a function of that
    pixel alone, computed with +, *, / only (no exp, no BLAS), so a pixel gets bit-identical
    probabilities in every tile and every batch. Module-level, so Dask workers can unpickle it.
    """
    x = image.astype(np.float32) / np.float32(255)
    w = (weak % 7).astype(np.float32) / np.float32(7)
    scores = []
    for k in range(4):
        a = _A[k]
        logit = a[0] * x[:, 0] + a[1] * x[:, 1] + a[2] * x[:, 2] + a[3] * x[:, 3] + _C[k] + _D[k] * w
        scores.append(np.float32(1) / (np.float32(0.05) + logit * logit))
    total = scores[0] + scores[1] + scores[2] + scores[3]
    return np.stack([s / total for s in scores], 1).astype(np.float32)


def one_window_reference(image, weak_labels, prior, *, steps: int, seed: int, legend: str = "chesapeake",
                         calibrate_seed: int | None = None):
    """The land-cover method on one window, straight from the arrays: the pipeline's oracle.

    Reads the image and the weak labels (reprojected onto the image grid) with ``geo_ppp.io`` and
    runs :func:`~geo_ppp.landcover.infer.infer_windows` once, with no tiling, no work dir and no
    mosaicking. With ``calibrate_seed`` (the run's seed) it first fits the region appearance model on
    the window itself, as the calibration stage does for a one-tile region (pixels drawn with the
    tile's sampling seed, one thread). Returns (codes (H, W) uint8 with 0 where the image has no data,
    probabilities (K, H, W)).
    """

    from geo_ppp.core import load_prior
    from geo_ppp.geo import load_legend, pixel_size
    from geo_ppp.io import read_image, read_labels_on_grid
    from geo_ppp.landcover.infer import default_infer_config, infer_windows
    from geo_ppp.landcover.weak import load_cooccurrence

    lg = load_legend(legend)
    prior_obj = load_prior(str(prior))
    data, valid, grid = read_image(image)
    weak, weak_nodata = read_labels_on_grid(weak_labels, grid)
    res = pixel_size(grid)
    factor = max(1, round(float(prior_obj.meta.get("resolution_m", 4.0)) / res))
    appearance = None
    if calibrate_seed is not None:
        from geo_ppp.landcover.appearance import AppearanceConfig, sample_pixels
        from geo_ppp.landcover.appearance_fit import fit_appearance
        from geo_ppp.pipeline.calibrate import tile_sample_seed

        cfg = AppearanceConfig(seed=calibrate_seed)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            gen = torch.Generator().manual_seed(tile_sample_seed(calibrate_seed, 0, 0))
            feats, codes = sample_pixels(torch.from_numpy(data)[None], torch.from_numpy(weak.astype(np.int64))[None],
                                         torch.from_numpy(valid)[None, None], cfg.samples, gen, cfg.texture_radius,
                                         cfg.smooth_radius, weak_nodata)
            appearance = fit_appearance(feats, codes, load_cooccurrence(lg.name), cfg)
        finally:
            torch.set_num_threads(threads)
    result = infer_windows(
        torch.from_numpy(data)[None],
        torch.from_numpy(weak)[None],
        torch.from_numpy(valid)[None, None].float(),
        load_cooccurrence(lg.name),
        prior_obj,
        default_infer_config(prior_obj).with_pnp(steps=steps),
        seeds=[seed],
        resolution_m=res,
        weak_nodata=weak_nodata,
        factor=factor,
        appearance=appearance,
    )
    probs = result.probabilities[0].float().numpy()
    index = probs.argmax(0)
    index[~valid] = -1
    return lg.to_codes(index), probs
