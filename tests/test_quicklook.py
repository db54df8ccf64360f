"""Quicklook PNGs from the real sample tiles: panels, exact legend colours, no pyplot state."""

import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import rasterio

from geo_ppp.errors import ConfigError, ShapeError
from geo_ppp.geo.grid import Grid
from geo_ppp.geo.legend import load_legend
from geo_ppp.io import read_labels_on_grid
from geo_ppp.io.quicklook import colorize, write_quicklook
from tests.conftest import NAIP, NLCD, TRUTH, sample_tile

CHES = load_legend("chesapeake")
NLCD_LEGEND = load_legend("nlcd")


@pytest.fixture(scope="module")
def panels():
    """Decimated (by 2) NAIP RGB, NLCD coloured with the nlcd legend, truth in chesapeake codes."""
    with rasterio.open(NAIP) as ds:
        rgb = ds.read([1, 2, 3])
        grid = Grid(ds.crs, ds.transform, ds.width, ds.height)
    image = np.ascontiguousarray(rgb.transpose(1, 2, 0)[::2, ::2])
    nlcd, nodata = read_labels_on_grid(NLCD, grid)
    weak = colorize(nlcd[::2, ::2], NLCD_LEGEND, nodata=nodata)
    with rasterio.open(TRUTH) as ds:
        truth = ds.read(1)
        truth_nodata = int(ds.nodata)
    codes = CHES.to_codes(CHES.to_index(truth, extra_nodata=truth_nodata))[::2, ::2]
    return image, weak, codes


def _png_rgb(path):
    data = mpimg.imread(path)
    assert data.dtype == np.float32 and data.ndim == 3
    return np.round(data[..., :3] * 255).astype(np.uint8)


def _has_color(rgb, color):
    return bool((rgb == np.asarray(color, dtype=np.uint8)).all(axis=-1).any())


def test_colorize_nlcd_and_nodata():
    codes = np.array([[0, 41], [81, 82]])
    out = colorize(codes, "nlcd")
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 1]) == NLCD_LEGEND.colors[NLCD_LEGEND.codes.index(41)]
    assert tuple(out[1, 1]) == NLCD_LEGEND.colors[NLCD_LEGEND.codes.index(82)]
    # a raster's own nodata code is white too
    assert tuple(colorize(np.array([[250]]), NLCD_LEGEND, nodata=250)[0, 0]) == (255, 255, 255)


def test_colorize_errors():
    with pytest.raises(ConfigError, match=r"\[7\]"):
        colorize(np.array([[1, 7]]), CHES)
    with pytest.raises(ShapeError, match="2-D"):
        colorize(np.zeros((2, 2, 2), dtype=np.uint8), CHES)


def test_quicklook_three_panels_with_legend_colours(tmp_path, panels):
    image, weak, codes = panels
    out = write_quicklook(tmp_path / "ql.png", image, weak, codes, CHES, title="patch0")
    assert out == tmp_path / "ql.png"
    assert [p.name for p in tmp_path.iterdir()] == ["ql.png"]  # no temporary file left behind
    rgb = _png_rgb(out)
    h, w = rgb.shape[:2]
    assert w > 2 * h, (w, h)
    # every class of the map shows its exact legend colour in the map panel (the right third)
    right = rgb[:, 2 * w // 3 :]
    present = sorted(set(np.unique(codes).tolist()) - {CHES.nodata})
    assert present == [2, 3, 4]
    for code in present:
        assert _has_color(right, CHES.colors[CHES.codes.index(code)]), code
    # water (absent from the map) is neither drawn nor in the legend
    assert not _has_color(rgb, CHES.colors[CHES.codes.index(1)])
    # the weak labels are drawn in NLCD colours in the middle panel
    middle = rgb[:, w // 3 : 2 * w // 3]
    for code in (41, 81):
        assert _has_color(middle, NLCD_LEGEND.colors[NLCD_LEGEND.codes.index(code)]), code


def test_quicklook_without_weak_has_two_panels(tmp_path, panels):
    image, weak, codes = panels
    three = _png_rgb(write_quicklook(tmp_path / "three.png", image, weak, codes, CHES))
    two = _png_rgb(write_quicklook(tmp_path / "two.png", image, None, codes, CHES))
    assert two.shape[0] == three.shape[0]
    assert two.shape[1] == pytest.approx(three.shape[1] * 2 / 3, rel=0.02)
    assert not _has_color(two, NLCD_LEGEND.colors[NLCD_LEGEND.codes.index(41)])
    for code in (2, 3, 4):
        assert _has_color(two, CHES.colors[CHES.codes.index(code)])


def test_quicklook_nodata_is_white_and_overwrites(tmp_path, panels):
    image, _, codes = panels
    codes = codes.copy()
    codes[:, : codes.shape[1] // 2] = CHES.nodata
    path = tmp_path / "ql.png"
    path.write_bytes(b"old")
    write_quicklook(path, image, None, codes, CHES, dpi=60)
    rgb = _png_rgb(path)
    h, w = rgb.shape[:2]
    # the left half of the map panel is nodata: white there, apart from titles and legend rows
    band = rgb[h // 3 : h // 2, w // 2 + w // 16 : w // 2 + w // 5]
    assert (band == 255).all()


def test_quicklook_leaves_pyplot_alone(tmp_path, panels):
    image, weak, codes = panels
    had_pyplot = "matplotlib.pyplot" in sys.modules
    if had_pyplot:
        import matplotlib.pyplot as plt

        figures = plt.get_fignums()
    write_quicklook(tmp_path / "ql.png", image, weak, codes, CHES)
    if had_pyplot:
        assert plt.get_fignums() == figures
    else:
        assert "matplotlib.pyplot" not in sys.modules


def test_quicklook_shape_errors(tmp_path, panels):
    image, weak, codes = panels
    with pytest.raises(ShapeError, match="same size"):
        write_quicklook(tmp_path / "x.png", image[:-1], weak, codes, CHES)
    with pytest.raises(ShapeError, match="uint8"):
        write_quicklook(tmp_path / "x.png", image.astype(np.float32), weak, codes, CHES)
    with pytest.raises(ShapeError, match="RGB"):
        write_quicklook(tmp_path / "x.png", image, weak[..., :2], codes, CHES)
    with pytest.raises(ConfigError, match="not in legend"):
        write_quicklook(tmp_path / "x.png", image, weak, codes + 10, CHES)
    assert not list(tmp_path.iterdir())


def test_scattered_files_get_a_contact_sheet_of_their_footprints(tmp_path: Path, tiny_lc_prior: Path) -> None:
    """Three scattered real patches: the quicklook shows each at full resolution, side by side."""


    from geo_ppp.pipeline.job import RunSettings
    from geo_ppp.pipeline.plan import prepare_region
    from geo_ppp.pipeline.publish import _contact_sheet, _sheet_boxes

    patches = [0, 1, 5]
    prep = prepare_region(
        [sample_tile("naip", i) for i in patches], [sample_tile("nlcd", i) for i in patches], "chesapeake",
        tmp_path / "map.tif", settings=RunSettings(prior=tiny_lc_prior), setup_workdir=False,
    )
    boxes = _sheet_boxes(prep.job, prep.job.image.grid, 1024)
    assert boxes is not None and len(boxes) == 3
    assert all((y1 - y0, x1 - x0) == (256, 256) for y0, x0, y1, x1 in boxes)
    panels = [(np.full((256, 256, 3), i, np.uint8), np.zeros((256, 256, 3), np.uint8),
               np.full((256, 256), i + 1, np.uint8)) for i in range(3)]
    rgb, weak, codes = _contact_sheet(panels, nodata=0)
    assert rgb.shape == (256, 3 * 256 + 2 * 8, 3) and codes.shape == rgb.shape[:2]
    assert (codes[:, 256:264] == 0).all()  # the gap is nodata
    assert set(np.unique(codes)) == {0, 1, 2, 3}
    assert not (tmp_path / "map.tif.work").exists()  # planning wrote nothing
