"""`geo-ppp export-onnx` for the QGIS Deepness plugin: the file, its options, and Deepness itself.

The unmarked tests check the exported file (opset, static shapes, metadata) and the command's
options and outputs. The ``qgis`` test runs Deepness 0.6.5's own code (vendored, Apache-2.0, in
``../shared/vendor/qgis-plugin-deepness/src``; never imported by geo_ppp) in real QGIS, headless,
through tests/deepness_driver.py, in the Python Deepness runs in: QGIS's /usr/bin/python3 in a venv
with Deepness's pinned onnxruntime, opencv and numpy (``.venv-deepness``, made by
``.ci/install-deepness`` / ``make qgis-deps``). It skips where QGIS or the vendored source is absent; with QGIS there
and that venv missing it fails, so CI cannot skip it silently.
"""

from __future__ import annotations

import ast
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geo_ppp.errors import InputError
from geo_ppp.landcover.export import (
    IR_VERSION,
    OPSET,
    check_export_settings,
    deepness_overlap_percent,
    max_tile_size,
)
from geo_ppp.landcover.segmenter import Segmenter, SegmenterConfig, load_segmenter, save_segmenter
from geo_ppp.outputs import RunLock
from tests.conftest import ROOT, sample_tile

EXE = str(Path(sys.executable).with_name("geo-ppp"))
SYSTEM_PYTHON = "/usr/bin/python3"
DEEPNESS_VENV = Path(os.environ.get("DEEPNESS_VENV", ROOT / ".venv-deepness"))
DEEPNESS_SRC = Path(os.environ.get("DEEPNESS_SRC", ROOT.parent / "shared/vendor/qgis-plugin-deepness/src"))
DRIVER = Path(__file__).with_name("deepness_driver.py")
QGIS_ENV = {"QT_QPA_PLATFORM": "offscreen"}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
NAMES = ["water", "tree canopy", "low vegetation", "impervious/built"]


def _deepness_overlap_px(tile: int, percent: int) -> int:
    """Deepness 0.6.5's ProcessingOverlap.get_overlap_px (percent option), restated."""
    return int(tile * percent / 100 * 2) // 2


@pytest.fixture
def tiny_segmenter(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = Segmenter(SegmenterConfig(width=8, dilations=(1, 2)), torch.tensor([0.4, 0.4, 0.3, 0.5, 0.2]),
                      torch.tensor([0.1, 0.1, 0.1, 0.2, 0.3]))
    meta = {"legend": "chesapeake", "codes": [1, 2, 3, 4], "bands": [1, 2, 3, 4], "resolution_m": 1.0,
            "class_names": NAMES}
    save_segmenter(tmp_path / "seg", model, meta)
    return tmp_path / "seg"


def _export(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "export-onnx", *args], capture_output=True, text=True, env=ENV, timeout=300, **kw)


def test_export_declares_static_shapes_at_an_opset_all_of_deepness_runtimes_load(tmp_path, tiny_segmenter):
    import onnx

    out = tmp_path / "seg.onnx"
    res = _export(str(tiny_segmenter), str(out), "--tile-size", "128")
    assert res.returncode == 0, res.stderr
    assert f"wrote {out}" in res.stdout and "opset 17" in res.stdout and "32 px overlap (25 %)" in res.stdout
    proto = onnx.load(str(out))
    assert {o.domain: o.version for o in proto.opset_import}[""] == OPSET == 17
    assert proto.ir_version <= IR_VERSION == 8  # onnxruntime 1.12 reads IR <= 8
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*proto.graph.input, *proto.graph.output)}
    # Deepness reads the class count from the output's dim 1 and the tile size from the input
    assert dims == {"image": ["batch", 4, 128, 128], "probabilities": ["batch", 4, 128, 128]}
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta["tile_size"] == 128 and _deepness_overlap_px(128, meta["tiles_overlap"]) == 32
    assert meta["geo_ppp"]["overlap_px"] == 32 and meta["geo_ppp"]["opset"] == 17


def test_overlaps_are_written_as_percents_deepness_turns_back_into_the_same_pixels():
    for tile in range(4, 2049, 4):  # the default, a quarter of the tile, is always exact
        assert _deepness_overlap_px(tile, deepness_overlap_percent(tile, tile // 4)) == tile // 4
    for tile, overlap in ((256, 30), (256, 33), (320, 32), (1000, 10), (64, 1)):
        assert _deepness_overlap_px(tile, deepness_overlap_percent(tile, overlap)) == overlap
    assert deepness_overlap_percent(256, 32) is None  # 12 % -> 30 px, 13 % -> 33 px
    with pytest.raises(InputError, match="use --overlap 30 or 33"):
        check_export_settings(256, 32, 4)


def test_numeric_options_are_checked_before_any_work(tmp_path, tiny_segmenter):
    gb = 1 << 30
    assert max_tile_size(4, available=16 * gb) == 3276  # 800 bytes per pixel in half the memory
    with pytest.raises(InputError, match="--tile-size 4096 needs about 13.4 GB.*use at most 1636"):
        check_export_settings(4096, 1024, 4, available=4 * gb)
    out = tmp_path / "m.onnx"
    cases = [
        (["--tile-size", "0"], "0 is not in the range x>=1"),
        (["--tile-size", "250"], "must be a positive multiple of 4"),
        (["--tile-size", "1000000"], "GB of memory to export"),
        (["--overlap", "-1"], "-1 is not in the range x>=0"),
        (["--overlap", "128"], "below half the tile size (128)"),
        (["--overlap", "32"], "not a whole percent of --tile-size 256"),
    ]
    for extra, message in cases:
        res = _export(str(tiny_segmenter), str(out), *extra)
        assert res.returncode != 0 and message in res.stderr and "Traceback" not in res.stderr, (extra, res.stderr)
    assert list(tmp_path.iterdir()) == [tiny_segmenter]


def test_the_output_is_locked_and_a_write_failure_has_its_own_message(tmp_path, tiny_segmenter):
    out = tmp_path / "m.onnx"
    with RunLock([out], command="another export"):
        res = _export(str(tiny_segmenter), str(out))
    assert res.returncode != 0 and "another geo-ppp run" in res.stderr and "another export" in res.stderr
    assert not out.exists()

    def small_files() -> None:  # like a full disk: the ONNX file cannot be written whole
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    res = _export(str(tiny_segmenter), str(out), preexec_fn=small_files)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert f"{out} could not be written" in res.stderr and "run export-onnx again" in res.stderr
    assert "resume" not in res.stderr and "tiles" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg"]  # no partial file, no lock left


def test_the_product_never_imports_the_vendored_deepness():
    for root in ("geo_ppp", "qgis_plugin"):
        for path in (ROOT / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(n.split(".")[0] == "deepness" for n in names), path


# -- Deepness itself, in QGIS -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def deepness_python() -> str:
    """The Deepness venv's Python; skips without QGIS, fails when QGIS is there but the venv is not."""
    try:
        res = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True, text=True,
                             env={**os.environ, **QGIS_ENV}, timeout=120)
        has_qgis = res.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        has_qgis = False
    if not has_qgis:
        pytest.skip(f"PyQGIS is not importable by {SYSTEM_PYTHON}; install QGIS with `make qgis-deps`")
    python = DEEPNESS_VENV / "bin" / "python"
    check = ("import numpy, onnxruntime, cv2, qgis.core; "
             "assert int(numpy.__version__.split('.')[0]) < 2 and onnxruntime.__version__ <= '1.17.0'")
    res = subprocess.run([str(python), "-c", check], capture_output=True, text=True,
                         env={**os.environ, **QGIS_ENV}, timeout=120) if python.exists() else None
    if res is None or res.returncode != 0:
        why = "is missing" if res is None else (res.stderr.strip().splitlines() or ["failed"])[-1]
        pytest.fail(f"QGIS is installed but Deepness's Python {python} {why}: run make qgis-deps")
    if not (DEEPNESS_SRC / "deepness" / "deepness_dockwidget.py").is_file():
        # third-party source beside the checkout (../shared/vendor), not part of the repo: a checkout
        # without it cannot run Deepness, and says so in the skip reason
        pytest.skip(f"Deepness's source is not in {DEEPNESS_SRC}; set DEEPNESS_SRC to qgis-plugin-deepness/src")
    return str(python)


@pytest.mark.qgis
def test_deepness_maps_a_naip_patch_like_geo_ppp(tmp_path: Path, deepness_python: str):
    # a segmenter trained on two sample tiles (qr: from the weak labels alone; seconds on a CPU)
    train = [str(sample_tile("naip", i)) for i in (0, 1)]
    weak = [a for i in (0, 1) for a in ("--weak-labels", str(sample_tile("nlcd", i)))]
    seg, onnx_path, ref = tmp_path / "seg", tmp_path / "seg.onnx", tmp_path / "ref.tif"
    common = ["--progress", "none", "--seed", "0"]
    res = subprocess.run([EXE, "segment", *train, *weak, "--method", "qr", "--train-steps", "60",
                          "--save-segmenter", str(seg), "--out", str(tmp_path / "train.tif"), *common],
                         capture_output=True, text=True, env=ENV, timeout=600)
    assert res.returncode == 0, res.stderr
    assert _export(str(seg), str(onnx_path)).returncode == 0  # the defaults: 256 px tiles, 64 px overlap
    # geo-ppp's own map of another patch with the same segmenter
    patch = sample_tile("naip", 2)
    res = subprocess.run([EXE, "segment", str(patch), "--weak-labels", str(sample_tile("nlcd", 2)),
                          "--segmenter", str(seg), "--out", str(ref), *common],
                         capture_output=True, text=True, env=ENV, timeout=600)
    assert res.returncode == 0, res.stderr

    out_npy = tmp_path / "deepness.npy"
    res = subprocess.run([deepness_python, str(DRIVER), str(DEEPNESS_SRC), str(onnx_path), str(patch),
                          str(out_npy)], capture_output=True, text=True, env={**os.environ, **QGIS_ENV},
                         timeout=600)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("DEEPNESS_JSON:")]
    assert res.returncode == 0 and lines, res.stdout[-3000:] + res.stderr[-3000:]
    got = json.loads(lines[-1].removeprefix("DEEPNESS_JSON:"))
    assert "error" not in got, got.get("error")
    assert got["onnxruntime"] <= "1.17.0" and got["model_class"] == "Segmentor"
    assert got["input_shape"] == ["batch", 4, 256, 256] and got["output_shapes"] == [["batch", 4, 256, 256]]
    # until "Load default parameters" is clicked Deepness would run at 3 cm/px with a 0.5 threshold
    assert got["before_defaults"]["resolution_cm_px"] == 3.0 and got["before_defaults"]["threshold_enabled"]
    assert got["after_defaults"] == {"resolution_cm_px": 100.0, "tile_size_px": 256, "overlap_percent": 25,
                                     "threshold_enabled": False, "threshold": 0.0, "model_type": "Segmentor"}
    assert got["overlap_px"] == 64 and got["processor"] == "MapProcessorSegmentation"
    # one class layer per class, named by the legend, polygons for the classes on the map
    with rasterio.open(ref) as ds:
        want = ds.read(1)
    assert list(got["class_layers"]) == NAMES
    for code, name in enumerate(NAMES, 1):
        assert (got["class_layers"][name] > 0) == bool((want == code).any()), name
    # Deepness's values are class index + 1; the chesapeake codes are 1..4 in that order
    deepness = np.load(out_npy)[0]
    assert deepness.shape == want.shape
    agreement = float((deepness == want).mean())
    assert agreement >= 0.99, agreement

    # a raster of several Deepness tiles (4 sample patches side by side, 512 x 512: 3 x 3 tiles of 256
    # at a stride of 192): its stitching keeps each tile's centre and 25 % overlap covers the network's
    # reach, so the map is the whole-image map wherever Deepness has the raster on every side (it pads
    # the top and right edges to whole tiles with black pixels, which the network sees as imagery)
    mosaic = tmp_path / "mosaic.tif"
    with rasterio.open(sample_tile("naip", 0)) as ds:
        profile = {**ds.profile, "width": 512, "height": 512}
        pixels = np.block([[rasterio.open(sample_tile("naip", i)).read() for i in row] for row in ((2, 3), (5, 6))])
    with rasterio.open(mosaic, "w", **profile) as ds:
        ds.write(pixels)
    res = subprocess.run([deepness_python, str(DRIVER), str(DEEPNESS_SRC), str(onnx_path), str(mosaic),
                          str(out_npy)], capture_output=True, text=True, env={**os.environ, **QGIS_ENV},
                         timeout=600)
    assert res.returncode == 0 and "DEEPNESS_JSON:" in res.stdout, res.stderr[-3000:]
    model, _ = load_segmenter(seg)
    whole = model.probabilities(torch.from_numpy(pixels.astype(np.float32))[None])[0].argmax(0).numpy() + 1
    tiled = np.load(out_npy)[0]
    inside = float((tiled == whole)[64:, :-64].mean())
    print(f"Deepness vs geo-ppp on the patch: {agreement:.5f}; tiled vs whole away from the padding: {inside:.5f}")
    assert inside >= 0.999, inside
