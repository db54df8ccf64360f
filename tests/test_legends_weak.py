"""Legends (codes, remapping, JSON files) and weak labels (blur, co-occurrence, weak distribution)."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from geo_ppp.errors import ConfigError
from geo_ppp.geo.legend import BUILTIN_LEGENDS, Legend, load_legend
from geo_ppp.landcover.weak import (
    BUILTIN_COOCCURRENCE,
    Cooccurrence,
    estimate_cooccurrence,
    gaussian_blur,
    load_cooccurrence,
    weak_distribution,
)
from tests.conftest import NAIP, NLCD, sample_tile

# ----------------------------------------------------------------------------------------- legends


@pytest.mark.parametrize("name", BUILTIN_LEGENDS)
def test_builtin_legends_load(name):
    legend = load_legend(name)
    assert legend.name == name
    assert legend.num_classes == len(legend.names) == len(legend.colors) >= 4
    assert legend.nodata not in legend.codes
    # the dict form reads back to the same legend
    assert Legend.from_dict(legend.to_dict()) == legend


def test_chesapeake_legend_contents():
    legend = load_legend("chesapeake")
    assert legend.codes == (1, 2, 3, 4)
    assert legend.colors[0] == (0x00, 0xC5, 0xFF)
    assert load_legend(legend) is legend


def test_user_json_legend(tmp_path):
    data = {
        "name": "mine",
        "nodata": 255,
        "classes": [{"code": 7, "name": "wet", "color": "#0000ff"}, {"code": 9, "name": "dry", "color": [1, 2, 3]}],
        "remap": {"8": 9, "0": 255},
    }
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(data))
    legend = load_legend(path)
    assert legend.codes == (7, 9) and legend.nodata == 255
    assert legend.colors == ((0, 0, 255), (1, 2, 3))
    assert legend.to_index(np.array([7, 8, 9, 0, 255])).tolist() == [0, 1, 1, -1, -1]
    # a name with no "name" key comes from the file name
    del data["name"]
    (tmp_path / "other.json").write_text(json.dumps(data))
    assert load_legend(tmp_path / "other.json").name == "other"


def test_user_legend_unknown_key_is_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "x", "classes": [{"code": 1, "name": "a"}], "colour_table": {}}))
    with pytest.raises(ConfigError, match="colour_table"):
        load_legend(path)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"classes": [{"code": 1}]}, "'code' and 'name'"),
        ({"classes": [{"code": 1, "name": "a"}, {"code": 1, "name": "b"}]}, "repeats"),
        ({"classes": [{"code": 1, "name": "a"}], "nodata": 1}, "nodata 1 is also a class"),
        ({"classes": [{"code": 1, "name": "a"}], "remap": {"5": 3}}, r"remap targets \[3\]"),
        ({"classes": [{"code": 300, "name": "a"}]}, "uint8"),
        ({"classes": [{"code": 1, "name": "a", "color": "#12"}]}, "rrggbb"),
    ],
)
def test_bad_user_legends(tmp_path, data, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=match):
        load_legend(path)


def test_unknown_legend_and_bad_json(tmp_path):
    with pytest.raises(ConfigError, match="unknown legend 'nope'.*chesapeake"):
        load_legend("nope")
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_legend(path)


def test_chesapeake_remaps_7_class_codes():
    legend = load_legend("chesapeake")
    raw = np.array([[1, 2, 3], [4, 5, 6], [15, 0, 2]], dtype=np.uint8)
    idx = legend.to_index(raw)
    assert idx.tolist() == [[0, 1, 2], [3, 3, 3], [-1, -1, 1]]
    assert legend.to_codes(idx).tolist() == [[1, 2, 3], [4, 4, 4], [0, 0, 2]]
    # a raster's own nodata code can be added
    assert legend.to_index(raw, extra_nodata=3)[0].tolist() == [0, 1, -1]


def test_unknown_codes_are_named():
    legend = load_legend("chesapeake")
    with pytest.raises(ConfigError) as err:
        legend.to_index(np.array([1, 2, 41, 7, 41, 82]))
    msg = str(err.value)
    assert "[7, 41, 82]" in msg and "chesapeake" in msg and "remap" in msg
    with pytest.raises(ConfigError, match="integer codes"):
        legend.to_index(np.array([1.0, 2.0]))
    with pytest.raises(ConfigError, match="0-255"):
        legend.to_index(np.array([1, 256]))


@pytest.mark.parametrize("name", BUILTIN_LEGENDS)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_index_codes_round_trip(name, data):
    legend = load_legend(name)
    k = legend.num_classes
    index = data.draw(hnp.arrays(np.int64, hnp.array_shapes(max_dims=3, max_side=6), elements=st.integers(-1, k - 1)))
    codes = legend.to_codes(index)
    assert codes.dtype == np.uint8 and codes.shape == index.shape
    assert np.array_equal(legend.to_index(codes), index)
    # and codes -> index -> codes is the identity on legend codes and nodata
    allowed = [*legend.codes, legend.nodata]
    picks = data.draw(hnp.arrays(np.int64, index.shape, elements=st.sampled_from(range(len(allowed)))))
    raw = np.array(allowed, dtype=np.uint8)[picks]
    assert np.array_equal(legend.to_codes(legend.to_index(raw)), raw)


# -------------------------------------------------------------------------------------- co-occurrence


def _co(matrix, sources=(11, 41, 82), targets=(1, 2, 3, 4)):
    return Cooccurrence("chesapeake", tuple(sources), tuple(targets), np.asarray(matrix, dtype=np.float64))


MATRIX = np.array(
    [
        [0.9, 0.0, 0.05],
        [0.05, 0.8, 0.05],
        [0.05, 0.1, 0.8],
        [0.0, 0.1, 0.1],
    ]
)


@pytest.mark.parametrize("name", sorted(BUILTIN_COOCCURRENCE))
def test_shipped_matrices_match_their_legends(name):
    co = load_cooccurrence(name)
    co.check_legend(load_legend(co.legend))
    assert np.allclose(co.matrix.sum(0), 1.0)
    assert co.description  # says where it came from
    assert 0 not in co.source_codes


def test_cooccurrence_normalises_and_checks():
    co = _co(MATRIX * 3)
    assert np.allclose(co.matrix, MATRIX)
    with pytest.raises(ConfigError, match="expected"):
        _co(MATRIX[:, :2])
    with pytest.raises(ConfigError, match=r"empty columns for source codes \[41\]"):
        _co(np.c_[MATRIX[:, :1], np.zeros(4), MATRIX[:, 2:]])
    with pytest.raises(ConfigError, match="non-negative"):
        _co(-MATRIX)
    with pytest.raises(ConfigError, match="legend 'enviroatlas'"):
        co.check_legend(load_legend("enviroatlas"))


def test_cooccurrence_save_load_round_trip(tmp_path):
    co = _co(MATRIX)
    co.save(tmp_path / "m.json")
    back = load_cooccurrence(tmp_path / "m.json")
    assert back.source_codes == co.source_codes and back.target_codes == co.target_codes
    assert np.allclose(back.matrix, co.matrix, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    with pytest.raises(ConfigError, match="unknown co-occurrence"):
        load_cooccurrence(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"matrix": [[1.0]]}))
    with pytest.raises(ConfigError, match="source_codes"):
        load_cooccurrence(tmp_path / "bad.json")


def test_weak_distribution_sums_to_one_and_matches_columns():
    co = _co(MATRIX)
    src = np.full((64, 96), 11, dtype=np.uint8)
    src[:, 48:] = 82
    dist = weak_distribution(src, co, sigma=3.0)
    assert dist.shape == (1, 4, 64, 96)
    assert torch.allclose(dist.sum(1), torch.ones(1, 64, 96), atol=1e-5)
    # far from the boundary (> 3 sigma) each half is its source's column
    left = dist[0, :, :, :30].reshape(4, -1)
    right = dist[0, :, :, 66:].reshape(4, -1)
    assert torch.allclose(left, torch.tensor(MATRIX[:, 0], dtype=torch.float32)[:, None], atol=1e-5)
    assert torch.allclose(right, torch.tensor(MATRIX[:, 2], dtype=torch.float32)[:, None], atol=1e-5)
    # on the boundary it is a mixture of the two
    mid = dist[0, 0, 32, 47].item()
    assert MATRIX[0, 2] + 0.1 < mid < MATRIX[0, 0] - 0.1


def test_weak_distribution_uniform_raster_equals_column():
    co = _co(MATRIX)
    dist = weak_distribution(np.full((2, 40, 40), 41), co, sigma=31.0)
    assert dist.shape == (2, 4, 40, 40)
    assert torch.allclose(dist, torch.tensor(MATRIX[:, 1], dtype=torch.float32).view(1, 4, 1, 1), atol=1e-5)


def test_weak_distribution_unknown_codes_named():
    co = _co(MATRIX)
    src = np.full((16, 16), 11)
    src[0, 0], src[5, 5] = 95, 21
    with pytest.raises(ConfigError) as err:
        weak_distribution(src, co, sigma=1.0)
    assert "[21, 95]" in str(err.value) and "cooccurrence" in str(err.value)


def test_weak_distribution_fills_nodata():
    co = _co(MATRIX)
    src = np.full((48, 48), 41)
    src[20:28, 20:28] = 0  # a small hole: filled from the neighbours
    dist = weak_distribution(src, co, sigma=4.0)
    assert torch.isfinite(dist).all()
    assert torch.allclose(dist[0, :, 24, 24], torch.tensor(MATRIX[:, 1], dtype=torch.float32), atol=1e-4)
    # all nodata: the mean column everywhere
    empty = weak_distribution(np.zeros((16, 16), dtype=np.int64), co, sigma=2.0)
    mean = torch.tensor(MATRIX.mean(1), dtype=torch.float32)
    assert torch.allclose(empty[0, :, 8, 8], mean / mean.sum(), atol=1e-5)
    # nodata=None: 0 is a real code and must be in the matrix
    with pytest.raises(ConfigError, match=r"\[0\]"):
        weak_distribution(src, co, sigma=1.0, nodata=None)


def test_weak_distribution_with_shipped_matrix_on_real_nlcd():
    from geo_ppp.io import read_image, read_labels_on_grid

    _, _, grid = read_image(NAIP)
    nlcd, nodata = read_labels_on_grid(NLCD, grid)
    dist = weak_distribution(nlcd, load_cooccurrence("chesapeake"), sigma=31.0, nodata=nodata)
    assert dist.shape == (1, 4, 256, 256)
    assert torch.isfinite(dist).all() and torch.allclose(dist.sum(1), torch.ones(1), atol=1e-5)


# ---------------------------------------------------------------------------------------------- blur


def test_gaussian_blur_keeps_constant_and_mean():
    x = torch.full((2, 3, 20, 30), 0.7)
    assert torch.allclose(gaussian_blur(x, 2.5), x, atol=1e-6)
    # tiny inputs (radius >= size) fall back to replicate padding and still keep constants
    small = torch.full((1, 1, 4, 4), 2.0)
    assert torch.allclose(gaussian_blur(small, 5.0), small, atol=1e-6)
    assert gaussian_blur(x, 0) is x
    noise = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    out = gaussian_blur(noise, 2.0)
    assert out.shape == noise.shape
    assert abs(out.mean().item() - noise.mean().item()) < 5e-3
    assert out.std() < noise.std() / 2


def test_gaussian_blur_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    img = np.random.default_rng(0).random((40, 50)).astype(np.float64)
    ours = gaussian_blur(torch.tensor(img)[None, None], 2.0)[0, 0].numpy()
    # torch "reflect" padding does not repeat the edge pixel: scipy calls that "mirror"
    ref = ndimage.gaussian_filter(img, 2.0, mode="mirror", truncate=3.0)
    assert np.abs(ours - ref).max() < 1e-6


# ------------------------------------------------------------------------------------------ estimate


def test_estimate_cooccurrence_recovers_a_known_mapping():
    legend = load_legend("chesapeake")
    rng = np.random.default_rng(1)
    source = rng.choice([11, 41, 82, 0], size=(200, 200))
    true_map = {11: 1, 41: 2, 82: 3}
    target = np.vectorize(lambda s: true_map.get(s, 15))(source).astype(np.uint8)
    # 10 % label noise in 41 -> built (code 5, remapped to 4)
    noisy = (source == 41) & (rng.random(source.shape) < 0.1)
    target[noisy] = 5
    co = estimate_cooccurrence([(target, source)], legend, source_nodata=0, smoothing=0.0)
    assert co.source_codes == (11, 41, 82)
    assert co.target_codes == (1, 2, 3, 4)
    assert np.allclose(co.matrix.sum(0), 1.0)
    assert co.matrix[0, 0] == 1.0 and co.matrix[2, 2] == 1.0
    assert co.matrix[1, 1] == pytest.approx(0.9, abs=0.01)
    assert co.matrix[3, 1] == pytest.approx(0.1, abs=0.01)
    # smoothing adds a pseudo-count everywhere, so no cell is exactly 0 or 1
    smooth = estimate_cooccurrence([(target, source)], legend, source_nodata=0, smoothing=1.0)
    assert (smooth.matrix > 0).all() and (smooth.matrix < 1).all()
    assert np.allclose(smooth.matrix.sum(0), 1.0)


def test_estimate_cooccurrence_sites_weigh_equally() -> None:
    """Two sites that disagree on NLCD 41 (tree 0.9 vs 0.5): pooled pixels follow the bigger one,
    site weighting gives their mean, whatever the pixel counts; a site of several pairs is one site."""
    legend = load_legend("chesapeake")
    rng = np.random.default_rng(3)

    def site(n: int, p_tree: float) -> tuple[np.ndarray, np.ndarray]:
        source = np.full((n, n), 41, np.uint8)
        target = np.where(rng.random(source.shape) < p_tree, 2, 3).astype(np.uint8)
        return target, source

    big, small = site(300, 0.9), site(30, 0.5)  # 100x the pixels
    pooled = estimate_cooccurrence([big, small], legend, smoothing=0.0)
    weighted = estimate_cooccurrence([big, small], legend, smoothing=0.0, sites=["a", "b"])
    p_big = (big[0] == 2).mean()
    p_small = (small[0] == 2).mean()
    assert pooled.matrix[1, 0] == pytest.approx((p_big * 300**2 + p_small * 30**2) / (300**2 + 30**2))
    assert weighted.matrix[1, 0] == pytest.approx((p_big + p_small) / 2)
    # splitting the big site into two pairs of the same site changes nothing
    halves = [(big[0][:150], big[1][:150]), (big[0][150:], big[1][150:])]
    split = estimate_cooccurrence([*halves, small], legend, smoothing=0.0, sites=["a", "a", "b"])
    assert np.allclose(split.matrix, weighted.matrix)
    with pytest.raises(ConfigError, match="one per pair"):
        estimate_cooccurrence([big, small], legend, sites=["a"])
    nodata_site = (np.full((4, 4), 15, np.uint8), np.full((4, 4), 41, np.uint8))
    with pytest.raises(ConfigError, match=r"site\(s\) \['b'\]"):
        estimate_cooccurrence([big, nodata_site], legend, sites=["a", "b"])


def test_estimate_cooccurrence_errors():
    legend = load_legend("chesapeake")
    with pytest.raises(ConfigError, match="not aligned"):
        estimate_cooccurrence([(np.ones((4, 4), np.uint8), np.ones((4, 5), np.uint8))], legend)
    with pytest.raises(ConfigError, match="no pixel"):
        estimate_cooccurrence([(np.full((4, 4), 15, np.uint8), np.full((4, 4), 41, np.uint8))], legend)
    with pytest.raises(ConfigError, match=r"\[9\]"):
        estimate_cooccurrence([(np.full((4, 4), 9, np.uint8), np.full((4, 4), 41, np.uint8))], legend)


def test_shipped_chesapeake_matrix_covers_every_common_nlcd_class() -> None:
    """A new region must not stop on 'unknown codes': the EnviroAtlas prior fills what the tiles lack,
    while the classes the sample tiles do hold keep their local estimate."""
    from geo_ppp.landcover.weak import load_cooccurrence

    co = load_cooccurrence("chesapeake")
    assert set(load_legend("nlcd").codes) <= set(co.source_codes)
    col = dict(zip(co.source_codes, co.matrix.T, strict=True))
    assert col[11].argmax() == 0  # open water -> water
    assert col[24].argmax() == 3  # developed, high intensity -> built
    assert col[41].argmax() == 1  # deciduous forest -> tree canopy (local estimate)
    assert col[71][2] > 0.75  # grassland -> low vegetation (0.94 in West Virginia, 0.21 near Cumberland)


def test_weak_distribution_at_the_prior_resolution_matches_pooling_the_full_one() -> None:
    """Pool-then-blur at 4 m is the 1 m blur pooled, up to the box filter (far narrower than sigma)."""
    import rasterio
    from torch.nn import functional as F

    from geo_ppp.geo.grid import Grid
    from geo_ppp.io import read_labels_on_grid
    from geo_ppp.landcover.weak import load_cooccurrence, weak_distribution

    naip = sample_tile("naip", 3)
    with rasterio.open(naip) as ds:
        grid = Grid(ds.crs, ds.transform, ds.width, ds.height)
    codes, nodata = read_labels_on_grid(sample_tile("nlcd", 3), grid)
    co = load_cooccurrence("chesapeake")
    full = weak_distribution(codes, co, 31.0, nodata)
    coarse = weak_distribution(codes, co, 31.0, nodata, downsample=4)
    assert coarse.shape == (1, 4, 64, 64)
    assert (F.avg_pool2d(full, 4) - coarse).abs().max() < 0.02
