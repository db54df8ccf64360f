"""Slow: the shipped digits prior meets the constraint targets (a smaller version of the benchmark)."""

import numpy as np
import pytest

from geo_ppp.core import load_prior
from geo_ppp.demos.digits import asymmetry
from geo_ppp.generation import generate
from geo_ppp.generation.digits import judge_classifier

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def judge():
    return judge_classifier()


def test_class_constraint_fools_no_independent_judge(digits_prior, judge):
    hits = []
    for k in (0, 3, 5, 8):
        x = generate(digits_prior, [f"class={k}"], num=12, seed=[100 * k + i for i in range(12)])
        hits.extend(judge.predict(x.flatten(1).numpy()) == k)
    assert np.mean(hits) >= 0.9


def test_symmetry_cuts_asymmetry_fivefold(digits_prior):
    free = generate(digits_prior, [], num=24, seed=1)
    sym = generate(digits_prior, ["symmetric"], num=24, seed=1)
    assert asymmetry(free).mean() >= 5 * asymmetry(sym).mean()


def test_unconstrained_samples_are_confident_digits(digits_prior, judge):
    x = generate(digits_prior, [], num=24, seed=2)
    assert judge.predict_proba(x.flatten(1).numpy()).max(1).mean() > 0.8
    assert load_prior("digits").meta["image_size"] == 16
