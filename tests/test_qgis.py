"""The real client: QGIS opens a written class map, applies its style and draws it.

PyQGIS lives in the system Python (``/usr/bin/python3``), not in the project's virtualenv, so the
check runs a script there in a subprocess. The tests are marked ``qgis`` and skip themselves when
that Python cannot import ``qgis.core``; they never install anything. Install QGIS with
``apt-get install qgis python3-qgis`` (Debian, as root); CI (``.ci/run``) does so before the tests.

:func:`check_in_qgis` takes any map path, so it can also be pointed at pipeline outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geo_ppp.geo.grid import Grid
from geo_ppp.geo.legend import Legend, load_legend
from geo_ppp.io import qml_path, read_class_raster, write_category_names, write_class_map, write_qml
from tests.conftest import TRUTH, sample_tile

pytestmark = pytest.mark.qgis

SYSTEM_PYTHON = "/usr/bin/python3"
INSTALL_HINT = "apt-get install qgis python3-qgis"
RUN_TIMEOUT_S = 180
MARKER = "GEO_PPP_QGIS_JSON:"

QGIS_ENV = {"QT_QPA_PLATFORM": "offscreen"}

# Runs under /usr/bin/python3 with PyQGIS: argv = tif, png. Prints one JSON line after MARKER.
QGIS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from qgis.core import (QgsApplication, QgsMapRendererParallelJob, QgsMapSettings, QgsRasterLayer,
                           Qgis)
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    tif, png = sys.argv[1], sys.argv[2]
    app = QgsApplication([], False)
    app.initQgis()

    def classes(layer):
        r = layer.renderer()
        if r is None or r.type() != "paletted":
            return []
        return [{"value": c.value, "color": c.color.name(), "alpha": c.color.alpha(), "label": c.label}
                for c in r.classes()]

    out = {"qgis_version": Qgis.QGIS_VERSION}
    # as GDAL alone describes it (colour table, category names), without the .qml
    options = QgsRasterLayer.LayerOptions()
    options.loadDefaultStyle = False
    bare = QgsRasterLayer(tif, "bare", "gdal", options)
    out["bare_renderer"] = bare.renderer().type() if bare.renderer() else None
    out["bare_classes"] = classes(bare)

    layer = QgsRasterLayer(tif, "map")
    out["isValid"] = layer.isValid()
    out["renderer_on_open"] = layer.renderer().type() if layer.renderer() else None
    out["classes_on_open"] = classes(layer)
    if layer.isValid() and out["renderer_on_open"] != "paletted":
        message, ok = layer.loadDefaultStyle()
        out["loadDefaultStyle"] = [message, ok]
    out["crs"] = layer.crs().authid()
    e = layer.extent()
    out["extent"] = [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()]
    out["renderer"] = layer.renderer().type() if layer.renderer() else None
    out["classes"] = classes(layer)

    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(e)
    settings.setBackgroundColor(QColor(255, 255, 255, 0))
    settings.setOutputSize(QSize(layer.width(), layer.height()))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    out["render_errors"] = [f"{err.layerID}: {err.message}" for err in job.errors()]
    out["png_saved"] = job.renderedImage().save(png, "PNG")
    print("@MARKER@" + json.dumps(out), flush=True)
    del bare, layer, job, settings  # QGIS 3.22 segfaults in exitQgis() while layers are alive
    app.exitQgis()
    """
).replace("@MARKER@", MARKER)


def _run(
    cmd: list[str], timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def _pyqgis_importable() -> tuple[bool, str]:
    if not Path(SYSTEM_PYTHON).exists():
        return False, f"{SYSTEM_PYTHON} does not exist"
    try:
        res = _run([SYSTEM_PYTHON, "-c", "import qgis.core"], 120, {**os.environ, **QGIS_ENV})
    except subprocess.TimeoutExpired:
        return False, "`import qgis.core` took over 120 s"
    lines = res.stderr.strip().splitlines()
    return res.returncode == 0, lines[-1] if lines else f"exit code {res.returncode}"


@pytest.fixture(scope="module")
def pyqgis() -> str:
    """The Python that imports ``qgis.core``; skips the tests when there is none (nothing is installed)."""
    ok, why = _pyqgis_importable()
    if not ok:
        pytest.skip(f"PyQGIS is not importable by {SYSTEM_PYTHON} ({why}); install QGIS with `{INSTALL_HINT}`")
    return SYSTEM_PYTHON


def _rgb(color: str) -> tuple[int, int, int]:
    text = color.lstrip("#")
    return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)


def _read_png(path: Path) -> np.ndarray:
    """(H, W, 4) uint8 RGBA."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert("RGBA"))
    except ImportError:
        import matplotlib.image as mpimg

        img = mpimg.imread(path)
        img = np.round(img * 255).astype(np.uint8) if img.dtype.kind == "f" else img
        return img if img.shape[-1] == 4 else np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])


def check_in_qgis(
    tif_path: str | os.PathLike[str],
    expected_crs: str,
    expected_bounds: tuple[float, float, float, float],
    legend: Legend,
    python: str = SYSTEM_PYTHON,
    work_dir: str | os.PathLike[str] | None = None,
) -> dict:
    """Open a class map in QGIS, check what it shows, render it; returns what QGIS reported.

    Checks: the layer is valid, its CRS and extent are the expected ones, the renderer is paletted
    with the legend's codes, colours and names, and the rendered PNG is non-empty, not one colour,
    and drawn in the legend's colours. Nothing is written beside the map: the script, the PNG and
    Qt's runtime folder go to ``work_dir`` (default: a new temporary folder, kept for inspection).
    """
    tif_path = Path(tif_path)
    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="geo_ppp_qgis_"))
    work.mkdir(parents=True, exist_ok=True)
    runtime = work / "xdg-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)  # Qt wants a private runtime folder
    png = work / (tif_path.stem + ".qgis.png")
    script = work / "qgis_check.py"
    script.write_text(QGIS_SCRIPT)
    env = {**os.environ, **QGIS_ENV, "XDG_RUNTIME_DIR": str(runtime)}
    res = _run([python, str(script), str(tif_path), str(png)], RUN_TIMEOUT_S, env)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith(MARKER)]
    assert lines, (
        f"QGIS script printed no result (rc {res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    )
    out = json.loads(lines[-1][len(MARKER) :])
    out["returncode"] = res.returncode
    out["png"] = str(png)

    assert out["isValid"], out
    assert out["crs"] == expected_crs, out
    np.testing.assert_allclose(out["extent"], expected_bounds, rtol=1e-6)
    assert out["renderer"] == "paletted", out
    got = [(int(c["value"]), c["label"], _rgb(c["color"]), c["alpha"]) for c in out["classes"]]
    want = [(c, n, rgb, 255) for c, n, rgb in zip(legend.codes, legend.names, legend.colors, strict=True)]
    assert got == want, out["classes"]
    assert not out["render_errors"], out["render_errors"]
    assert out["png_saved"] and png.exists() and png.stat().st_size > 0, out

    img = _read_png(png)
    opaque = img[img[..., 3] == 255][:, :3]
    colours = {tuple(int(v) for v in px) for px in np.unique(opaque, axis=0)} if opaque.size else set()
    assert len(colours) > 1, f"the rendered map is a single colour: {colours}"
    in_legend = (opaque[:, None, :] == np.array(legend.colors, np.uint8)[None]).all(-1).any(-1)
    assert in_legend.mean() > 0.99, f"rendered colours {sorted(colours)} are not the legend's {legend.colors}"
    assert res.returncode == 0, f"QGIS exited with {res.returncode}:\n{res.stderr[-3000:]}"
    return out


@pytest.fixture
def chesapeake_map(tmp_path: Path) -> tuple[Path, Grid, Legend]:
    """The sample truth tile as a chesapeake class map, with its .qml and category names."""
    legend = load_legend("chesapeake")
    truth, nodata, grid = read_class_raster(TRUTH, "truth")
    codes = legend.to_codes(legend.to_index(truth, nodata))
    tif = write_class_map(tmp_path / "map.tif", codes, grid, legend, tags={"RUN": "qgis-test"})
    write_qml(qml_path(tif), legend)
    write_category_names(tif, legend)
    return tif, grid, legend


def test_qgis_opens_styles_and_renders_a_class_map(pyqgis, chesapeake_map, tmp_path):
    tif, grid, legend = chesapeake_map
    with rasterio.open(TRUTH) as src:
        crs = f"EPSG:{src.crs.to_epsg()}"
        bounds = tuple(src.bounds)
    assert crs == "EPSG:26917" and bounds == grid.bounds
    out = check_in_qgis(tif, crs, bounds, legend, python=pyqgis, work_dir=tmp_path / "qgis")
    # QGIS applied map.qml on open, without being asked
    assert out["renderer_on_open"] == "paletted" and out["classes_on_open"] == out["classes"]
    assert "loadDefaultStyle" not in out
    # without the .qml QGIS still names the classes, from the category names in map.tif.aux.xml
    bare = {int(c["value"]): c["label"] for c in out["bare_classes"]}
    assert all(bare[c] == n for c, n in zip(legend.codes, legend.names, strict=True)), out["bare_classes"]


def test_qgis_opens_a_pipeline_map(pyqgis, tiny_lc_prior, tmp_path):
    """A map made by the pipeline (a COG with overviews, style and category names) over two real files."""
    import torch

    from geo_ppp.pipeline import segment

    legend = load_legend("chesapeake")
    images = [sample_tile("naip", 1), sample_tile("naip", 2)]
    weak = [sample_tile("nlcd", 1), sample_tile("nlcd", 2)]

    def by_weak_and_brightness(image, valid, weak_codes, seeds, timings):
        # a cheap pixel-wise stand-in for the model: all four classes appear
        bright = image[:, :3].mean(1)
        idx = np.where(weak_codes == 41, 1, 2) + (bright > 120) - (image[:, 3] < 40) * 2
        return torch.nn.functional.one_hot(torch.from_numpy(np.clip(idx, 0, 3)), 4).permute(0, 3, 1, 2).float().numpy()

    res = segment(images, weak, legend, tmp_path / "map.tif", prior=tiny_lc_prior, infer=by_weak_and_brightness)
    with rasterio.open(res.out) as ds:
        crs = f"EPSG:{ds.crs.to_epsg()}"
        bounds = tuple(ds.bounds)
        assert ds.overviews(1)
    out = check_in_qgis(res.out, crs, bounds, legend, python=pyqgis, work_dir=tmp_path / "qgis")
    assert out["renderer_on_open"] == "paletted"
