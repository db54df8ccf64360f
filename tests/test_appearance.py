"""The region-calibrated appearance model: fitted on the real sample tiles, checked against their truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geo_ppp.demos import sample_patches
from geo_ppp.geo.legend import load_legend
from geo_ppp.landcover.appearance import (
    EVIDENCE_WEIGHTS,
    AppearanceConfig,
    AppearanceModel,
    CalibrationSkipped,
    sample_pixels,
)
from geo_ppp.landcover.appearance_fit import fit_appearance
from geo_ppp.landcover.infer import local_class_posterior
from geo_ppp.landcover.weak import load_cooccurrence

ROOT = Path(__file__).resolve().parent.parent / "sample_tiles"
MIXED, PURE = (0, 3, 7), (1, 2, 4, 5, 6)


@pytest.fixture(scope="module")
def tiles():
    return sample_patches(load_legend("chesapeake"), ROOT)


def _batch(tiles, idx):
    image = torch.tensor(np.stack([tiles[i][0] for i in idx])).float()
    valid = torch.tensor(np.stack([tiles[i][1] for i in idx]))[:, None]
    codes = torch.tensor(np.stack([tiles[i][2] for i in idx])).long()
    return image, valid, codes


def _fit(tiles, idx, config=None, cooc="chesapeake"):
    config = config or AppearanceConfig()
    image, valid, codes = _batch(tiles, idx)
    gen = torch.Generator().manual_seed(config.seed)
    f, c = sample_pixels(image, codes, valid, config.samples, gen, config.texture_radius, config.smooth_radius)
    return fit_appearance(f, c, load_cooccurrence(cooc), config)


@pytest.fixture(scope="module")
def region(tiles):
    return _fit(tiles, range(8))


def test_em_trust_of_the_forest_class_matches_the_truth(tiles):
    """fit="em": the estimated P(class | NLCD 41) lands near the real co-occurrence counted from the
    1 m truth (0.865 tree / 0.134 low vegetation), away from the shipped column (0.89 / 0.10)."""
    region = _fit(tiles, range(8), AppearanceConfig(fit="em"))
    codes = np.stack([t[2] for t in tiles])
    truth = np.stack([t[3] for t in tiles])
    sel = (codes == 41) & (truth >= 0)
    real = np.bincount(truth[sel], minlength=4) / sel.sum()
    j = region.source_codes.index(41)
    assert abs(region.trust[2, j] - real[2]) < 0.03, (region.trust[:, j], real)
    assert abs(region.trust[2, j] - real[2]) < abs(region.shipped[2, j] - real[2])
    assert region.evidence_weight in EVIDENCE_WEIGHTS


def _auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """P(a positive scores above a negative), by ranks (ties count half)."""
    scores = torch.cat([pos, neg]).double()
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    for value in scores.unique()[torch.unique(scores, return_counts=True)[1] > 1]:
        tie = scores == value
        ranks[tie] = ranks[tie].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def test_evidence_separates_field_from_canopy_on_the_truth(tiles, region):
    """Where the truth is low vegetation the evidence leans to it more than where it is tree, on
    every mixed patch, and it ranks the two well pooled."""
    image, _, _ = _batch(tiles, MIXED)
    ratio = region.log_ratio(image)
    truth = torch.tensor(np.stack([tiles[i][3] for i in MIXED]))
    diff = ratio[:, 2] - ratio[:, 1]
    for i in range(len(MIXED)):
        assert diff[i][truth[i] == 2].median() > diff[i][truth[i] == 1].median() + 1.0, MIXED[i]
    assert _auc(diff[truth == 2][::7], diff[truth == 1][::7]) > 0.75
    assert torch.equal(ratio[:, [0, 3]], torch.zeros_like(ratio[:, [0, 3]]))  # not modelled: neutral


def test_the_default_fit_keeps_the_shipped_trust(tiles, region):
    assert region.evidence_weight in EVIDENCE_WEIGHTS
    present = sorted(set(np.unique(np.stack([t[2] for t in tiles])).tolist()) - {0})
    cols = [region.source_codes.index(c) for c in present]
    np.testing.assert_allclose(region.trust[:, cols], region.shipped[:, cols], atol=1e-9)


@pytest.mark.parametrize("fit", ["anchors", "em"])
def test_bright_crowns_of_a_forest_patch_are_not_taken_for_field(tiles, fit):
    """Patches 4-7: three all-forest patches (5: bright autumn crowns) and one with a pasture. Under
    "em" the low-vegetation class absorbs the bright crowns (the cause of patch 5 mapping 53 % in a
    region of these four); anchors learn low vegetation from the pasture's NLCD 71 pixels only."""
    model = _fit(tiles, (4, 5, 6, 7), AppearanceConfig(fit=fit))
    image, _, _ = _batch(tiles, (5,))
    ratio = model.log_ratio(image)
    field = float(((ratio[:, 2] - ratio[:, 1]) > 0).float().mean())
    if fit == "anchors":
        assert field < 0.05, field
    else:  # the failure the default avoids, kept visible: if "em" stops failing, revisit the default
        assert field > 0.2, field


def test_the_fit_is_deterministic_and_depends_on_the_seed(tiles):
    a = _fit(tiles, MIXED)
    b = _fit(tiles, MIXED)
    c = _fit(tiles, MIXED, AppearanceConfig(seed=1))
    assert np.array_equal(a.means, b.means) and np.array_equal(a.trust, b.trust)
    assert not np.array_equal(a.means, c.means)


def test_a_pure_forest_region_is_too_uniform_and_says_so(tiles):
    with pytest.raises(CalibrationSkipped, match="too uniform"):
        _fit(tiles, PURE)


def test_a_region_with_too_few_pixels_is_refused(tiles):
    with pytest.raises(CalibrationSkipped, match="usable pixels"):
        _fit(tiles, (7,), AppearanceConfig(samples=1000, min_pixels=5000))


def test_a_weak_class_absent_from_the_region_is_never_estimated(tiles, region):
    present = set(np.unique(np.stack([t[2] for t in tiles])).tolist())
    absent = [j for j, code in enumerate(region.source_codes) if code not in present]
    assert absent
    np.testing.assert_allclose(region.trust[:, absent], region.shipped[:, absent], atol=1e-12)


def test_the_model_survives_its_storage(tiles, region):
    tensors = {k: v.clone() for k, v in region.tensors().items()}
    again = AppearanceModel.from_parts(tensors, region.metadata())
    image, _, _ = _batch(tiles, (7,))
    assert torch.equal(region.log_ratio(image), again.log_ratio(image))


def test_local_shares_drop_scattered_false_positives_but_keep_a_clearing():
    """Sparse speckle of 'field' evidence in a forest stays forest; a field-sized block turns field."""
    g = torch.Generator().manual_seed(0)
    weak = torch.tensor([0.9, 0.1]).view(1, 2, 1, 1).expand(1, 2, 64, 64).clone()
    evidence = torch.zeros(1, 2, 64, 64)
    speckle = torch.rand(64, 64, generator=g) < 0.06
    speckle[:, 32:] = False
    evidence[0, 1][speckle] = 3.0  # a few crowns that look like grass, left half
    evidence[0, 1, 10:40, 40:60] = 3.0  # a clearing, right half
    post = local_class_posterior(weak, evidence, radius=8, anchor=0.05, iterations=10, sparsity=0.1)
    field = post[0, 1] > 0.5
    assert field[10:40, 40:60].float().mean() > 0.9
    assert field[:, :32][speckle[:, :32]].float().mean() < 0.2
    plain = torch.softmax(weak.log() + evidence, 1)[0, 1] > 0.5  # without local shares: all speckle flips
    assert plain[:, :32][speckle[:, :32]].float().mean() > 0.9


def test_config_ranges_are_checked():
    from geo_ppp.errors import ConfigError

    for bad in ({"samples": 10}, {"components": 0}, {"holdout": 0.95}, {"evidence_weight": -1.0},
                {"smooth_radius": 99}, {"nope": 1}):  # fmt: skip
        with pytest.raises(ConfigError):
            AppearanceConfig.from_dict(bad) if "nope" in bad else AppearanceConfig(**bad)
