"""The shipped land-cover prior is a model of land cover (slow: the real model, real held-out windows)."""

from __future__ import annotations

import json

import pytest

from geo_ppp.core import load_prior
from geo_ppp.landcover.prior_check import check_prior
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

SHIPPED = ROOT / "geo_ppp" / "weights" / "landcover-chesapeake"


def test_shipped_prior_paints_what_real_maps_hold(monkeypatch):
    monkeypatch.chdir(ROOT)  # the prior records its training rasters relative to the repository
    report = check_prior(load_prior("landcover-chesapeake"), num=128, seed=1)
    assert report.settings["real"]["split"] == "holdout"
    c = report.checks
    for name in ("one_hotness", "class_mix_tv", "speckle_ratio", "rare_majority_share",
                 "patch_density_ratio[tree canopy]", "mean_patch_area_ratio[tree canopy]"):
        assert c[name]["passed"], (name, c[name])
    # low vegetation: its fields are still too many and too small against the held-out blocks (see the
    # README), but within 2.5x; the training windows themselves are 1.8x off in patch density
    for name in ("patch_density_ratio[low vegetation]", "mean_patch_area_ratio[low vegetation]"):
        assert 1 / 2.5 <= c[name]["value"] <= 2.5, (name, c[name])


def test_committed_report_is_the_shipped_priors():
    report = json.loads((SHIPPED / "prior_check.json").read_text())
    config = json.loads((SHIPPED / "config.json").read_text())
    assert report["settings"]["trained_steps"] == config["meta"]["trained_steps"]
    assert report["settings"]["num"] == 256 and report["settings"]["real"]["split"] == "holdout"
    assert (SHIPPED / "prior_check.png").stat().st_size > 10_000
