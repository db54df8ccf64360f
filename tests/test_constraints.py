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


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(256, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


CONTEXT = {"classifier": _Linear()}
ARGS = {"class": "3"}


def _all_constraints():
    out = [(name, CONSTRAINTS[name](ARGS.get(name), **CONTEXT)) for name in sorted(CONSTRAINTS)]
    out.append(("sum", Symmetry() + 0.5 * StrokeThickness(0.3)))
    out.append(("weighted", Weighted(Symmetry("horizontal"), 2.0)))
    return out


@pytest.mark.parametrize(
    ("name", "constraint"), _all_constraints(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_constraint_contract(name, constraint):
    """Every constraint: (B, C, H, W) in, (B,) finite out, gradients flow to x, no side effects."""
    assert isinstance(constraint, Constraint)
    x = torch.randn(5, 1, 16, 16, requires_grad=True)
    before = x.detach().clone()
    loss = constraint(x)
    assert loss.shape == (5,)
    assert torch.isfinite(loss).all()
    (grad,) = torch.autograd.grad(loss.sum(), [x])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert torch.equal(x.detach(), before)
    # per-sample: one sample's loss depends only on that sample
    loss0 = constraint(x[:1])
    assert torch.allclose(loss0, loss[:1], atol=1e-5)
    constraint.on_step(0.5)  # accepted by every constraint
    with pytest.raises(ShapeError):
        constraint(torch.randn(16, 16))


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
