"""A sweep of bad inputs through train-prior, prior-check and generate: each ends in one plain message.

Hypothesis draws a bad label raster (tiny, geographic, float, all nodata, foreign codes, not a
raster, empty, mixed CRSs, several bands, no CRS, too small to hold a training window) or a bad
option value, and runs the command through click's CliRunner. Every run must fail with a non-zero
exit, one short ``Error:`` line naming the problem (never "bug in geo_ppp", never a traceback),
and leave no output behind.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin

from geo_ppp.cli import main


def _tif(path: Path, data: np.ndarray, crs: str | None = "EPSG:26917", res: float = 2.0,
         origin=(500000.0, 4200000.0), nodata: float | None = 15) -> Path:
    data = data if data.ndim == 3 else data[None]
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "transform": from_origin(origin[0], origin[1], res, res)}
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
    return path


def _codes(px: int, seed: int = 0, codes=(1, 2, 3, 5)) -> np.ndarray:
    blocks = np.random.default_rng(seed).choice(codes, size=(max(1, px // 16),) * 2)
    return np.repeat(np.repeat(blocks, 16, 0), 16, 1)[:px, :px].astype("uint8")


def bad_labels(kind: str, folder: Path) -> Path:
    """One bad label input of ``kind`` in ``folder``: a file, or a folder of files."""
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / "labels.tif"
    if kind == "tiny":
        return _tif(f, _codes(10), res=1.0)
    if kind == "geographic":
        return _tif(f, _codes(256), crs="EPSG:4326", res=0.01, origin=(-77.0, 39.0))
    if kind == "float":
        return _tif(f, _codes(512).astype("float32"))
    if kind == "all-nodata":
        return _tif(f, np.full((512, 512), 15, np.uint8))
    if kind == "foreign-codes":
        return _tif(f, np.full((512, 512), 42, np.uint8))
    if kind == "not-a-raster":
        f.write_text("this is not a GeoTIFF\n")
        return f
    if kind == "empty":
        f.write_bytes(b"")
        return f
    if kind == "mixed-crs":
        sub = folder / "mixed"
        sub.mkdir()
        _tif(sub / "a.tif", _codes(512))
        _tif(sub / "b.tif", _codes(512), crs="EPSG:32618")
        return sub
    if kind == "multi-band":
        return _tif(f, np.stack([_codes(512)] * 3))
    if kind == "no-crs":
        return _tif(f, _codes(512), crs=None)
    if kind == "one-window":  # 256 m: every window touches a held-out block
        return _tif(f, _codes(128), nodata=None)
    if kind == "folder-without-tifs":
        (folder / "empty_dir").mkdir()
        return folder / "empty_dir"
    raise ValueError(kind)


KINDS = ["tiny", "geographic", "float", "all-nodata", "foreign-codes", "not-a-raster", "empty", "mixed-crs",
         "multi-band", "no-crs", "one-window", "folder-without-tifs"]

TRAIN_OPTIONS = [
    ["--steps", "0"], ["--steps", "-3"], ["--crop", "0"], ["--crop", "7"], ["--crop", "1000"],
    ["--base-channels", "0"], ["--base-channels", "100000"], ["--batch-size", "0"], ["--windows", "0"],
    ["--windows", "10000000000"], ["--balance", "-1"], ["--balance", "nan"], ["--balance", "inf"],
    ["--ema-decay", "1"], ["--cooldown", "-1"], ["--seed", "-5"], ["--seed", "99999999999999999999"],
    ["--legend", "no-such-legend"], ["--nodes", "0"], ["--schedule", "nope"], ["--cooldown", "100000"],
]
CHECK_OPTIONS = [["--num", "0"], ["--num", "-1"], ["--num", "10000000000"], ["--steps", "-1"],
                 ["--steps", "100000"], ["--seed", "-1"], ["--sampler", "nope"]]
GENERATE_OPTIONS = [
    ["--num", "0"], ["--num", "100000000"], ["--steps", "0"], ["--sampler", "ddim", "--steps", "1000000"], ["--lr", "0"],
    ["--lr", "-1"], ["--lr", "nan"], ["--weight", "-1"], ["--set", "lr=abc"], ["--set", "t_max=x"],
    ["--set", "nope=1"], ["--set", "steps=-5"], ["--set", "amp=maybe"], ["--set", "noequals"],
    ["--sampler", "nope"], ["--prior", "no/such/prior"], ["--seed", "-1"], ["--constraint", "nope"],
    ["--sampler", "ddim", "--constraint", "symmetric"],
]


def _check(res, *leftovers: Path) -> None:
    out = res.output
    assert res.exit_code != 0, out
    assert "bug in geo_ppp" not in out, out
    assert "Traceback" not in out and not isinstance(res.exception, (AssertionError, TypeError)), out
    errors = [line for line in out.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and len(errors[0]) < 700, out
    for path in leftovers:
        assert not path.exists(), f"{path} left behind: {out}"


SWEEP = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@SWEEP
@given(kind=st.sampled_from(KINDS), command=st.sampled_from(["train-prior", "prior-check"]))
def test_bad_label_rasters_end_in_one_plain_message(tiny_lc_prior, kind, command):
    if kind == "one-window" and command == "prior-check":
        kind = "tiny"  # prior-check --labels compares with every window: one 256 m window is valid there
    with tempfile.TemporaryDirectory() as tmp:
        labels = bad_labels(kind, Path(tmp) / "in")
        out = Path(tmp) / "out" / "result"
        if command == "train-prior":
            args = ["train-prior", "--dataset", "landcover", "--labels", str(labels), "--windows", "8",
                    "--batch-size", "4", "--steps", "1", "--base-channels", "8"]
        else:
            args = ["prior-check", str(tiny_lc_prior), "--labels", str(labels), "--num", "2", "--steps", "1"]
        res = CliRunner().invoke(main, [*args, "--out", str(out)])
        _check(res, out, out.parent)


@pytest.fixture(scope="module")
def good_labels(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    for k in range(2):
        _tif(folder / f"t{k}.tif", _codes(512, k), origin=(500000.0 + 1024 * k, 4200000.0))
    return folder


@SWEEP
@given(option=st.sampled_from(TRAIN_OPTIONS))
def test_bad_train_prior_options_end_in_one_plain_message(good_labels, option):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out" / "p"
        res = CliRunner().invoke(main, ["train-prior", "--dataset", "landcover", "--labels", str(good_labels),
                                        "--windows", "8", "--batch-size", "4", "--steps", "1", *option,
                                        "--out", str(out)])
        _check(res, out, out.parent)


@SWEEP
@given(option=st.sampled_from(CHECK_OPTIONS))
def test_bad_prior_check_options_end_in_one_plain_message(tiny_lc_prior, good_labels, option):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out" / "chk"
        res = CliRunner().invoke(main, ["prior-check", str(tiny_lc_prior), "--labels", str(good_labels), "--num",
                                        "2", "--steps", "1", *option, "--out", str(out)])
        _check(res, out, out.parent)


@SWEEP
@given(option=st.sampled_from(GENERATE_OPTIONS))
def test_bad_generate_options_end_in_one_plain_message(option):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "g.png"
        res = CliRunner().invoke(main, ["generate", "--num", "2", "--steps", "2", *option, "--out", str(out)])
        _check(res, out, out.with_suffix(".npy"), out.with_suffix(".json"))


def test_a_segmenter_given_as_a_prior_is_named_as_such(tmp_path):
    seg = tmp_path / "seg"
    seg.mkdir()
    (seg / "config.json").write_text('{"format": "geo_ppp.segmenter", "config": {}, "meta": {}}')
    for args in (["generate", "--prior", str(seg), "--out", str(tmp_path / "g.png")],
                 ["prior-check", str(seg), "--out", str(tmp_path / "chk")]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code != 0
        assert "is a saved segmenter, not a prior; pass it as --segmenter to segment" in res.output
        assert "diffusers" not in res.output.lower()


def test_messages_name_the_real_cause(tmp_path):
    labels = bad_labels("one-window", tmp_path / "a")
    res = CliRunner().invoke(main, ["train-prior", "--dataset", "landcover", "--labels", str(labels), "--out",
                                    str(tmp_path / "p"), "--windows", "4", "--batch-size", "2"])
    assert "held-out block" in res.output and "bigger label rasters" in res.output, res.output
    # a foreign code in a raster too small for a training window: the code is named first
    _tif(tmp_path / "b.tif", np.full((128, 128), 42, np.uint8), nodata=None)
    res = CliRunner().invoke(main, ["train-prior", "--dataset", "landcover", "--labels", str(tmp_path / "b.tif"),
                                    "--out", str(tmp_path / "p")])
    assert "[42]" in res.output and "not in legend" in res.output, res.output
    for kind, text in (("geographic", "reproject first"), ("not-a-raster", "not a raster"), ("empty", "empty file"),
                       ("mixed-crs", "share a CRS"), ("tiny", "smaller than one 256 m window")):
        res = CliRunner().invoke(main, ["train-prior", "--dataset", "landcover", "--labels",
                                        str(bad_labels(kind, tmp_path / kind)), "--out", str(tmp_path / "p")])
        assert text in res.output and "disk full" not in res.output, (kind, res.output)
