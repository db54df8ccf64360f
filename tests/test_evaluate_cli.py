"""`geo-ppp evaluate` and `geo-ppp cooccurrence` on the real sample tiles."""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from geo_ppp.cli import main
from geo_ppp.errors import ConfigError, InputError
from geo_ppp.geo.legend import load_legend
from geo_ppp.io import read_class_raster, read_labels_on_grid, write_class_map
from geo_ppp.landcover.weak import estimate_cooccurrence, load_cooccurrence
from geo_ppp.pipeline.evaluate import estimate_cooccurrence_from_files, evaluate_files, same_grid
from tests.conftest import ROOT, sample_tile

TRUTHS = [sample_tile("truth", i) for i in range(8)]  # the eight sample patches
NLCDS = [sample_tile("nlcd", i) for i in range(8)]
LEGEND = load_legend("chesapeake")


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="geo-ppp")


def _remapped_truth(tmp_path, patch=0):
    """The truth in legend codes (5/6 -> 4, 15 -> 0), written the way `segment` writes maps."""
    codes, _, grid = read_class_raster(TRUTHS[patch])
    legend_codes = LEGEND.to_codes(LEGEND.to_index(codes))
    return write_class_map(tmp_path / f"pred{patch}.tif", legend_codes, grid, LEGEND), codes, grid


# ------------------------------------------------------------------------------------------- evaluate


def test_evaluate_truth_against_itself():
    res = _run("evaluate", TRUTHS[0], TRUTHS[0])
    assert res.exit_code == 0, res.output
    assert "accuracy:      1.0000" in res.output and "mIoU:          1.0000" in res.output
    assert "confusion matrix" in res.output and "tree canopy" in res.output
    res = _run("evaluate", TRUTHS[0], TRUTHS[0], "--json")
    assert res.exit_code == 0, res.output
    record = json.loads(res.output)
    assert record["accuracy"] == 1.0 and record["miou"] == 1.0
    assert record["prediction"] == str(TRUTHS[0]) and record["truth"] == str(TRUTHS[0])
    assert record["legend"] == "chesapeake"
    assert record["iou"]["water"] is None  # absent from both
    assert record["classes_present"] == ["tree canopy", "low vegetation", "impervious/built"]
    counts = np.array(record["confusion"]["counts"])
    assert counts.sum() == record["pixels"] == 256 * 256
    assert np.count_nonzero(counts - np.diag(np.diag(counts))) == 0


def test_evaluate_uses_the_maps_own_legend_and_refuses_a_contradicting_one(tmp_path):
    pred, _, _ = _remapped_truth(tmp_path)
    before = pred.read_bytes()
    res = _run("evaluate", pred, TRUTHS[0], "--legend", "enviroatlas")
    assert res.exit_code == 1
    assert "records legend 'chesapeake'" in res.output and "--legend is 'enviroatlas'" in res.output
    assert "Traceback" not in res.output and pred.read_bytes() == before
    ok = _run("evaluate", pred, TRUTHS[0], "--json")  # no --legend: the map's own
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["legend"] == "chesapeake"
    # a custom legend under the same name but other class names contradicts the map too
    custom = LEGEND.to_dict()
    custom["classes"][1]["name"] = "forest"
    (tmp_path / "custom.json").write_text(json.dumps(custom))
    res = _run("evaluate", pred, TRUTHS[0], "--legend", tmp_path / "custom.json")
    assert res.exit_code == 1 and "2=forest" in res.output


def test_evaluate_remaps_chesapeake_5_and_6(tmp_path):
    pred, raw, _ = _remapped_truth(tmp_path)
    assert {5}.issubset(set(np.unique(raw).tolist()))  # the raw truth uses the 7-class codes
    assert 4 not in np.unique(raw).tolist()
    scores = evaluate_files(pred, TRUTHS[0], "chesapeake")
    assert scores.accuracy == 1.0
    built = int(np.isin(raw, [4, 5, 6]).sum())
    assert built > 0 and scores.confusion[3, 3] == built
    # the other way round: the raw 7-class map as the prediction scores the same
    assert evaluate_files(TRUTHS[0], pred, LEGEND).accuracy == 1.0


def test_evaluate_scores_errors_and_ignores_nodata(tmp_path):
    codes, _, grid = read_class_raster(TRUTHS[0])
    pred_codes = LEGEND.to_codes(LEGEND.to_index(codes))
    tree = pred_codes == 2
    wrong = pred_codes.copy()
    wrong[tree] = 3  # every tree pixel called low vegetation
    wrong[:16, :] = LEGEND.nodata  # and the top rows left unpredicted
    path = write_class_map(tmp_path / "wrong.tif", wrong, grid, LEGEND)
    scores = evaluate_files(path, TRUTHS[0], LEGEND)
    scored = ~np.zeros_like(tree)
    scored[:16, :] = False
    assert scores.pixels == int(scored.sum())
    assert scores.accuracy == pytest.approx(1 - (tree & scored).sum() / scored.sum())
    assert scores.iou[1] == 0.0  # no tree predicted
    assert scores.confusion[1, 2] == int((tree & scored).sum())
    res = _run("evaluate", path, TRUTHS[0], "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["accuracy"] == pytest.approx(scores.accuracy)


def test_evaluate_reprojects_a_truth_on_another_grid(tmp_path):
    # the truth written again at 2 m: evaluate must read it on the 1 m prediction grid
    pred, raw, grid = _remapped_truth(tmp_path)
    coarse_tf = grid.transform @ Affine.scale(2, 2)
    with rasterio.open(
        tmp_path / "truth2m.tif", "w", driver="GTiff", width=128, height=128, count=1, dtype="uint8",
        crs=grid.crs, transform=coarse_tf, nodata=15,
    ) as dst:
        dst.write(raw[::2, ::2].astype(np.uint8), 1)
    _, _, coarse_grid = read_class_raster(tmp_path / "truth2m.tif")
    assert not same_grid(grid, coarse_grid) and same_grid(grid, grid)
    scores = evaluate_files(pred, tmp_path / "truth2m.tif", LEGEND)
    assert scores.pixels == 256 * 256
    assert 0.85 < scores.accuracy < 1.0  # nearest neighbour at 2 m: right except near class edges


def test_evaluate_errors(tmp_path):
    res = _run("evaluate", NLCDS[0], TRUTHS[0])  # NLCDS codes are not Chesapeake codes
    assert res.exit_code == 1
    assert "[21, 41, 81, 82]" in res.output and "Traceback" not in res.output
    res = _run("evaluate", TRUTHS[0], TRUTHS[1])  # another place
    assert res.exit_code == 1 and "do not overlap" in res.output
    res = _run("evaluate", TRUTHS[0], tmp_path / "missing.tif")
    assert res.exit_code == 1 and "does not exist" in res.output
    res = _run("evaluate", TRUTHS[0], TRUTHS[0], "--legend", "nope")
    assert res.exit_code == 1 and "unknown legend" in res.output
    # a prediction that is all nodata leaves nothing to score
    _, _, grid = read_class_raster(TRUTHS[0])
    empty = write_class_map(tmp_path / "empty.tif", np.zeros((256, 256), np.uint8), grid, LEGEND)
    with pytest.raises(InputError, match="no pixel"):
        evaluate_files(empty, TRUTHS[0], LEGEND)


# ---------------------------------------------------------------------------------------- cooccurrence


def test_cooccurrence_command_matches_the_library(tmp_path):
    out = tmp_path / "m.json"
    args = ["cooccurrence", "--legend", "chesapeake", "--out", out]
    for t, w in zip(TRUTHS[:3], NLCDS[:3], strict=True):
        args += ["--truth", t, "--weak", w]
    res = _run(*args)
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output
    co = load_cooccurrence(out)
    # the same estimate computed by hand from the arrays
    pairs = []
    for t, w in zip(TRUTHS[:3], NLCDS[:3], strict=True):
        codes, nodata, grid = read_class_raster(t)
        weak, _ = read_labels_on_grid(w, grid)
        pairs.append((np.where(codes == nodata, LEGEND.nodata, codes), weak))
    expected = estimate_cooccurrence(pairs, LEGEND, source_nodata=0, smoothing=1.0)
    assert co.source_codes == expected.source_codes == (21, 41, 81, 82)
    assert co.target_codes == (1, 2, 3, 4)
    assert np.allclose(co.matrix, expected.matrix, atol=1e-6)
    co.check_legend(LEGEND)
    data = json.loads(out.read_text())
    assert "patch0.tif" in data["description"] and "geo-ppp cooccurrence" in data["description"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]

    # refuses to overwrite without --overwrite, leaving the file as it was
    before = out.read_bytes()
    res = _run("cooccurrence", "--truth", TRUTHS[0], "--weak", NLCDS[0], "--legend", "chesapeake", "--out", out)
    assert res.exit_code != 0 and "--overwrite" in res.output
    assert out.read_bytes() == before
    res = _run("cooccurrence", "--truth", TRUTHS[0], "--weak", NLCDS[0], "--legend", "chesapeake", "--out", out,
               "--smoothing", "0", "--overwrite")
    assert res.exit_code == 0, res.output
    assert load_cooccurrence(out).source_codes == (21, 41, 81, 82)
    assert out.read_bytes() != before


OTHER_TILE = ROOT / "pipelines" / "data" / "m_3907833_nw_17_1"
MD_TRUTH, MD_NLCD = Path(f"{OTHER_TILE}_lc.tif"), Path(f"{OTHER_TILE}_nlcd.tif")  # the Cumberland tile


def test_shipped_chesapeake_matrix_is_the_two_tile_estimate():
    """On the NLCD classes both labelled tiles hold well, the shipped matrix is their site-weighted
    estimate (the EnviroAtlas prior weighs one 30 m cell per class, so it moves those by little), and
    the one-tile matrices are each tile's own estimate."""
    both = estimate_cooccurrence_from_files(
        [*TRUTHS, MD_TRUTH], [*NLCDS, MD_NLCD], "chesapeake", smoothing=1.0, sites=["wv"] * 8 + ["md"]
    )
    wv_only = estimate_cooccurrence_from_files(TRUTHS, NLCDS, "chesapeake", smoothing=1.0)
    md_only = estimate_cooccurrence_from_files([MD_TRUTH], [MD_NLCD], "chesapeake", smoothing=1.0)
    for name, est in (("chesapeake", both), ("chesapeake-wv", wv_only), ("chesapeake-md", md_only)):
        shipped = load_cooccurrence(name)
        for code in (21, 41, 81):
            j, k = est.source_codes.index(code), shipped.source_codes.index(code)
            assert np.abs(shipped.matrix[:, k] - est.matrix[:, j]).max() < 0.06, (name, code)
    # the two tiles disagree (NLCD deciduous forest is 86 % vs 93 % tree canopy); the blend lies between
    col = {n: load_cooccurrence(n).matrix[1, load_cooccurrence(n).source_codes.index(41)]
           for n in ("chesapeake", "chesapeake-wv", "chesapeake-md")}
    assert col["chesapeake-wv"] < col["chesapeake"] < col["chesapeake-md"]
    assert col["chesapeake"] > 0.8


def test_cooccurrence_merges_weak_rasters_with_and_without_nodata(tmp_path):
    """A weak raster without a nodata value before one with nodata 0: the 0s are still skipped."""
    codes, _, grid = read_class_raster(TRUTHS[0])
    weak, _ = read_labels_on_grid(NLCDS[0], grid)
    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": 1, "dtype": "uint8",
               "crs": grid.crs, "transform": grid.transform}
    no_nodata = tmp_path / "weak_plain.tif"
    with rasterio.open(no_nodata, "w", **profile) as dst:
        dst.write(np.where(weak == 0, 41, weak).astype(np.uint8), 1)
    holes = tmp_path / "weak_nodata.tif"
    with rasterio.open(holes, "w", **profile, nodata=0) as dst:
        dst.write(np.where(np.arange(grid.width) < grid.width // 2, 0, weak).astype(np.uint8), 1)
    co = estimate_cooccurrence_from_files([TRUTHS[0], TRUTHS[0]], [no_nodata, holes], LEGEND, smoothing=0.0)
    assert 0 not in co.source_codes
    # the left half of the second raster is nodata: it counts the first raster once and the right half
    right = weak[:, grid.width // 2:]
    expected = estimate_cooccurrence(
        [(codes, np.where(weak == 0, 41, weak)), (codes[:, grid.width // 2:], right)], LEGEND, smoothing=0.0
    )
    assert np.allclose(co.matrix, expected.matrix)


def test_cooccurrence_cli_sites(tmp_path):
    """--site weighs the Cumberland tile (67,600 samples) like the 8 sample tiles (524,288 pixels)."""
    args = ["cooccurrence", "--truth", TRUTHS[0], "--weak", NLCDS[0], "--truth", TRUTHS[1], "--weak", NLCDS[1],
            "--truth", MD_TRUTH, "--weak", MD_NLCD, "--legend", "chesapeake"]
    res = _run(*args, "--out", tmp_path / "pooled.json")
    assert res.exit_code == 0, res.output
    res = _run(*args, "--site", "wv", "--site", "wv", "--site", "md", "--out", tmp_path / "sites.json")
    assert res.exit_code == 0, res.output
    pooled, sites = load_cooccurrence(tmp_path / "pooled.json"), load_cooccurrence(tmp_path / "sites.json")
    expected = estimate_cooccurrence_from_files(
        [TRUTHS[0], TRUTHS[1], MD_TRUTH], [NLCDS[0], NLCDS[1], MD_NLCD], LEGEND, sites=["wv", "wv", "md"]
    )
    assert np.allclose(sites.matrix, expected.matrix, atol=1e-5)  # the JSON keeps 6 decimals
    assert not np.allclose(sites.matrix, pooled.matrix[:, [pooled.source_codes.index(c) for c in sites.source_codes]])
    res = _run(*args, "--site", "wv", "--out", tmp_path / "bad.json")
    assert res.exit_code == 1 and "one per pair" in res.output and not (tmp_path / "bad.json").exists()


def test_cooccurrence_errors(tmp_path):
    out = tmp_path / "m.json"
    res = _run("cooccurrence", "--truth", TRUTHS[0], "--truth", TRUTHS[1], "--weak", NLCDS[0],
               "--legend", "chesapeake", "--out", out)
    assert res.exit_code == 1 and "paired" in res.output and not out.exists()
    res = _run("cooccurrence", "--truth", TRUTHS[0], "--weak", NLCDS[1], "--legend", "chesapeake", "--out", out)
    assert res.exit_code == 1 and "do not overlap" in res.output and not out.exists()
    res = _run("cooccurrence", "--truth", TRUTHS[0], "--weak", NLCDS[0], "--legend", "nlcd", "--out", out)
    assert res.exit_code == 1 and "[2, 3, 5]" in res.output and not out.exists()
    with pytest.raises(ConfigError, match="smoothing"):
        estimate_cooccurrence_from_files(TRUTHS[:1], NLCDS[:1], LEGEND, smoothing=-1.0)
    with pytest.raises(ConfigError, match="at least one"):
        estimate_cooccurrence_from_files([], [], LEGEND)
