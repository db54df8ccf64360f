"""The shipped land-cover prior is a model of land cover (slow: the real model, real held-out windows)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geo_ppp.core import load_prior
from geo_ppp.landcover.prior_check import check_prior

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_prior_passes_prior_check_on_its_held_out_windows(monkeypatch):
    monkeypatch.chdir(ROOT)  # the prior records its training rasters relative to the repository
    report = check_prior(load_prior("landcover-chesapeake"), num=128, seed=1)
    failed = {k: v for k, v in report.checks.items() if not v["passed"]}
    assert not failed, failed
    assert report.settings["real"]["split"] == "holdout"


def test_committed_report_is_the_shipped_priors():
    folder = ROOT / "geo_ppp" / "weights" / "landcover-chesapeake"
    report = json.loads((folder / "prior_check.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    assert report["passed"] is True
    assert report["settings"]["trained_steps"] == config["meta"]["trained_steps"]
