"""The region calibration stage in `segment`: recorded, resumable, deterministic, with a fallback.

Real sample tiles (patch 7: a clearing NLCD calls forest; patch 1: pure forest), the tiny prior.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from click.testing import CliRunner

from geo_ppp.cli import main
from geo_ppp.pipeline import segment
from tests.conftest import sample_tile

MIXED = (sample_tile("naip", 7), sample_tile("nlcd", 7))
FOREST = (sample_tile("naip", 1), sample_tile("nlcd", 1))


def _probs(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def test_calibration_is_recorded_and_changes_the_map(tmp_path: Path, tiny_lc_prior: Path) -> None:
    kw = {"prior": tiny_lc_prior, "steps": 1, "seed": 2}
    on = segment(*MIXED, out=tmp_path / "on.tif", probabilities=tmp_path / "on.p.tif", **kw)
    off = segment(*MIXED, out=tmp_path / "off.tif", probabilities=tmp_path / "off.p.tif", calibrate=False, **kw)
    record = json.loads((tmp_path / "on.tif.json").read_text())["calibration"]
    assert record["status"] == "fitted"
    assert set(record["summary"]["modelled"]) == {"tree canopy", "low vegetation"}
    assert record["summary"]["trust"]["41"]["low vegetation"] > 0.05  # the clearing: NLCD 41 is not all tree
    assert "calibrate" in on.stats["seconds"]
    assert json.loads((tmp_path / "off.tif.json").read_text())["calibration"] is None
    # the clearing that NLCD calls forest: the calibrated map holds more low vegetation there
    low_on, low_off = _probs(tmp_path / "on.p.tif")[2].mean(), _probs(tmp_path / "off.p.tif")[2].mean()
    assert low_on > low_off + 5
    assert off.config["calibration"] is None


def test_a_kept_work_dir_resumes_the_calibration_and_the_same_map(tmp_path: Path, tiny_lc_prior: Path) -> None:
    work = tmp_path / "work"
    kw = {"prior": tiny_lc_prior, "steps": 1, "seed": 4, "workdir": work}
    segment(*MIXED, out=tmp_path / "a.tif", **kw)
    record = work / "appearance.json"
    first = record.read_text()
    stamp = record.stat().st_mtime_ns
    segment(*MIXED, out=tmp_path / "b.tif", **kw)
    assert record.stat().st_mtime_ns == stamp and record.read_text() == first  # reused, not refitted
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()
    # a record of another run (another digest) in the work dir is not trusted: fitted again, same map
    data = json.loads(first)
    record.write_text(json.dumps({**data, "digest": "0" * 16}))
    segment(*MIXED, out=tmp_path / "c.tif", **kw)
    assert json.loads(record.read_text())["digest"] == data["digest"]
    assert (tmp_path / "c.tif").read_bytes() == (tmp_path / "a.tif").read_bytes()


def test_a_pure_forest_region_falls_back_with_a_warning(tmp_path: Path, tiny_lc_prior: Path) -> None:
    out = tmp_path / "forest.tif"
    res = CliRunner().invoke(main, ["segment", str(FOREST[0]), "--weak-labels", str(FOREST[1]), "--out", str(out),
                                    "--prior", str(tiny_lc_prior), "--steps", "1"])
    assert res.exit_code == 0, res.output
    assert "calibration: skipped" in res.output and "too uniform" in res.output
    record = json.loads((tmp_path / "forest.tif.json").read_text())["calibration"]
    assert record["status"] == "skipped" and "too uniform" in record["reason"]
    assert "per-window model only" in res.output


def test_jsonl_progress_reports_the_calibration_stage(tmp_path: Path, tiny_lc_prior: Path) -> None:
    res = CliRunner().invoke(main, ["segment", str(MIXED[0]), "--weak-labels", str(MIXED[1]), "--out",
                                    str(tmp_path / "m.tif"), "--prior", str(tiny_lc_prior), "--steps", "1",
                                    "--progress", "jsonl"])
    assert res.exit_code == 0, res.output
    events = [json.loads(line) for line in res.stderr.splitlines() if line.startswith("{")]
    kinds = [(e["event"], e.get("stage")) for e in events]
    first_tile = kinds.index(("tile", None))
    assert ("stage", "calibrate") in kinds[:first_tile]  # before any tile
    done = [e for e in events if e.get("stage") == "calibrate"]
    assert done[-1]["done"] == done[-1]["total"] == 1
