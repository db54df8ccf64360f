"""The QGIS plugin end to end, headless: the built zip in a fresh QGIS profile, run by qgis_process.

Also the outputs as QGIS 3.22 sees them without their sidecars: the map's colour table, the
GeoPackage's embedded style and version, and the polygons' shared borders. Marked ``qgis``; skipped
where Debian's QGIS (``apt-get install qgis python3-qgis``) is absent. Every test works on copies of
the sample tiles with ``GDAL_PAM_ENABLED=NO``: QGIS would otherwise write ``.aux.xml`` statistics
beside the files it opens.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from geo_ppp.geo.legend import load_legend
from tests.conftest import NAIP, NLCD

pytestmark = pytest.mark.qgis

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
EXE = str(Path(sys.executable).with_name("geo-ppp"))
TIMEOUT_S = 300


def _have_qgis() -> bool:
    if not (Path(SYSTEM_PYTHON).exists() and Path(QGIS_PROCESS).exists()):
        return False
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True, timeout=60)
    return probe.returncode == 0


if not _have_qgis():
    pytest.skip("QGIS is not installed (apt-get install qgis python3-qgis)", allow_module_level=True)


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fresh QGIS profile with the built plugin zip installed and enabled; returns the environment."""
    base = tmp_path_factory.mktemp("qgis")
    zip_path = base / "geo_ppp_qgis.zip"
    subprocess.run([sys.executable, str(ROOT / "qgis_plugin" / "build.py"), "--out", str(zip_path)], check=True)
    plugins = base / "profile" / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(plugins)
    env = {
        **os.environ,
        "QGIS_CUSTOM_CONFIG_PATH": str(base / "profile"),
        "QT_QPA_PLATFORM": "offscreen",
        "XDG_RUNTIME_DIR": str(base),
        "GDAL_PAM_ENABLED": "NO",
        "GEO_PPP_EXE": EXE,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    enabled = subprocess.run([QGIS_PROCESS, "plugins", "enable", "geo_ppp_qgis"], env=env, capture_output=True,
                             text=True, timeout=TIMEOUT_S)
    assert enabled.returncode == 0, enabled.stderr[-2000:]
    return env


@pytest.fixture
def tiles(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of one sample NAIP patch and its NLCD patch."""
    image, weak = tmp_path / "naip.tif", tmp_path / "nlcd.tif"
    shutil.copy(NAIP, image)
    shutil.copy(NLCD, weak)
    return image, weak


def _qgis_process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


# Runs under the system Python with PyQGIS: argv = map, gpkg or "-". Prints one JSON line.
INSPECT = textwrap.dedent(
    """
    import json, sys
    from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer
    app = QgsApplication([], False)
    app.initQgis()
    out = {}
    r = QgsRasterLayer(sys.argv[1], "map")
    ren = r.renderer()
    out["raster"] = {
        "valid": r.isValid(), "crs": r.crs().authid(), "renderer": ren.type() if ren else None,
        "extent": [r.extent().xMinimum(), r.extent().yMinimum(), r.extent().xMaximum(), r.extent().yMaximum()],
        "classes": [{"value": c.value, "label": c.label, "color": c.color.name(), "alpha": c.color.alpha()}
                    for c in ren.classes()] if ren is not None and ren.type() == "paletted" else [],
    }
    if sys.argv[2] != "-":
        v = QgsVectorLayer(sys.argv[2] + "|layername=landcover", "polygons", "ogr")
        vr = v.renderer()
        out["vector"] = {
            "valid": v.isValid(), "renderer": vr.type(),
            "categories": [{"value": str(c.value()), "label": c.label(), "color": c.symbol().color().name()}
                           for c in vr.categories()] if vr.type() == "categorizedSymbol" else [],
        }
    print("JSON:" + json.dumps(out))
    app.exitQgis()
    """
)


def _inspect(env: dict[str, str], tif: Path, gpkg: Path | None = None) -> dict:
    res = subprocess.run([SYSTEM_PYTHON, "-c", INSPECT, str(tif), str(gpkg) if gpkg else "-"], env=env,
                         capture_output=True, text=True, timeout=TIMEOUT_S)
    line = next((x for x in res.stdout.splitlines() if x.startswith("JSON:")), None)
    assert line is not None, res.stderr[-3000:]
    return json.loads(line[5:])


def test_the_provider_is_listed(profile):
    res = _qgis_process(profile, "list")
    assert "geoppp:segment" in res.stdout and "geoppp:evaluate" in res.stdout, res.stderr[-2000:]


def test_segment_from_qgis_process_writes_a_styled_map_and_polygons(profile, tiles, tmp_path: Path):
    import rasterio

    image, weak = tiles
    out, gpkg = tmp_path / "map.tif", tmp_path / "polygons.gpkg"
    res = _qgis_process(profile, "--json", "run", "geoppp:segment", "--", f"IMAGES={image}", f"WEAK_LABELS={weak}",
                        "STEPS=2", f"OUTPUT={out}", f"VECTOR={gpkg}")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    results = json.loads(res.stdout[res.stdout.index("{"):])["results"]
    assert Path(results["OUTPUT"]) == out and out.exists() and gpkg.exists()
    seen = _inspect(profile, out, gpkg)
    legend = load_legend("chesapeake")
    with rasterio.open(image) as ds:
        bounds = list(ds.bounds)
    raster = seen["raster"]
    assert raster["valid"] and raster["crs"] == "EPSG:26917" and raster["renderer"] == "paletted"
    assert raster["extent"] == pytest.approx(bounds)
    # with its .qml (loaded as QGIS's default style): exactly the legend's classes, names and colours
    assert [(c["value"], c["label"], c["color"]) for c in raster["classes"]] == [
        (float(code), name, "#{:02x}{:02x}{:02x}".format(*rgb))
        for code, name, rgb in zip(legend.codes, legend.names, legend.colors, strict=True)
    ]
    vector = seen["vector"]
    assert vector["valid"] and vector["renderer"] == "categorizedSymbol"
    assert {(c["value"], c["label"]) for c in vector["categories"]} == {
        (str(code), name) for code, name in zip(legend.codes, legend.names, strict=True)
    }


def test_a_bad_input_reaches_qgis_as_geo_ppps_message(profile, tiles, tmp_path: Path):
    image, weak = tiles
    res = _qgis_process(profile, "run", "geoppp:segment", "--", f"IMAGES={image}", f"WEAK_LABELS={weak}",
                        "TILE_SIZE=100", f"OUTPUT={tmp_path / 'map.tif'}")
    text = res.stdout + res.stderr
    assert res.returncode != 0
    assert "tile size 100 does not fit the prior" in text and "use e.g. --tile-size 96" in text
    assert "Traceback" not in text and not (tmp_path / "map.tif").exists()


# Runs under the system Python: Processing with the plugin's provider, a feedback that cancels at the
# first tile, then the same run again. argv = plugin dir, image, weak, out. Prints one JSON line.
CANCEL = textwrap.dedent(
    """
    import json, sys
    sys.path[:0] = ["/usr/share/qgis/python/plugins", sys.argv[1]]
    from qgis.core import QgsApplication, QgsProcessingFeedback, QgsProcessingException
    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing
    Processing.initialize()
    import processing
    from geo_ppp_qgis.provider import GeoPPPProvider
    provider = GeoPPPProvider()  # kept referenced: the registry does not own the Python object
    assert QgsApplication.processingRegistry().addProvider(provider)

    class Feedback(QgsProcessingFeedback):
        def __init__(self, cancel_at):
            super().__init__()
            self.cancel_at, self.progress, self.infos = cancel_at, [], []
            self.progressChanged.connect(self.on_progress)
        def on_progress(self, value):
            self.progress.append(value)
            if self.cancel_at is not None and value > self.cancel_at:
                self.cancel()
        def pushInfo(self, info):
            self.infos.append(info)
            super().pushInfo(info)

    params = {"IMAGES": [sys.argv[2]], "WEAK_LABELS": sys.argv[3], "STEPS": 2, "TILE_SIZE": 64,
              "OUTPUT": sys.argv[4]}
    out = {}
    first = Feedback(cancel_at=0)
    try:
        processing.run("geoppp:segment", params, feedback=first)
        out["first"] = "finished"
    except QgsProcessingException as err:
        out["first"] = str(err)
    out["first_progress"] = first.progress
    second = Feedback(cancel_at=None)
    result = processing.run("geoppp:segment", params, feedback=second)
    out["second"] = result["OUTPUT"]
    out["second_infos"] = second.infos
    out["second_progress"] = second.progress[-1] if second.progress else None
    print("JSON:" + json.dumps(out))
    """
)


def test_a_cancelled_run_stops_and_the_same_run_resumes(profile, tiles, tmp_path: Path):
    image, weak = tiles
    out = tmp_path / "map.tif"
    plugins = Path(profile["QGIS_CUSTOM_CONFIG_PATH"]) / "profiles" / "default" / "python" / "plugins"
    res = subprocess.run([SYSTEM_PYTHON, "-c", CANCEL, str(plugins), str(image), str(weak), str(out)], env=profile,
                         capture_output=True, text=True, timeout=TIMEOUT_S)
    line = next((x for x in res.stdout.splitlines() if x.startswith("JSON:")), None)
    assert line is not None, res.stderr[-3000:]
    seen = json.loads(line[5:])
    assert "cancelled" in seen["first"] and seen["first_progress"] and max(seen["first_progress"]) < 100
    summary = next(i for i in seen["second_infos"] if i.endswith("resumed"))
    resumed = int(summary.split(",")[-1].split()[0])
    assert resumed >= 1  # the tiles done before Cancel were kept and reused
    assert seen["second"] == str(out) and out.exists() and seen["second_progress"] == 100


def test_outputs_stand_on_their_own_without_sidecars(profile, tiles, tmp_path: Path):
    """Without .qml and .aux.xml: 8 palette entries, not 256, in the legend's colours;
    the GeoPackage (1.2) styles itself; neighbouring polygons share their borders exactly."""
    import geopandas as gpd
    import shapely

    image, weak = tiles
    out, gpkg = tmp_path / "run" / "map.tif", tmp_path / "run" / "map.gpkg"
    out.parent.mkdir()
    subprocess.run([EXE, "-q", "segment", str(image), "--weak-labels", str(weak), "--out", str(out), "--steps", "2",
                    "--vector", str(gpkg)], check=True, env=profile, capture_output=True)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(out, alone / "map.tif")
    shutil.copy(gpkg, alone / "map.gpkg")
    shutil.copy(out.with_suffix(".qml"), alone / "map.qml")  # the clash: the raster's style, same base name
    (alone / "map.tif").rename(alone / "bare.tif")  # the raster alone, without its .qml or .aux.xml
    seen = _inspect(profile, alone / "bare.tif", alone / "map.gpkg")
    legend = load_legend("chesapeake")
    classes = seen["raster"]["classes"]
    assert len(classes) == 8  # 3 bits: not 256 entries
    colours = {int(c["value"]): (c["color"], c["alpha"]) for c in classes}
    for code, rgb in zip(legend.codes, legend.colors, strict=True):
        assert colours[code] == ("#{:02x}{:02x}{:02x}".format(*rgb), 255)
    assert set(colours) == set(range(8))  # the legend's codes, nodata and 3 values the map never holds
    assert seen["vector"]["renderer"] == "categorizedSymbol"  # its own style, not map.qml's raster style
    with sqlite3.connect(alone / "map.gpkg") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200  # GeoPackage 1.2
    polys = list(gpd.read_file(alone / "map.gpkg", layer="landcover").geometry)
    overlap = sum(a.intersection(b).area for i, a in enumerate(polys) for b in polys[i + 1 :])
    union = shapely.union_all(polys).area
    assert overlap < 1e-6 and abs(union - sum(p.area for p in polys)) < 1e-6
    assert union == pytest.approx(256 * 256)  # no gap: the whole patch is covered


def test_a_saved_segmenter_maps_from_qgis_process(profile, tiles, tmp_path: Path):
    """The fast path in QGIS: SEGMENTER=folder maps without plug-and-play; METHOD reaches geo-ppp."""
    import rasterio
    import torch

    from geo_ppp.landcover.segmenter import Segmenter, SegmenterConfig, save_segmenter

    torch.manual_seed(0)
    save_segmenter(tmp_path / "seg", Segmenter(SegmenterConfig(width=4, dilations=(1,))),
                   {"legend": "chesapeake", "codes": [1, 2, 3, 4], "bands": [1, 2, 3, 4], "resolution_m": 1.0})
    image, weak = tiles
    out = tmp_path / "map.tif"
    res = _qgis_process(profile, "run", "geoppp:segment", "--", f"IMAGES={image}", f"WEAK_LABELS={weak}",
                        f"SEGMENTER={tmp_path / 'seg'}", f"OUTPUT={out}")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert json.loads(out.with_name(out.name + ".json").read_text())["method"] == "segmenter"
    with rasterio.open(out) as ds:
        assert set(np.unique(ds.read(1))) <= {0, 1, 2, 3, 4}
    # a method with a saved segmenter is geo_ppp's own refusal, shown by QGIS, nothing written
    res = _qgis_process(profile, "run", "geoppp:segment", "--", f"IMAGES={image}", f"WEAK_LABELS={weak}",
                        f"SEGMENTER={tmp_path / 'seg'}", "METHOD=1", f"OUTPUT={tmp_path / 'other.tif'}")
    assert res.returncode != 0 and "give one of them" in res.stdout + res.stderr
    assert not (tmp_path / "other.tif").exists()
