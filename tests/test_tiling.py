"""Property tests of the pure tiling and blending functions (geo_ppp.pipeline.tiling / mosaic)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geo_ppp.errors import ConfigError
from geo_ppp.pipeline.mosaic import blend_strip, iter_strips
from geo_ppp.pipeline.tiling import Tile, TileGrid, axis_starts, feather_weights, tile_seed

FAST = settings(max_examples=60, deadline=None)


@st.composite
def grids(
    draw: st.DrawFn, max_len: int = 700, max_size: int = 160, per_axis: int = 40, half_overlap: bool = False
) -> TileGrid:
    """Random grids of at most about ``per_axis`` tiles along each axis (so the tests stay fast)."""
    size = draw(st.integers(1, max_size))
    overlap = draw(st.integers(0, size // 2 if half_overlap else size - 1))
    longest = min(max_len, size + per_axis * (size - overlap))
    height = draw(st.integers(1, longest))
    width = draw(st.integers(1, longest))
    return TileGrid(height, width, size, overlap)


def _check_axis(starts: list[int], length: int, size: int, overlap: int) -> None:
    assert starts[0] == 0
    assert starts == sorted(set(starts))  # strictly increasing: no tile twice
    if length <= size:
        assert starts == [0]  # one tile at 0, reaching past the edge
    else:
        assert all(0 <= s and s + size <= length for s in starts)  # every tile inside the region
        assert starts[-1] + size == length  # the last one ends on the edge
    for a, b in zip(starts, starts[1:], strict=False):
        assert a + size - b >= overlap  # consecutive tiles overlap by at least `overlap`
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + size] = True
    assert covered.all()


@FAST
@given(grids())
def test_tile_grid_covers_the_region_with_overlapping_tiles_inside_it(grid: TileGrid) -> None:
    _check_axis(grid.ys, grid.height, grid.size, grid.overlap)
    _check_axis(grid.xs, grid.width, grid.size, grid.overlap)
    tiles = grid.tiles
    assert len(grid) == len(tiles) == len(set(tiles)) == len({(t.y, t.x) for t in tiles})
    assert len({t.key for t in tiles}) == len(tiles)
    assert tiles == sorted(tiles)  # row-major
    for t in tiles:
        assert (grid.ys[t.row], grid.xs[t.col]) == (t.y, t.x)
    if len(grid) <= 300:  # the 2-D check, where it is cheap
        count = np.zeros((grid.height, grid.width), np.int32)
        for t in tiles:
            count[t.y : t.y + grid.size, t.x : t.x + grid.size] += 1
        assert count.min() >= 1


@FAST
@given(grids(max_len=400, max_size=64), st.data())
def test_rows_touching_lists_exactly_the_tile_rows_that_intersect(grid: TileGrid, data: st.DataObject) -> None:
    y0 = data.draw(st.integers(0, grid.height - 1))
    y1 = data.draw(st.integers(y0 + 1, grid.height))
    expected = [r for r, y in enumerate(grid.ys) if set(range(y, y + grid.size)) & set(range(y0, y1))]
    assert grid.rows_touching(y0, y1) == expected


def test_tile_grid_docstring_example() -> None:
    grid = TileGrid(height=600, width=500, size=256, overlap=32)
    assert len(grid) == 9
    assert grid.tiles[0] == Tile(0, 0, 0, 0)
    assert (grid.tiles[-1].y, grid.tiles[-1].x) == (344, 244)
    assert axis_starts(256, 256, 32) == [0]
    assert axis_starts(100, 256, 32) == [0]


@pytest.mark.parametrize(
    "height, width, size, overlap, phrase",
    [
        (100, 100, 0, 0, "tile size must be positive"),
        (100, 100, -4, 0, "tile size must be positive"),
        (100, 100, 64, 64, "smaller than the tile size"),
        (100, 100, 64, 80, "smaller than the tile size"),
        (100, 100, 64, -1, "must be >= 0"),
        (0, 100, 64, 8, "empty region"),
        (100, 0, 64, 8, "empty region"),
    ],
)
def test_tile_grid_refuses_bad_settings(height: int, width: int, size: int, overlap: int, phrase: str) -> None:
    with pytest.raises(ConfigError, match=phrase):
        TileGrid(height, width, size, overlap)


@FAST
@given(st.integers(0, 64), st.integers(1, 200))
def test_feather_weights_positive_symmetric_and_one_in_the_middle(overlap: int, extra: int) -> None:
    size = 2 * overlap + extra  # room for a middle
    w = feather_weights(size, overlap)
    assert w.shape == (size, size) and w.dtype == np.float32
    assert (w > 0).all() and (w <= 1).all()
    assert np.array_equal(w, w.T)
    assert np.array_equal(w, w[::-1]) and np.array_equal(w, w[:, ::-1])
    assert w[size // 2, size // 2] == 1.0
    row = w[size // 2, : size // 2 + 1]
    assert (np.diff(row) >= 0).all()  # ramps up towards the middle
    if overlap:
        assert w[0, 0] < 1.0 and w[overlap, overlap] == 1.0


@FAST
@given(st.integers(2, 64), st.data())
def test_feather_weights_positive_whatever_the_overlap(size: int, data: st.DataObject) -> None:
    overlap = data.draw(st.integers(0, size - 1))
    w = feather_weights(size, overlap)
    assert (w > 0).all() and np.array_equal(w, w.T) and np.array_equal(w, w[::-1])


def _field(grid: TileGrid, classes: int, seed: int) -> np.ndarray:
    """A random probability field over the region, summing to 1 at each pixel."""
    p = np.random.default_rng(seed).random((classes, grid.height, grid.width), dtype=np.float32) + 0.05
    return p / p.sum(0)


def _loader(field: np.ndarray, size: int, holes: np.ndarray | None = None, skipped: frozenset = frozenset()):
    """Each tile returns the field on its window (0 past the region's edge and at holes)."""

    def load(tile: Tile) -> np.ndarray | None:
        if (tile.row, tile.col) in skipped:
            return None
        out = np.zeros((field.shape[0], size, size), np.float32)
        part = field[:, tile.y : tile.y + size, tile.x : tile.x + size]
        out[:, : part.shape[1], : part.shape[2]] = part
        if holes is not None:
            h = holes[tile.y : tile.y + size, tile.x : tile.x + size]
            out[:, : h.shape[0], : h.shape[1]][:, h] = 0
        return out

    return load


def _blend(grid: TileGrid, load, classes: int, strip: int) -> tuple[np.ndarray, np.ndarray]:
    parts = [blend_strip(grid, y0, y1, load, classes) for y0, y1 in iter_strips(grid.height, strip)]
    return np.concatenate([p for p, _ in parts], 1), np.concatenate([v for _, v in parts], 0)


@FAST
@given(grids(max_len=200, max_size=64, per_axis=8, half_overlap=True), st.integers(1, 5), st.integers(0, 2**16))
def test_blending_tiles_of_one_field_returns_the_field(grid: TileGrid, classes: int, seed: int) -> None:
    # overlap <= size / 2: at most 2 tiles per axis hold a pixel, so float32 rounding stays < 1e-6
    field = _field(grid, classes, seed)
    probs, valid = _blend(grid, _loader(field, grid.size), classes, grid.height)
    assert probs.shape == field.shape and valid.shape == field.shape[1:]
    assert valid.all()
    np.testing.assert_allclose(probs, field, rtol=0, atol=1e-6)


@FAST
@given(grids(max_len=120, max_size=32, per_axis=8), st.integers(1, 4), st.integers(0, 2**16))
def test_blending_a_field_with_any_overlap(grid: TileGrid, classes: int, seed: int) -> None:
    # any overlap < size: up to (size / (size - overlap))^2 tiles hold a pixel; float32 sums of that many
    field = _field(grid, classes, seed)
    probs, valid = _blend(grid, _loader(field, grid.size), classes, grid.height)
    assert valid.all()
    depth = -(-grid.size // (grid.size - grid.overlap)) + 1
    np.testing.assert_allclose(probs, field, rtol=0, atol=2e-7 * depth * depth)


@FAST
@given(grids(max_len=160, max_size=64, per_axis=6), st.integers(1, 4), st.data())
def test_blending_does_not_depend_on_the_strip_height(grid: TileGrid, classes: int, data: st.DataObject) -> None:
    field = _field(grid, classes, data.draw(st.integers(0, 2**16)))
    holes = np.random.default_rng(1).random((grid.height, grid.width)) < 0.2
    skipped = frozenset(data.draw(st.sets(st.sampled_from([(t.row, t.col) for t in grid.tiles]), max_size=3)))
    load = _loader(field, grid.size, holes, skipped)
    whole, whole_valid = _blend(grid, load, classes, grid.height)
    strip = data.draw(st.integers(1, grid.height))
    probs, valid = _blend(grid, load, classes, strip)
    assert np.array_equal(valid, whole_valid)
    assert np.array_equal(probs, whole)  # bit for bit: each pixel sums the same tiles in the same order
    # holes and skipped tiles: invalid only where no tile has the pixel, 0 there, the field elsewhere
    covered = np.zeros_like(valid)
    for t in grid.tiles:
        if (t.row, t.col) not in skipped:
            covered[t.y : t.y + grid.size, t.x : t.x + grid.size] = True
    assert np.array_equal(valid, covered & ~holes)
    assert (probs[:, ~valid] == 0).all()
    depth = -(-grid.size // (grid.size - grid.overlap)) + 1
    np.testing.assert_allclose(probs[:, valid], field[:, valid], rtol=0, atol=2e-7 * depth * depth)


@FAST
@given(st.integers(1, 2000), st.integers(1, 100))
def test_iter_strips_partitions_the_rows(height: int, strip: int) -> None:
    rows = [y for y0, y1 in iter_strips(height, strip) for y in range(y0, y1)]
    assert rows == list(range(height))
    assert all(0 < y1 - y0 <= strip for y0, y1 in iter_strips(height, strip))


coords = st.integers(0, 10**6)


@FAST
@given(st.integers(-(2**40), 2**40), coords, coords)
def test_tile_seed_is_deterministic_and_a_valid_seed(seed: int, y: int, x: int) -> None:
    s = tile_seed(seed, y, x)
    assert s == tile_seed(seed, y, x)
    assert isinstance(s, int) and 0 <= s < 2**31


@FAST
@given(st.tuples(st.integers(0, 1000), coords, coords), st.tuples(st.integers(0, 1000), coords, coords))
def test_tile_seed_differs_between_positions_and_seeds(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    if a != b:
        assert tile_seed(*a) != tile_seed(*b)


def test_tile_seed_on_a_grid_sample_is_unique() -> None:
    grid = TileGrid(5000, 5000, 256, 32)
    seeds = {tile_seed(s, t.y, t.x) for s in range(3) for t in grid.tiles}
    assert len(seeds) == 3 * len(grid)
    # (y, x) and (x, y) are different tiles
    assert tile_seed(0, 0, 224) != tile_seed(0, 224, 0)


@FAST
@given(
    size=st.integers(4, 40),
    data=st.data(),
)
def test_footprint_grids_cover_every_footprint_pixel_and_blend_like_regular_ones(size: int, data) -> None:
    """Scattered files get one grid each: every footprint pixel is covered, tiles start inside a footprint."""
    overlap = data.draw(st.integers(0, size // 2))
    height, width = data.draw(st.integers(size, 200)), data.draw(st.integers(size, 200))
    boxes = []
    for _ in range(data.draw(st.integers(1, 4))):
        y0, x0 = data.draw(st.integers(0, height - 1)), data.draw(st.integers(0, width - 1))
        y1, x1 = data.draw(st.integers(y0 + 1, height)), data.draw(st.integers(x0 + 1, width))
        boxes.append((y0, x0, y1, x1))
    grid = TileGrid(height, width, size, overlap, tuple(boxes))
    covered = np.zeros((height, width), bool)
    for t in grid.tiles:
        assert any(y0 <= t.y < y1 and x0 <= t.x < x1 for y0, x0, y1, x1 in boxes)
        assert (grid.ys[t.row], grid.xs[t.col]) == (t.y, t.x)
        covered[t.y : t.y + size, t.x : t.x + size] = True
    for y0, x0, y1, x1 in boxes:
        assert covered[y0:y1, x0:x1].all()
    assert len({(t.y, t.x) for t in grid.tiles}) == len(grid) == len(grid.tiles)
    # a constant field blends to itself over the union of the tiles
    field = np.array([0.25, 0.75], np.float32)[:, None, None] * np.ones((2, size, size), np.float32)
    probs, valid = blend_strip(grid, 0, height, lambda t: field, 2)
    assert np.array_equal(valid, covered)
    assert np.allclose(probs[:, valid], field[:, :1, 0].repeat(valid.sum(), 1), atol=1e-5)


@FAST
@given(st.integers(1, 6), st.integers(1, 20), st.integers(1, 20), st.integers(0, 2**31 - 1))
def test_argmax_over_classes_matches_numpy_including_ties(k: int, h: int, w: int, seed: int) -> None:
    from geo_ppp.pipeline.publish import _argmax0

    rng = np.random.default_rng(seed)
    p = rng.integers(0, 3, (k, h, w)).astype(np.float32)  # few values: many ties
    assert np.array_equal(_argmax0(p), p.argmax(0))
