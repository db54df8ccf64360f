"""The constraints of the core and the one contract every Constraint implementation obeys."""

import pytest
import torch

from geo_ppp.core import (
    CONSTRAINTS,
    ClassifierLogProb,
    Constraint,
    StrokeThickness,
    Sum,
    Symmetry,
    Weighted,
    build_constraint,
    parse_constraint_spec,
)
from geo_ppp.core.constraints import ink_density
from geo_ppp.errors import ConstraintError, ShapeError
from geo_ppp.landcover.constraints import LocalKL, LocalMutualInformation, PixelEvidence, Relaxation


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(256, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


CONTEXT = {"classifier": _Linear()}
ARGS = {"class": "3"}


# ---------------------------------------------------------------------------------------- the contract
# Every Constraint implementation, the digits ones and the land-cover ones, obeys one contract.
# A case is (make, x): ``make(b)`` gives the constraint for a batch of ``b`` samples (the land-cover
# constraints carry per-sample evidence, so they are built for the batch) and ``x()`` the batch.

_WEAK = torch.tensor([0.1, 0.6, 0.25, 0.05])  # a weak class distribution over K = 4 classes


def _weak(b: int, size: int) -> torch.Tensor:
    return _WEAK.view(1, 4, 1, 1).expand(b, 4, size, size).clone()


def _stripes(b: int, size: int = 32, width: int = 2) -> torch.Tensor:
    """Two colour clusters (J = 2) in vertical stripes."""
    on = ((torch.arange(size) // width) % 2 == 0).float().view(1, 1, size).expand(b, size, size)
    return torch.stack([on, 1 - on], 1)


def _sharpest_interval() -> Relaxation:
    relax = Relaxation("interval")
    relax.on_step(1.0)  # the sharpest interval: gradients far from it must not be NaN
    return relax


def _seeded(seed: int, *shape: int, scale: float = 1.0):
    return lambda: scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _contract_cases() -> list:
    digits = [(name, CONSTRAINTS[name](ARGS.get(name), **CONTEXT)) for name in sorted(CONSTRAINTS)]
    digits.append(("sum", Symmetry() + 0.5 * StrokeThickness(0.3)))
    digits.append(("weighted", Weighted(Symmetry("horizontal"), 2.0)))
    cases = [pytest.param(lambda b, c=c: c, lambda: torch.randn(5, 1, 16, 16), id=name) for name, c in digits]
    cases.append(
        pytest.param(
            lambda b: LocalKL(_weak(2, 16)[:b], Relaxation("softmax"), radius=3),
            _seeded(1, 2, 4, 16, 16),
            id="local_kl-softmax",
        )
    )
    cases.append(
        pytest.param(
            lambda b: LocalKL(_weak(1, 12)[:b], _sharpest_interval(), radius=2),
            _seeded(2, 1, 4, 12, 12, scale=5.0),
            id="local_kl-interval-sharpest",
        )
    )
    cases += [
        pytest.param(
            lambda b, kind=kind: LocalMutualInformation(_stripes(2)[:b], Relaxation(kind), radius=3),
            _seeded(0, 2, 4, 32, 32),
            id=f"local_mi-{kind}",
        )
        for kind in Relaxation.kinds
    ]
    cases += [
        pytest.param(
            lambda b, kind=kind: PixelEvidence(_weak(2, 8)[:b], Relaxation(kind)),
            _seeded(3, 2, 4, 8, 8),
            id=f"pixel_evidence-{kind}",
        )
        for kind in Relaxation.kinds
    ]
    return cases


CONTRACT_CASES = _contract_cases()


@pytest.mark.parametrize(("make", "x"), CONTRACT_CASES)
def test_constraint_contract(make, x):
    """Every constraint: (B, C, H, W) in, (B,) finite out, gradients flow to x, no side effects."""
    x = x()
    constraint = make(x.shape[0])
    assert isinstance(constraint, Constraint)
    x.requires_grad_(True)
    before = x.detach().clone()
    loss = constraint(x)
    assert loss.shape == (x.shape[0],)
    assert torch.isfinite(loss).all()
    (grad,) = torch.autograd.grad(loss.sum(), [x])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert torch.equal(x.detach(), before)
    # per-sample: one sample's loss depends only on that sample (and its own evidence)
    loss0 = make(1)(x[:1])
    assert torch.allclose(loss0, loss[:1], atol=1e-5)
    constraint.on_step(0.5)  # accepted by every constraint
    with pytest.raises(ShapeError):
        constraint(torch.randn(16, 16))


def _subclasses(cls: type) -> set[type]:
    return {s for sub in cls.__subclasses__() for s in {sub, *_subclasses(sub)}}


def test_the_contract_covers_every_constraint_class():
    implementations = {c for c in _subclasses(Constraint) if c.__module__.startswith("geo_ppp.")}
    covered = {type(case.values[0](1)) for case in CONTRACT_CASES}
    assert covered == implementations, f"not in CONTRACT_CASES: {implementations - covered}"
    assert {LocalKL, LocalMutualInformation, ClassifierLogProb, Sum, Weighted} <= covered


def test_symmetry_values():
    x = torch.randn(2, 1, 8, 8)
    sym = (x + x.flip(-1)) / 2
    assert torch.allclose(Symmetry()(sym), torch.zeros(2), atol=1e-7)
    assert (Symmetry()(x) > 0).all()
    assert torch.allclose(Symmetry("horizontal")((x + x.flip(-2)) / 2), torch.zeros(2), atol=1e-7)


def test_thickness_prefers_target_density():
    thin = -torch.ones(1, 1, 16, 16)
    thin[..., 2:14, 6:9] = 1.0  # a 3-pixel stroke: ink fraction 0.14
    thick = -torch.ones(1, 1, 16, 16)
    thick[..., 2:14, 3:13] = 1.0  # a 10-pixel stroke: ink fraction 0.47
    assert ink_density(thick) > ink_density(thin)
    c_thick, c_thin = CONSTRAINTS["thick"](), CONSTRAINTS["thin"]()
    assert c_thick(thick) < c_thick(thin)
    assert c_thin(thin) < c_thin(thick)


def test_classifier_constraint_is_cross_entropy():
    clf = _Linear()
    x = torch.randn(4, 1, 16, 16)
    c = ClassifierLogProb(clf, 3)
    expected = -torch.log_softmax(clf(x), 1)[:, 3]
    assert torch.allclose(c(x), expected, atol=1e-6)
    assert torch.allclose(
        ClassifierLogProb(clf, [0, 1, 2, 3])(x),
        -torch.log_softmax(clf(x), 1)[torch.arange(4), torch.arange(4)],
        atol=1e-6,
    )
    with pytest.raises(ConstraintError, match="out of range"):
        ClassifierLogProb(clf, 12)(x)


def test_specs_and_composition():
    assert parse_constraint_spec("class=3:2") == ("class", "3", 2.0)
    assert parse_constraint_spec("symmetric") == ("symmetric", None, 1.0)
    c = build_constraint(["symmetric:2", "thick=0.5"], **CONTEXT)
    assert isinstance(c, Sum) and len(c.terms) == 2
    x = torch.randn(3, 1, 16, 16)
    assert torch.allclose(c(x), 2 * Symmetry()(x) + StrokeThickness(0.5)(x))
    assert build_constraint([]) is None
    with pytest.raises(ConstraintError, match="unknown constraint 'round'.*known"):
        build_constraint("round")
    with pytest.raises(ConstraintError, match="needs a classifier"):
        build_constraint("class=3")
    with pytest.raises(ConstraintError, match="integer"):
        build_constraint("class=three", **CONTEXT)
    with pytest.raises(ConstraintError, match="number"):
        build_constraint("symmetric:heavy")
    with pytest.raises(ConstraintError, match=r"\[0, 1\]"):
        build_constraint("thick=4")


def test_pixel_evidence_is_zero_at_its_posterior_and_pulls_each_cell_towards_it():
    """Unlike the pooled KL, the per-cell term sees where a class is: a swapped map scores worse."""
    post = torch.zeros(1, 2, 4, 4)
    post[:, 0, :, :2] = 0.95
    post[:, 1, :, :2] = 0.05
    post[:, 0, :, 2:] = 0.05
    post[:, 1, :, 2:] = 0.95
    relax = Relaxation("softmax", 1.0, 1.0)
    c = PixelEvidence(post, relax)
    matched = torch.log(post)  # softmax(log p) = p
    assert c(matched).item() < 1e-5
    swapped = matched.flip(-1)  # the same composition, the classes on the wrong halves
    assert c(swapped).item() > 1.0
    pooled = LocalKL(post, relax, radius=4)
    assert abs(pooled(swapped).item() - pooled(matched).item()) < 0.05  # the pooled KL barely sees it
