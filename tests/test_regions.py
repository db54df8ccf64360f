"""Region reading on real NAIP files: windows of a working grid from many files, any alignment."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import rasterio

from geo_ppp.geo.grid import grid_for
from geo_ppp.io.imagery import ImageReader, open_region
from tests.conftest import NAIP, NLCD, TILES, sample_tile


def test_warped_reads_mark_the_area_outside_every_file_invalid() -> None:
    """Eight scattered real patches read on a coarse, unaligned grid: only their footprints are valid.

    (A warped VRT with an alpha band reports itself all-valid in its mask flags; the reader must
    read the alpha band instead, or the gaps between files come back as valid black pixels.)
    """
    paths = sorted((TILES / "naip").glob("*.tif"))
    spec = open_region(paths)
    coarse = grid_for(spec.grid.crs, spec.grid.bounds, 6.0, anchor=spec.grid.transform)
    with ImageReader(replace(spec, work=coarse)) as reader:
        data, valid = reader.read(0, 0, coarse.height, coarse.width)
    footprint = len(paths) * 256 * 256 / 36  # pixels of 6 m covered by the eight 256 m patches
    assert 0.8 * footprint < valid.sum() < 1.3 * footprint
    assert (data[:, valid].mean(1) > 20).all()  # real imagery where valid
    assert (data[:, ~valid] == 0).all()


def test_aligned_and_warped_reads_agree_on_a_real_patch() -> None:
    """The same 1 m window read directly and through a half-pixel-shifted warp differ only by resampling."""
    path = sample_tile("naip", 3)
    spec = open_region(path)
    direct, ok = ImageReader(spec).read(0, 0, 256, 256)
    with rasterio.open(path) as ds:
        shifted = grid_for(ds.crs, ds.bounds, 1.0)
    shifted = replace(shifted, transform=shifted.transform * rasterio.Affine.translation(0.5, 0.5))
    with ImageReader(replace(spec, work=shifted)) as reader:
        warped, ok2 = reader.read(0, 0, 255, 255)
    assert ok.all() and ok2[:-1, :-1].all()
    # bilinear at half-pixel offsets = mean of 4 neighbours
    ref = (direct[:, :-1, :-1] + direct[:, 1:, :-1] + direct[:, :-1, 1:] + direct[:, 1:, 1:]) / 4
    assert np.abs(warped[:, :-1, :-1] - ref[:, :-1, :-1]).mean() < 2.0


def test_relative_paths_become_absolute_in_the_spec(monkeypatch) -> None:  # noqa: ANN001
    """Specs travel to Dask workers whose working directory may differ: local paths are made absolute."""
    from geo_ppp.io.weak_labels import open_weak_labels

    monkeypatch.chdir(TILES)
    spec = open_region("naip/patch0.tif")
    weak = open_weak_labels("nlcd/patch0.tif", spec.grid)
    assert spec.paths == (str(NAIP),)
    assert weak.paths == (str(NLCD),)
