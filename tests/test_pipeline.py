"""The tiled pipeline (`geo_ppp.pipeline.segment`, `geo-ppp segment`) end to end on real imagery.

Most tests replace the land-cover inference with a PIXEL-WISE function (``segment(..., infer=fn)``):
each pixel's probabilities depend only on its own bands and weak code, so the tiled, blended map must
not depend on the tiling at all, which is the oracle. That function uses only +, *, / (no exp, no
BLAS), so a pixel gets bit-identical probabilities in every tile and every batch. A few tests run the
real method with a tiny random-weight prior and ``steps=1`` or ``2``.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from rasterio.transform import from_origin
from rasterio.warp import calculate_default_transform, reproject, transform_bounds

import geo_ppp.pipeline.worker as worker_mod
from geo_ppp.cli import main
from geo_ppp.errors import InputError
from geo_ppp.geo.legend import load_legend
from geo_ppp.pipeline import TileGrid, segment, tile_seed
from tests.conftest import NAIP, NLCD, ROOT, one_window_reference, pixelwise, sample_tile

CLIPS = ROOT / "tests" / "data"  # real NAIP clips copied by tests/data/build.py
NAIP_06 = CLIPS / "naip_0.6m_epsg26911.tif"  # 0.6 m, EPSG:26911
NAIP_5 = CLIPS / "naip_5m_epsg26914_crop.tif"  # 5 m, nodata 0, EPSG:26914

CRS = "EPSG:26917"
ORIGIN = (535399.0, 4170486.0)  # top-left of sample patch0, 1 m pixels
REGION_H, REGION_W = 560, 700
WEAK_CODES = (21, 41, 42, 81, 82, 71)  # all known to the chesapeake co-occurrence matrix
LEGEND = load_legend("chesapeake")


# -- the pixel-wise inference: tests.conftest.pixelwise, counted --------------------------------------

class Counting:
    """A pixel-wise inference that records the batch sizes it gets and can 'die' after some batches."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[int] = []
        self.fail_after = fail_after

    def __call__(self, image, valid, weak, seeds, timings) -> np.ndarray:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise Killed("simulated kill")
        assert image.shape[0] == valid.shape[0] == weak.shape[0] == len(seeds)
        assert all(v.any() for v in valid)  # all-nodata tiles never reach the inference
        self.calls.append(len(seeds))
        return pixelwise(image, valid, weak, seeds, timings)


class Killed(Exception):
    pass


# -- real-derived inputs ----------------------------------------------------------------------------


def _patch(i: int) -> np.ndarray:
    with rasterio.open(sample_tile("naip", i)) as ds:
        return ds.read()


def _region_array() -> np.ndarray:
    """(4, 560, 700) uint8: the real NAIP sample patches tiled 3 x 3 (the ninth mirrored), cropped."""
    p = [_patch(i) for i in range(8)] + [_patch(0)[:, ::-1, ::-1]]
    rows = [np.concatenate(p[3 * r : 3 * r + 3], axis=2) for r in range(3)]
    return np.ascontiguousarray(np.concatenate(rows, axis=1)[:, :REGION_H, :REGION_W])


def _vrt_of_two_files(make_geotiff, folder: Path) -> Path:
    """A VRT mosaicking the region's top and bottom halves, each its own GeoTIFF (written by hand)."""
    data = _region_array()
    half = REGION_H // 2
    make_geotiff(folder / "a.tif", data[:, :half], origin=ORIGIN)
    make_geotiff(folder / "b.tif", data[:, half:], transform=from_origin(ORIGIN[0], ORIGIN[1] - half, 1, 1))
    bands = []
    for b in range(1, 5):
        sources = "".join(
            f"<SimpleSource><SourceFilename relativeToVRT=\"1\">{name}</SourceFilename><SourceBand>{b}</SourceBand>"
            f"<SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{REGION_W}\" ySize=\"{half}\"/>"
            f"<DstRect xOff=\"0\" yOff=\"{y0}\" xSize=\"{REGION_W}\" ySize=\"{half}\"/></SimpleSource>"
            for name, y0 in (("a.tif", 0), ("b.tif", half))
        )
        bands.append(f"<VRTRasterBand dataType=\"Byte\" band=\"{b}\">{sources}</VRTRasterBand>")
    wkt = rasterio.crs.CRS.from_string(CRS).to_wkt()
    gt = f"{ORIGIN[0]}, 1, 0, {ORIGIN[1]}, 0, -1"
    xml = (f"<VRTDataset rasterXSize=\"{REGION_W}\" rasterYSize=\"{2 * half}\"><SRS>{wkt}</SRS>"
           f"<GeoTransform>{gt}</GeoTransform>{''.join(bands)}</VRTDataset>")
    path = folder / "img.vrt"
    path.write_text(xml)
    return path


def _weak(make_geotiff, path: Path, margin: int = 128, cell: int = 8) -> Path:
    """NLCD-coded weak labels in blocks, in the image CRS on 8 m cells aligned with its 1 m pixels.

    Aligned cells keep nearest reprojection exact whatever the tile window (image pixel centres never
    sit on a cell edge), so the weak code of a pixel does not depend on the tiling either.
    """
    h = (REGION_H + 2 * margin) // cell
    w = (REGION_W + 2 * margin) // cell
    i, j = np.mgrid[0:h, 0:w]
    codes = np.asarray(WEAK_CODES, np.uint8)[(i // 3 * 5 + j // 4 * 3 + (i * j) % 4) % len(WEAK_CODES)]
    transform = from_origin(ORIGIN[0] - margin, ORIGIN[1] + margin, cell, cell)
    return make_geotiff(path, codes[None], transform=transform, nodata=0)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread: on a shared 2-core machine, two threads spin against other processes (10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def region(make_geotiff, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 700 x 560 4-band uint8 GeoTIFF of real NAIP pixels (EPSG:26917, 1 m) and its weak labels."""
    folder = tmp_path_factory.mktemp("region")
    image = make_geotiff(folder / "region.tif", _region_array(), origin=ORIGIN)
    return image, _weak(make_geotiff, folder / "weak.tif")


@pytest.fixture(scope="module")
def baseline(region, tiny_lc_prior, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The pixel-wise map and probabilities of the region with 256 / 32 tiles."""
    folder = tmp_path_factory.mktemp("baseline")
    image, weak = region
    segment(image, weak, out=folder / "map.tif", prior=tiny_lc_prior, infer=pixelwise, tile_size=256,
            overlap=32, probabilities=folder / "p.tif")
    return {"map": _read(folder / "map.tif"), "probs": _read(folder / "p.tif", None),
            "bytes": (folder / "map.tif").read_bytes()}


def _read(path: Path, band: int | None = 1) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(band) if band else ds.read()


def _cli(args: list[str]):
    return CliRunner().invoke(main, ["segment", *args])


@pytest.fixture
def fast_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the CLI's inference the pixel-wise function (the CLI takes no `infer`)."""
    monkeypatch.setattr(worker_mod, "TileInferrer", lambda job: pixelwise)


# -- 1. the oracle: the map does not depend on the tiling --------------------------------------------


@pytest.mark.parametrize("tile_size, overlap, tiles", [(128, 16, 35), (768, 32, 1), (256, 64, 12)])
def test_tiled_map_does_not_depend_on_the_tiling(region, tiny_lc_prior, baseline, tmp_path: Path,
                                                 tile_size: int, overlap: int, tiles: int) -> None:
    image, weak = region
    res = segment(image, weak, out=tmp_path / "map.tif", prior=tiny_lc_prior, infer=pixelwise,
                  tile_size=tile_size, overlap=overlap, batch_size=5, probabilities=tmp_path / "p.tif")
    assert res.stats["tiles"] == res.stats["ran"] == tiles == len(TileGrid(REGION_H, REGION_W, tile_size, overlap))
    codes = _read(tmp_path / "map.tif")
    assert codes.shape == (REGION_H, REGION_W)
    assert set(np.unique(codes)) == {1, 2, 3, 4}  # the oracle is not trivial: every class is there
    assert np.array_equal(codes, baseline["map"])
    probs = _read(tmp_path / "p.tif", None)
    assert probs.shape == (4, REGION_H, REGION_W)
    assert np.abs(probs.astype(int) - baseline["probs"].astype(int)).max() <= 1  # within 1/255


def test_tiling_independence_with_real_nlcd_in_another_crs(tiny_lc_prior, tmp_path: Path) -> None:
    """The real 30 m NLCD (EPSG:5070) is reprojected per tile: small tiles still give the same map."""
    maps = []
    for size, overlap in ((256, 32), (64, 8), (40, 8)):
        segment(NAIP, NLCD, out=tmp_path / f"{size}.tif", prior=tiny_lc_prior, infer=pixelwise,
                tile_size=size, overlap=overlap)
        maps.append(_read(tmp_path / f"{size}.tif"))
    assert len(np.unique(maps[0])) >= 2
    assert all(np.array_equal(maps[0], m) for m in maps[1:])


def test_tiled_map_equals_the_pixelwise_function_on_the_whole_image(region, baseline) -> None:
    """No tiling at all: the function applied to the whole image and weak labels at once."""
    image, weak = region
    with rasterio.open(image) as ds:
        data = ds.read().astype(np.float32)
    with rasterio.open(weak) as ds:
        codes = np.zeros((REGION_H, REGION_W), np.uint8)
        reproject(rasterio.band(ds, 1), codes, dst_transform=from_origin(*ORIGIN, 1, 1), dst_crs=CRS)
    probs = pixelwise(data[None], np.ones((1, REGION_H, REGION_W), bool), codes[None].astype(np.int64), [0], {})
    # float16 storage can only break near-ties
    top2 = np.sort(probs[0], 0)
    sure = top2[-1] - top2[-2] > 2e-3
    expected = LEGEND.to_codes(probs[0].argmax(0))
    assert np.array_equal(baseline["map"][sure], expected[sure])
    assert sure.mean() > 0.95


# -- 2. the tiled path equals the single-window path ------------------------------------------------


def test_one_tile_equals_the_single_window_method(tiny_lc_prior, tmp_path: Path) -> None:
    """A 256 x 256 image is one tile: the pipeline must give the one-window method's map with the tile's seed.

    The pipeline keeps tile probabilities as float16 in its work dir, so pixels whose top-2
    probability margin (in the single-window float32 result) is below 2e-3 may flip; only those may
    differ, and they must be rare (< 0.5 % of the pixels).
    """
    res = segment(NAIP, NLCD, out=tmp_path / "map.tif", prior=tiny_lc_prior, steps=2, seed=11,
                  probabilities=tmp_path / "p.tif")
    assert res.stats["tiles"] == res.stats["ran"] == 1
    ref_codes, ref_probs = one_window_reference(NAIP, NLCD, tiny_lc_prior, steps=2, seed=tile_seed(11, 0, 0),
                                                calibrate_seed=11)
    assert res.config["calibration"]["status"] == "fitted"  # a mixed patch: the oracle covers the calibration
    codes = _read(tmp_path / "map.tif")
    top2 = np.sort(ref_probs, 0)
    near_tie = top2[-1] - top2[-2] < 2e-3
    differ = codes != ref_codes
    assert not (differ & ~near_tie).any()
    assert near_tie.mean() < 0.005
    assert len(np.unique(ref_codes)) >= 2
    probs = _read(tmp_path / "p.tif", None).astype(np.float32) / 255
    assert np.abs(probs - ref_probs).max() <= 1 / 255 + 2e-3


# -- 3. resume ---------------------------------------------------------------------------------------


def test_resume_skips_finished_tiles_and_gives_the_same_map(region, tiny_lc_prior, baseline,
                                                            tmp_path: Path) -> None:
    image, weak = region
    kw = {"prior": tiny_lc_prior, "tile_size": 128, "overlap": 16, "batch_size": 4}
    total = len(TileGrid(REGION_H, REGION_W, 128, 16))  # 35 tiles, 9 batches
    work = tmp_path / "work"
    out = tmp_path / "a" / "map.tif"
    out.parent.mkdir()
    fn = Counting()
    res = segment(image, weak, out=out, workdir=work, infer=fn, **kw)
    assert sum(fn.calls) == total == res.stats["ran"] and len(fn.calls) == 9
    assert len(list((work / "tiles").glob("*.npy"))) == total  # an explicit work dir is kept
    full = out.read_bytes()
    assert np.array_equal(_read(out), baseline["map"])

    # the same run again on the same work dir: nothing to infer, the same file
    fn = Counting()
    res = segment(image, weak, out=out, workdir=work, infer=fn, overwrite=True, **kw)
    assert fn.calls == [] and res.stats["resumed"] == total and res.stats["ran"] == 0
    assert out.read_bytes() == full

    # a run killed after 3 batches leaves no output and no temporary file, and keeps its 12 tiles
    out2 = tmp_path / "b" / "map.tif"
    out2.parent.mkdir()
    work2 = tmp_path / "work2"
    with pytest.raises(Killed):
        segment(image, weak, out=out2, workdir=work2, infer=Counting(fail_after=3), **kw)
    assert list(out2.parent.iterdir()) == []
    assert sorted(p.suffix for p in (work2 / "tiles").iterdir()) == [".npy"] * 12
    fn = Counting()
    res = segment(image, weak, out=out2, workdir=work2, infer=fn, **kw)
    assert sum(fn.calls) == total - 12 == res.stats["ran"] and res.stats["resumed"] == 12
    assert len(fn.calls) == 6
    assert out2.read_bytes() == full

    # a different run (another seed) is refused on that work dir, unless --no-resume
    with pytest.raises(InputError, match="--no-resume") as err:
        segment(image, weak, out=tmp_path / "c.tif", workdir=work, infer=Counting(), seed=1, **kw)
    assert "seed" in str(err.value)
    assert not (tmp_path / "c.tif").exists()
    fn = Counting()
    res = segment(image, weak, out=tmp_path / "c.tif", workdir=work, infer=fn, seed=1, resume=False, **kw)
    assert sum(fn.calls) == total == res.stats["ran"]
    assert np.array_equal(_read(tmp_path / "c.tif"), baseline["map"])  # the pixel-wise map ignores seeds


def test_resume_in_the_default_work_dir(region, tiny_lc_prior, baseline, tmp_path: Path) -> None:
    image, weak = region
    kw = {"prior": tiny_lc_prior, "tile_size": 256, "overlap": 32, "batch_size": 2}
    assert len(TileGrid(REGION_H, REGION_W, 256, 32)) == 9  # 5 batches
    out = tmp_path / "map.tif"
    with pytest.raises(Killed):
        segment(image, weak, out=out, infer=Counting(fail_after=2), **kw)
    # only the work dir (OUT.work) is left, and no temporary file in it
    assert [p.name for p in tmp_path.iterdir()] == ["map.tif.work"]
    names = {p.name for p in (tmp_path / "map.tif.work").iterdir()}
    # the tiles, and the calibration stage's record (and model, when the region could be calibrated)
    assert {"manifest.json", "tiles", "appearance.json"} <= names <= {
        "manifest.json", "tiles", "appearance.json", "appearance.safetensors"}
    assert all(p.suffix == ".npy" and not p.name.startswith(".") for p in (tmp_path / "map.tif.work/tiles").iterdir())
    fn = Counting()
    res = segment(image, weak, out=out, infer=fn, **kw)
    assert res.stats["resumed"] == 4 and res.stats["ran"] == sum(fn.calls) == 5 and len(fn.calls) == 3
    assert np.array_equal(_read(out), baseline["map"])
    assert not (tmp_path / "map.tif.work").exists()


# -- 4. a region of several files in different CRSs -----------------------------------------------------


def test_region_of_two_files_in_two_utm_zones(make_geotiff, region, tiny_lc_prior, tmp_path: Path) -> None:
    image, weak = region
    data = _region_array()
    split = 320
    a = make_geotiff(tmp_path / "a.tif", np.ascontiguousarray(data[:, :, :split]), origin=ORIGIN)
    # the right part (overlapping the left one by 16 px, as neighbouring scenes do), reprojected to
    # the next UTM zone west (rotated by ~4 degrees there)
    right = np.ascontiguousarray(data[:, :, split - 16 :])
    src_transform = from_origin(ORIGIN[0] + split - 16, ORIGIN[1], 1, 1)
    h, w = right.shape[1:]
    dst_transform, dw, dh = calculate_default_transform(CRS, "EPSG:26916", w, h,
                                                        *rasterio.transform.array_bounds(h, w, src_transform))
    warped = np.zeros((4, dh, dw), np.uint8)
    reproject(right, warped, src_transform=src_transform, src_crs=CRS, dst_transform=dst_transform,
              dst_crs="EPSG:26916", dst_nodata=0, resampling=rasterio.enums.Resampling.bilinear)
    b = make_geotiff(tmp_path / "b.tif", warped, crs="EPSG:26916", transform=dst_transform, nodata=0)

    res = segment([a, b], weak, out=tmp_path / "map.tif", prior=tiny_lc_prior, infer=pixelwise, tile_size=128,
                  overlap=16)
    with rasterio.open(tmp_path / "map.tif") as ds:
        assert ds.crs == CRS and ds.res == (1.0, 1.0)
        t = ds.transform
        codes = ds.read(1)
    # the grid is the first file's, extended over both files
    col0, row0 = (ORIGIN[0] - t.c), (t.f - ORIGIN[1])
    assert col0 == int(col0) and row0 == int(row0) and col0 >= 0 and row0 >= 0
    col0, row0 = int(col0), int(row0)
    assert codes.shape[0] >= row0 + REGION_H and codes.shape[1] >= col0 + REGION_W
    assert codes.shape[0] > REGION_H or codes.shape[1] > REGION_W  # b's bounds stick out (rotated)
    assert res.grid.width == codes.shape[1]
    # pixels that no file covers are nodata; pixels well inside the original area are mapped
    inside = np.zeros(codes.shape, bool)
    inside[row0 : row0 + REGION_H, col0 : col0 + REGION_W] = True
    near = np.zeros(codes.shape, bool)
    near[max(row0 - 2, 0) : row0 + REGION_H + 2, max(col0 - 2, 0) : col0 + REGION_W + 2] = True
    assert (codes[~near] == 0).all()
    core = np.zeros(codes.shape, bool)
    core[row0 + 3 : row0 + REGION_H - 3, col0 : col0 + REGION_W - 3] = True
    assert (codes[core] != 0).all()
    # the first file's part is exactly the map of that file alone (first file wins where they meet)
    segment(a, weak, out=tmp_path / "a-map.tif", prior=tiny_lc_prior, infer=pixelwise, tile_size=128,
            overlap=16)
    alone = _read(tmp_path / "a-map.tif")
    assert np.array_equal(codes[row0 : row0 + REGION_H, col0 : col0 + split], alone)
    # and the reprojected part agrees with the single-file map almost everywhere (resampled twice)
    whole = segment(image, weak, out=tmp_path / "whole.tif", prior=tiny_lc_prior, infer=pixelwise,
                    tile_size=128, overlap=16)
    assert whole.stats["ran"] > 0
    ref = _read(tmp_path / "whole.tif")[3:-3, split + 3 : -3]
    got = codes[row0 + 3 : row0 + REGION_H - 3, col0 + split + 3 : col0 + REGION_W - 3]
    assert (ref == got).mean() > 0.9


# -- 5. imagery at another resolution -----------------------------------------------------------------------


def _nlcd_blocks(make_geotiff, path: Path, image: Path, margin: float = 90.0) -> Path:
    """Synthetic NLCD codes {41, 81, 21} in 30 m cells and 150 m blocks, EPSG:5070, covering ``image``."""
    with rasterio.open(image) as ds:
        left, bottom, right, top = transform_bounds(ds.crs, "EPSG:5070", *ds.bounds, densify_pts=21)
    left, top = np.floor((left - margin) / 30) * 30, np.ceil((top + margin) / 30) * 30
    w = int(np.ceil((right + margin - left) / 30))
    h = int(np.ceil((top - bottom + margin) / 30))
    i, j = np.mgrid[0:h, 0:w]
    codes = np.array([41, 81, 21], np.uint8)[(i // 5 + 2 * (j // 5)) % 3]
    return make_geotiff(path, codes[None], crs="EPSG:5070", origin=(left, top), res=30, nodata=0)


def test_imagery_at_another_resolution_maps_on_its_own_grid(make_geotiff, tiny_lc_prior, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    weak = _nlcd_blocks(make_geotiff, tmp_path / "nlcd.tif", NAIP_06)
    with caplog.at_level(logging.INFO, logger="geo_ppp"):
        res = segment(NAIP_06, weak, out=tmp_path / "map.tif", prior=tiny_lc_prior, infer=pixelwise,
                      tile_size=128, overlap=16, probabilities=tmp_path / "p.tif")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("geo_ppp")]
    assert any("resampled" in r.getMessage() for r in caplog.records)  # said, at info level
    assert res.stats["ran"] == res.stats["tiles"] >= 2
    with rasterio.open(NAIP_06) as src, rasterio.open(tmp_path / "map.tif") as dst:
        crs = src.crs
        assert dst.crs == crs
        assert dst.transform.almost_equals(src.transform, precision=1e-9)
        assert (dst.width, dst.height) == (src.width, src.height)
        codes = dst.read(1)
        image = src.read().astype(np.float32)
        weak_on_image = np.zeros(src.shape, np.int64)
        with rasterio.open(weak) as w:
            reproject(rasterio.band(w, 1), weak_on_image, dst_transform=src.transform, dst_crs=src.crs)
    with rasterio.open(tmp_path / "p.tif") as p:
        assert (p.count, p.width, p.height) == (4, codes.shape[1], codes.shape[0]) and p.crs == crs
    assert (codes > 0).mean() > 0.99 and set(np.unique(codes)) <= {0, 1, 2, 3, 4}
    # the map is the pixel-wise function of the image, seen through a 0.6 -> 1 -> 0.6 m resampling:
    # most pixels agree (a shifted or flipped map would not)
    direct = LEGEND.to_codes(pixelwise(image[None], None, weak_on_image[None], [0], {})[0].argmax(0))
    agree = (direct == codes).mean()
    assert agree > 0.9
    shifted = (direct[:, 4:] == codes[:, :-4]).mean()
    assert agree > shifted + 0.02


def test_a_large_resampling_factor_is_warned_about(make_geotiff, tiny_lc_prior, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    from geo_ppp.pipeline import plan

    weak = _nlcd_blocks(make_geotiff, tmp_path / "nlcd.tif", NAIP_5)
    with caplog.at_level(logging.INFO, logger="geo_ppp"):
        job = plan(NAIP_5, weak, workdir=tmp_path / "w", prior=tiny_lc_prior)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "factor 5.0" in warnings[0], warnings
    assert job.image.resampled and job.image.grid.width == 240
    assert job.image.work.width == 240 * 5  # inference runs at the prior's 1 m


# -- 6. nodata ---------------------------------------------------------------------------------------


def test_nodata_pixels_stay_nodata_and_empty_tiles_are_skipped(make_geotiff, tiny_lc_prior,
                                                               tmp_path: Path) -> None:
    data = np.concatenate([np.concatenate([_patch(0), _patch(1)], 2), np.concatenate([_patch(2), _patch(3)], 2)], 1)
    data[:, (data == 0).all(0)] = 1  # real pixels that happen to be all 0 would read as nodata
    data[:, :300, :300] = 0  # a hole that holds tile (0, 0) entirely
    image = make_geotiff(tmp_path / "img.tif", data, origin=ORIGIN, nodata=0)
    fn = Counting()
    out = tmp_path / "map.tif"
    res = segment(image, _weak(make_geotiff, tmp_path / "weak.tif"), out=out, prior=tiny_lc_prior, infer=fn,
                  tile_size=256, overlap=32, batch_size=3, probabilities=tmp_path / "p.tif")
    grid = TileGrid(512, 512, 256, 32)  # 3 x 3 tiles; only tile (0, 0) is all nodata
    assert res.stats["tiles"] == len(grid) == 9
    assert res.stats["skipped"] == 1 and res.stats["ran"] == 8 == sum(fn.calls)
    codes = _read(out)
    probs = _read(tmp_path / "p.tif", None)
    assert (codes[:300, :300] == 0).all() and (probs[:, :300, :300] == 0).all()
    hole = np.zeros(codes.shape, bool)
    hole[:300, :300] = True
    assert (codes[~hole] != 0).all()
    with rasterio.open(out) as ds:
        assert ds.nodata == 0


@pytest.mark.parametrize("read", ["aligned", "warped"])
def test_nir_zeros_are_data_not_holes(make_geotiff, tiny_lc_prior, tmp_path: Path, read: str) -> None:
    """4-band NAIP flags NIR as alpha; NIR = 0 (water) is data, read directly or through a warp."""
    src = NAIP if read == "aligned" else NAIP_06  # 1 m: read as is; 0.6 m: warped to the prior's 1 m
    with rasterio.open(src) as ds:
        assert ds.nodata is None
        profile, data = ds.profile, ds.read()
    data[3, 40:100, 50:120] = 0
    image = tmp_path / "img.tif"
    with rasterio.open(image, "w", **{**profile, "photometric": "RGB", "alpha": "YES"}) as dst:
        dst.write(data)  # NIR written as the alpha extra sample, as many NAIP files come
    with rasterio.open(image) as ds:
        assert ds.colorinterp[3] == rasterio.enums.ColorInterp.alpha
    weak = NLCD if read == "aligned" else _nlcd_blocks(make_geotiff, tmp_path / "nlcd.tif", src)
    res = segment(image, weak, out=tmp_path / "map.tif", prior=tiny_lc_prior, infer=pixelwise, tile_size=128,
                  overlap=16)
    assert res.stats["skipped"] == 0
    codes = _read(tmp_path / "map.tif")
    assert (codes[40:100, 50:120] != 0).all()
    assert (codes != 0).mean() > 0.99


def test_an_all_nodata_region_is_an_error(make_geotiff, tiny_lc_prior, tmp_path: Path) -> None:
    image = make_geotiff(tmp_path / "img.tif", np.zeros((4, 200, 300), np.uint8), origin=ORIGIN, nodata=0)
    fn = Counting()
    out = tmp_path / "out" / "map.tif"
    out.parent.mkdir()
    with pytest.raises(InputError, match="no tile of the region holds a valid pixel"):
        segment(image, _weak(make_geotiff, tmp_path / "weak.tif"), out=out, prior=tiny_lc_prior, infer=fn,
                tile_size=128, overlap=16)
    assert fn.calls == []
    assert [p.name for p in out.parent.iterdir()] == ["map.tif.work"]  # kept: only .skip markers


# -- 7. outputs --------------------------------------------------------------------------------------


def test_outputs_cog_style_config_and_products(region, baseline, tiny_lc_prior, tmp_path: Path,
                                               fast_cli) -> None:
    image, weak = region
    out = tmp_path / "map.tif"
    res = _cli([str(image), "--weak-labels", str(weak), "--out", str(out), "--prior", str(tiny_lc_prior),
                "--seed", "7", "--tile-size", "128", "--overlap", "16", "--probabilities",
                str(tmp_path / "p.tif"), "-q"])
    assert res.exit_code == 0, res.output
    assert "35 tiles ran" in res.output
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.overviews(1)
        assert ds.nodata == 0 and ds.dtypes[0] == "uint8"
        assert ds.descriptions[0] == "land cover (chesapeake)"
        cmap = ds.colormap(1)
        for code, rgb in zip(LEGEND.codes, LEGEND.colors, strict=True):
            assert cmap[code][:3] == tuple(rgb)
        assert ds.tags()["GEO_PPP_SEED"] == "7"
        codes = ds.read(1)
    assert np.array_equal(codes, baseline["map"])  # the CLI map is the API map
    assert (tmp_path / "map.qml").exists()
    assert (tmp_path / "map.tif.aux.xml").exists()
    config = json.loads((tmp_path / "map.tif.json").read_text())
    assert config["seed"] == 7
    assert config["tiles"] == {"height": REGION_H, "width": REGION_W, "size": 128, "overlap": 16}
    assert "segment" in config["command"] and "--seed 7" in config["command"]
    assert "--tile-size 128" in config["command"]
    # the recorded command reruns as recorded: the positional IMAGE is in it
    recorded = shlex.split(config["command"])
    assert str(image) in recorded
    rerun = _cli([*recorded[recorded.index("segment") + 1:], "--out", str(tmp_path / "again.tif"),
                  "--probabilities", str(tmp_path / "p2.tif")])
    assert rerun.exit_code == 0, rerun.output
    with rasterio.open(tmp_path / "again.tif") as ds:
        assert np.array_equal(ds.read(1), codes)
    with rasterio.open(tmp_path / "p.tif") as ds:
        assert ds.count == LEGEND.num_classes and ds.dtypes == ("uint8",) * 4
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        probs = ds.read().astype(int)
    assert np.abs(probs.sum(0) - 255).max() <= 4
    assert not (tmp_path / "map.tif.work").exists()
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch files
    assert hidden == []


def test_vector_output_has_one_row_per_class_present(tiny_lc_prior, tmp_path: Path, fast_cli) -> None:
    """--vector on a small AOI (the pixel-wise map is speckled: polygonising all of it is slow)."""
    import geopandas as gpd

    out = tmp_path / "map.tif"
    aoi = f"{ORIGIN[0] + 64},{ORIGIN[1] - 160},{ORIGIN[0] + 160},{ORIGIN[1] - 64}"
    res = _cli([str(NAIP), "--weak-labels", str(NLCD), "--out", str(out), "--prior", str(tiny_lc_prior),
                "--aoi", aoi, "--vector", str(tmp_path / "map.gpkg"), "-q"])
    assert res.exit_code == 0, res.output
    codes = _read(out)
    assert codes.shape == (96, 96)
    gdf = gpd.read_file(tmp_path / "map.gpkg")
    present = sorted(int(c) for c in np.unique(codes) if c != 0)
    assert len(present) >= 2
    assert sorted(gdf["code"].astype(int)) == present and len(gdf) == len(present)
    assert list(gdf["name"]) == [LEGEND.names[LEGEND.codes.index(c)] for c in gdf["code"]]
    assert gdf.crs == CRS
    # the polygons cover the mapped area (simplified by one pixel, so only roughly)
    assert abs(gdf.geometry.area.sum() - (codes != 0).sum()) < 0.05 * codes.size


def test_quicklook_png(region, tiny_lc_prior, tmp_path: Path) -> None:
    pytest.importorskip("geo_ppp.io.quicklook")
    image, weak = region
    res = segment(image, weak, out=tmp_path / "map.tif", prior=tiny_lc_prior, infer=pixelwise,
                  quicklook=tmp_path / "q.png")
    assert (tmp_path / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res.outputs["quicklook"] == tmp_path / "q.png"


# -- 8. vector weak labels ---------------------------------------------------------------------------


def _nlcd_polygons(path: Path, attribute: str = "nlcd", offset: float = 0.0) -> Path:
    import geopandas as gpd
    from rasterio.features import shapes
    from shapely.affinity import translate
    from shapely.geometry import shape

    with rasterio.open(NLCD) as ds:
        data = ds.read(1)
        rows = [(shape(g), int(v)) for g, v in shapes(data, mask=data != ds.nodata, transform=ds.transform)]
        crs = ds.crs
    gdf = gpd.GeoDataFrame({attribute: np.array([v for _, v in rows], np.int32)},
                           geometry=[translate(g, offset, offset) for g, _ in rows], crs=crs)
    gdf.to_file(path, driver="GPKG")
    return path


def test_vector_weak_labels(tmp_path: Path, tiny_lc_prior, fast_cli) -> None:
    gpkg = _nlcd_polygons(tmp_path / "nlcd.gpkg")
    out = tmp_path / "v.tif"
    res = _cli([str(NAIP), "--weak-labels", str(gpkg), "--label-attribute", "nlcd", "--out", str(out),
                "--prior", str(tiny_lc_prior), "-q"])
    assert res.exit_code == 0, res.output
    res = _cli([str(NAIP), "--weak-labels", str(NLCD), "--out", str(tmp_path / "r.tif"), "--prior",
                str(tiny_lc_prior), "-q"])
    assert res.exit_code == 0, res.output
    # the same classes from polygons as from the raster they came from, except along polygon edges
    v, r = _read(out), _read(tmp_path / "r.tif")
    assert (v != 0).all() and (v == r).mean() > 0.95
    config = json.loads((tmp_path / "v.tif.json").read_text())
    assert config["weak_labels"]["kind"] == "vector" and config["weak_labels"]["attribute"] == "nlcd"

    res = _cli([str(NAIP), "--weak-labels", str(gpkg), "--out", str(tmp_path / "x.tif"), "--prior",
                str(tiny_lc_prior)])
    assert res.exit_code != 0
    assert "--label-attribute" in res.output
    assert not (tmp_path / "x.tif").exists()


# -- 9. AOI ------------------------------------------------------------------------------------------


def test_aoi_crops_the_output_grid(tmp_path: Path, tiny_lc_prior) -> None:
    with rasterio.open(NAIP) as ds:
        b = ds.bounds
        transform = ds.transform
    half = (b.left, b.bottom, b.left + 128, b.top)
    res = segment(NAIP, NLCD, out=tmp_path / "half.tif", prior=tiny_lc_prior, infer=pixelwise,
                  aoi=",".join(str(v) for v in half))
    with rasterio.open(tmp_path / "half.tif") as ds:
        assert (ds.width, ds.height) == (128, 256)
        assert ds.transform.almost_equals(transform) and ds.crs == CRS
        codes = ds.read(1)
    assert (codes != 0).all()
    assert res.stats["tiles"] == 1
    # the map on the AOI is the whole image's map cropped (pixel-wise inference)
    segment(NAIP, NLCD, out=tmp_path / "whole.tif", prior=tiny_lc_prior, infer=pixelwise)
    assert np.array_equal(codes, _read(tmp_path / "whole.tif")[:, :128])

    # the same box in EPSG:4326: the AOI polygon is a slightly rotated quad in the image CRS
    from shapely import contains_xy

    from geo_ppp.io.vectors import read_aoi

    lon_lat = transform_bounds(CRS, "EPSG:4326", *half)
    spec = ",".join(f"{v:.7f}" for v in lon_lat) + "@EPSG:4326"
    segment(NAIP, NLCD, out=tmp_path / "geo.tif", prior=tiny_lc_prior, infer=pixelwise, aoi=spec)
    poly = read_aoi(spec, CRS)
    with rasterio.open(tmp_path / "geo.tif") as ds:
        t = ds.transform
        assert ds.crs == CRS and (t.a, t.e) == (1.0, -1.0)
        gb = ds.bounds
        codes = ds.read(1)
        rows, cols = np.mgrid[0 : ds.height, 0 : ds.width]
    assert b.left <= gb.left and gb.right <= b.right and b.bottom <= gb.bottom and gb.top <= b.top
    assert 128 <= codes.shape[1] <= 140 and codes.shape[0] == 256
    x, y = t.c + (cols + 0.5) * t.a, t.f + (rows + 0.5) * t.e
    assert (codes[contains_xy(poly.buffer(-1.0), x, y)] != 0).all()
    assert (codes[~contains_xy(poly.buffer(1.0), x, y)] == 0).all()
    assert (~contains_xy(poly.buffer(1.0), x, y)).any()  # there are pixels outside the quad

    with pytest.raises(InputError, match="does not overlap"):
        segment(NAIP, NLCD, out=tmp_path / "far.tif", prior=tiny_lc_prior, infer=pixelwise, aoi="0,0,100,100")
    assert not (tmp_path / "far.tif").exists()


# -- 10. bad input through the CLI ---------------------------------------------------------------------


BAD_CASES = {
    "not_a_raster": "is not a raster",
    "no_crs": "has no CRS",
    "no_geotransform": "no geotransform",
    "aoi_misses": "does not overlap",
    "aoi_not_a_bbox": "neither an existing vector file nor a bbox",
    "vector_without_attribute": "has no attribute 'class'",
    "vector_misses": "do not overlap",
    "bands_out_of_range": "bands [7] out of range",
    "bands_not_numbers": "not a list of band numbers",
    "overlap_too_large": "smaller than the tile size",
    "batch_size_zero": "--batch-size must be >= 1",
    "workdir_is_a_file": "cannot create the work dir",
    "out_folder_missing": "does not exist",
    "out_under_a_file": "is a file, not a folder",
    "probabilities_exist": "--overwrite",
    "nan_in_the_last_tile": "holds NaN values (first in rows 512-560)",
    "truncated_cog": "is damaged: rows",
    "vrt_source_missing": "is damaged: rows",
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_segment_bad_input_leaves_nothing(make_geotiff, tmp_path: Path, tiny_lc_prior, fast_cli,
                                          case: str) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    image, weak, out = NAIP, NLCD, out_dir / "map.tif"
    extra: list[str] = []
    naip = _patch(0)
    if case == "not_a_raster":
        image = inputs / "img.tif"
        image.write_text("this is not a GeoTIFF\n")
    elif case == "no_crs":
        image = make_geotiff(inputs / "img.tif", naip, crs=None, origin=ORIGIN)
    elif case == "no_geotransform":
        image = make_geotiff(inputs / "img.tif", naip, crs=CRS)
    elif case == "aoi_misses":
        extra = ["--aoi", "500000,4000000,500100,4000100"]
    elif case == "aoi_not_a_bbox":
        extra = ["--aoi", str(inputs / "missing.gpkg")]
    elif case == "vector_without_attribute":
        weak = _nlcd_polygons(inputs / "nlcd.gpkg")
        extra = ["--label-attribute", "class"]
    elif case == "vector_misses":
        weak = _nlcd_polygons(inputs / "nlcd.gpkg", offset=50_000.0)
        extra = ["--label-attribute", "nlcd"]
    elif case == "bands_out_of_range":
        extra = ["--bands", "1,2,7"]
    elif case == "bands_not_numbers":
        extra = ["--bands", "r,g,b"]
    elif case == "overlap_too_large":
        extra = ["--overlap", "256"]
    elif case == "batch_size_zero":
        extra = ["--batch-size", "0"]
    elif case == "workdir_is_a_file":
        (inputs / "work").write_text("a file\n")
        extra = ["--workdir", str(inputs / "work")]
    elif case == "out_folder_missing":
        out = tmp_path / "missing" / "map.tif"
    elif case == "out_under_a_file":
        (tmp_path / "file.txt").write_text("a file\n")
        out = tmp_path / "file.txt" / "map.tif"
    elif case == "probabilities_exist":
        (out_dir / "p.tif").write_bytes(b"precious")
        extra = ["--probabilities", str(out_dir / "p.tif")]
    elif case == "nan_in_the_last_tile":  # found while planning, not when its tile comes
        data = _region_array().astype(np.float32)
        data[:, -5:, -5:] = np.nan
        image = make_geotiff(inputs / "img.tif", data, origin=ORIGIN)
    elif case == "truncated_cog":  # the header reads, the last blocks do not
        data = _region_array()
        full = make_geotiff(inputs / "full.tif", data, origin=ORIGIN, tiled=True,
                            blockxsize=128, blockysize=128, compress="deflate")
        image = inputs / "img.tif"
        image.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.7)])
    elif case == "vrt_source_missing":
        image = _vrt_of_two_files(make_geotiff, inputs)
        (inputs / "b.tif").unlink()  # the VRT opens; its second half's source is gone
    args = [str(image), "--weak-labels", str(weak), "--out", str(out), "--prior", str(tiny_lc_prior), "-q",
            *extra]

    res = _cli(args)
    assert res.exit_code != 0
    assert BAD_CASES[case] in res.output, res.output
    assert "Traceback" not in res.output
    assert not out.exists()
    expected = ["p.tif"] if case == "probabilities_exist" else []
    assert sorted(p.name for p in out_dir.iterdir()) == expected  # no output, no temporary, no work dir
    if case == "probabilities_exist":
        assert (out_dir / "p.tif").read_bytes() == b"precious"
        return
    if not out.parent.is_dir():
        return
    # an existing output survives a failed run, even with --overwrite
    out.write_bytes(b"precious")
    res = _cli([*args, "--overwrite"])
    assert res.exit_code != 0 and BAD_CASES[case] in res.output, res.output
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in out_dir.iterdir()) == ["map.tif"]


def test_output_folder_that_cannot_be_written(tmp_path: Path, tiny_lc_prior, fast_cli) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the missing-folder cases cover this path")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        res = _cli([str(NAIP), "--weak-labels", str(NLCD), "--out", str(folder / "map.tif"), "--prior",
                    str(tiny_lc_prior)])
        assert res.exit_code != 0 and "not writable" in res.output
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


# -- 11. determinism with the real method --------------------------------------------------------------


def test_same_seed_same_map_other_seed_other_probabilities(make_geotiff, tiny_lc_prior,
                                                           tmp_path: Path) -> None:
    """Two 128-pixel tiles (overlapping by 32) with the tiny prior and three steps.

    Three steps move the estimate little, so another seed may round to the same uint8 probabilities;
    the tiles kept in the work dir (float16) show that the seed reaches every tile. Without the
    region calibration: with it the windows' probabilities come out one-hot (float16), whatever the
    seed (a known limit of the calibrated path, reported in the benchmarks' seam row).
    """
    data = _patch(0)[:, :128, :224]
    image = make_geotiff(tmp_path / "img.tif", np.ascontiguousarray(data), origin=ORIGIN)
    runs = {}
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        res = segment(image, NLCD, out=tmp_path / f"{name}.tif", prior=tiny_lc_prior, steps=3, seed=seed,
                      tile_size=128, overlap=32, probabilities=tmp_path / f"{name}-p.tif",
                      workdir=tmp_path / f"{name}-work", calibrate=False)
        assert res.stats["ran"] == res.stats["tiles"] == 2
        tiles = [np.load(tmp_path / f"{name}-work" / "tiles" / f"r0000_c000{c}.npy") for c in (0, 1)]
        runs[name] = (_read(tmp_path / f"{name}.tif"), _read(tmp_path / f"{name}-p.tif", None), tiles)
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()
    assert (tmp_path / "a-p.tif").read_bytes() == (tmp_path / "b-p.tif").read_bytes()
    assert all(np.array_equal(x, y) for x, y in zip(runs["a"][2], runs["b"][2], strict=True))
    assert all(not np.array_equal(x, y) for x, y in zip(runs["a"][2], runs["c"][2], strict=True))
    assert (runs["a"][0] != 0).all() and len(np.unique(runs["a"][0])) >= 2
