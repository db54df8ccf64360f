"""The QGIS plugin's runner, without QGIS: the real geo-ppp executable, its JSON lines, cancel, errors."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import NAIP, NLCD

ROOT = Path(__file__).resolve().parent.parent
EXE = str(Path(sys.executable).with_name("geo-ppp"))


def _runner():
    path = ROOT / "qgis_plugin" / "geo_ppp_qgis" / "runner.py"
    spec = importlib.util.spec_from_file_location("geo_ppp_qgis_runner", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


runner = _runner()


def test_the_executable_comes_from_the_setting_then_the_environment_then_path(tmp_path: Path):
    exe = tmp_path / "bin" / "geo-ppp"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert runner.find_executable(str(exe), {}) == str(exe)
    assert runner.find_executable(None, {"GEO_PPP_EXE": str(exe)}) == str(exe)
    assert runner.find_executable(None, {"PATH": str(exe.parent)}) == str(exe)
    with pytest.raises(runner.GeoPPPNotFound, match="not an executable file"):
        runner.find_executable(str(tmp_path / "missing"), {"PATH": str(exe.parent)})
    with pytest.raises(runner.GeoPPPNotFound, match="GEO_PPP_EXE"):
        runner.find_executable(None, {"PATH": str(tmp_path)})


def test_the_child_gets_no_qgis_python_gdal_or_proj_settings(tmp_path: Path):
    leaky = {"PYTHONPATH": "/usr/share/qgis/python", "GDAL_DATA": "/qgis/gdal", "PROJ_LIB": "/qgis/proj",
             "PATH": os.environ["PATH"], "KEEP_ME": "1"}
    env = runner.clean_environment(leaky)
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    _, out = runner.run([sys.executable, "-c", code], env=env)
    seen = json.loads(out)
    assert "PYTHONPATH" not in seen and "GDAL_DATA" not in seen and "PROJ_LIB" not in seen
    assert seen["KEEP_ME"] == "1" and seen["PATH"] == os.environ["PATH"]


def test_a_run_reports_the_plan_first_then_every_tile_then_the_outputs(tmp_path: Path, tiny_lc_prior):
    events = []
    cmd = runner.segment_command(EXE, [str(NAIP)], [str(NLCD)], str(tmp_path / "map.tif"), steps=2,
                                 tile_size=128, vector=str(tmp_path / "map.gpkg"))
    cmd += ["--prior", str(tiny_lc_prior)]
    report, out = runner.run(cmd, on_event=lambda e, r: events.append((e["event"], r.percent)))
    kinds = [k for k, _ in events]
    assert kinds[0] == "plan" and kinds[-1] == "outputs" and kinds.count("tile") == report.total == 9
    assert [p for k, p in events if k == "tile"][-1] == 100.0
    assert report.outputs["map"] == str(tmp_path / "map.tif") and Path(report.outputs["vector"]).exists()
    assert "wrote" in out


def test_a_bad_input_fails_with_geo_ppps_own_message(tmp_path: Path):
    cmd = runner.segment_command(EXE, [str(NAIP)], [str(NLCD)], str(tmp_path / "map.tif"), tile_size=100)
    with pytest.raises(runner.GeoPPPFailed) as err:
        runner.run(cmd)
    assert str(err.value).startswith("tile size 100 does not fit the prior") and "Traceback" not in str(err.value)
    assert not (tmp_path / "map.tif").exists()


def test_cancel_stops_the_run_and_the_same_run_resumes(tmp_path: Path, tiny_lc_prior):
    out = tmp_path / "map.tif"
    cmd = runner.segment_command(EXE, [str(NAIP)], [str(NLCD)], str(out), steps=2, tile_size=64)
    cmd += ["--prior", str(tiny_lc_prior)]
    seen = []

    def cancelled() -> bool:
        return len(seen) >= 3

    with pytest.raises(runner.Cancelled, match="resumes"):
        runner.run(cmd, on_event=lambda e, r: seen.append(e) if e["event"] == "tile" else None,
                   is_cancelled=cancelled)
    assert not out.exists() and (tmp_path / "map.tif.work").is_dir()  # nothing published, tiles kept
    report, _ = runner.run(cmd)
    assert report.stats["resumed"] >= 3 and report.stats["resumed"] + report.stats["ran"] == report.total
    assert out.exists() and not (tmp_path / "map.tif.work").exists()


def test_distill_reports_its_stages_and_a_saved_segmenter_maps_through_the_plugin_runner(
    tmp_path: Path, tiny_lc_prior
):
    events = []
    cmd = runner.segment_command(EXE, [str(NAIP)], [str(NLCD)], str(tmp_path / "a.tif"), steps=1,
                                 tile_size=128, method="distill")
    assert cmd[cmd.index("--method") + 1] == "distill"
    cmd += ["--prior", str(tiny_lc_prior), "--train-steps", "20", "--distill-tiles", "2",
            "--save-segmenter", str(tmp_path / "seg")]
    runner.run(cmd, on_event=lambda e, r: events.append(e))
    kinds = [e["event"] for e in events]
    # the plan, the teacher's 2 tiles and the training as stages, then every tile, then the outputs
    assert kinds[0] == "plan" and kinds[-1] == "outputs" and kinds.count("tile") == 9
    stages = [(e["stage"], e["done"], e["total"]) for e in events if e["event"] == "stage"]
    assert ("teacher", 2, 2) in stages and ("train", 20, 20) in stages
    assert kinds.index("stage") < kinds.index("tile")
    cmd = runner.segment_command(EXE, [str(NAIP)], [str(NLCD)], str(tmp_path / "b.tif"), tile_size=128,
                                 segmenter=str(tmp_path / "seg"))
    assert "--method" not in cmd
    report, _ = runner.run(cmd)
    assert report.done == report.total == 9 and Path(report.outputs["map"]).exists()


def test_the_plugin_has_no_import_cycle():
    """Every import between the plugin's modules (in functions too) runs one way; the settings module
    is what the provider and the algorithms share."""
    import ast

    from tests.test_layering import _cycles

    package = ROOT / "qgis_plugin" / "geo_ppp_qgis"
    modules = {p.stem for p in package.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        edges = graph.setdefault(path.stem, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets = [node.module] if node.module else [a.name for a in node.names]
                edges.update(t.split(".")[0] for t in targets if t.split(".")[0] in modules)
    assert "settings" in graph["provider"] and "settings" in graph["algorithms"]
    assert not _cycles(graph), _cycles(graph)


def test_the_error_event_is_the_message_and_warnings_are_kept():
    report = runner.RunReport()
    for line in ('{"event": "log", "level": "warning", "logger": "py.warnings", "message": "careful"}',
                 '{"event": "log", "level": "debug", "logger": "geo_ppp", "message": "noise"}',
                 '{"event": "error", "message": "tile size 100 does not fit the prior", "exit_code": 1}'):
        assert report.feed(line) is not None
    assert report.error() == "tile size 100 does not fit the prior" and report.messages == ["careful"]
    assert runner.RunReport(messages=["Error: old style"]).error() == "old style"
