"""Differentiable constraints with one contract: a batch in, one loss per sample out.

Every constraint maps ``x`` (B, C, H, W) to a loss (B,), finite, lower meaning "satisfies the
constraint better" (a negative log-likelihood up to constants), differentiable in ``x``. They
compose: ``2.0 * Symmetry() + StrokeThickness(0.4)`` is a :class:`Sum` of :class:`Weighted` terms.
Constraints whose shape depends on the optimiser's progress (annealed relaxations) override
:meth:`Constraint.on_step`.

Names for the CLI live in :data:`CONSTRAINTS` (name -> factory); :func:`build_constraint` parses
``NAME[=ARG][:WEIGHT]`` specs such as ``class=3``, ``symmetric:2`` or ``thick=0.45``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from geo_ppp.errors import ConstraintError, ShapeError

__all__ = [
    "CONSTRAINTS",
    "ClassifierLogProb",
    "Constraint",
    "StrokeThickness",
    "Sum",
    "Symmetry",
    "Weighted",
    "build_constraint",
    "ink_density",
    "parse_constraint_spec",
]


class Constraint(nn.Module):
    """Base class: ``forward(x) -> loss`` with x (B, C, H, W) and loss (B,)."""

    def on_step(self, progress: float) -> None:
        """Told the optimiser's progress in [0, 1] before each step; default: nothing."""

    def __add__(self, other: Constraint) -> Sum:
        return Sum([self, other])

    def __mul__(self, weight: float) -> Weighted:
        return Weighted(self, float(weight))

    __rmul__ = __mul__

    @staticmethod
    def check(x: torch.Tensor) -> None:
        """Raise :class:`ShapeError` unless ``x`` is a (B, C, H, W) batch."""
        if x.dim() != 4:
            raise ShapeError(f"constraints take a batch shaped (B, C, H, W), got {tuple(x.shape)}")


class Weighted(Constraint):
    """``weight * constraint(x)``."""

    def __init__(self, constraint: Constraint, weight: float) -> None:
        super().__init__()
        self.constraint = constraint
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Weighted loss (B,)."""
        return self.weight * self.constraint(x)

    def on_step(self, progress: float) -> None:
        """Pass progress on."""
        self.constraint.on_step(progress)


class Sum(Constraint):
    """The sum of several constraints' losses."""

    def __init__(self, terms: Sequence[Constraint]) -> None:
        super().__init__()
        flat: list[Constraint] = []
        for term in terms:
            flat.extend(term.terms if isinstance(term, Sum) else [term])
        if not flat:
            raise ConstraintError("a Sum needs at least one constraint")
        self.terms = nn.ModuleList(flat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Summed loss (B,)."""
        return torch.stack([term(x) for term in self.terms]).sum(0)

    def on_step(self, progress: float) -> None:
        """Pass progress on to every term."""
        for term in self.terms:
            term.on_step(progress)


class Symmetry(Constraint):
    """Mirror symmetry: mean squared difference between x and its mirror image.

    Args:
        axis: ``vertical`` mirrors left-right (a vertical mirror line), ``horizontal`` top-bottom.
        scale: multiplies the mean squared difference; the default makes a typical digit's
            asymmetry cost about as much as a poor class fit.
    """

    def __init__(self, axis: str = "vertical", scale: float = 20.0) -> None:
        super().__init__()
        if axis not in ("vertical", "horizontal"):
            raise ConstraintError(f"axis must be 'vertical' or 'horizontal', got {axis!r}")
        self.dim = -1 if axis == "vertical" else -2
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Asymmetry loss (B,)."""
        self.check(x)
        return self.scale * (x - x.flip(self.dim)).pow(2).flatten(1).mean(1)


def ink_density(x: torch.Tensor, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    """Fraction of ink per sample: mean of x rescaled from [low, high] to [0, 1], (B,)."""
    return ((x - low) / (high - low)).clamp(0, 1).flatten(1).mean(1)


class StrokeThickness(Constraint):
    """Stroke thickness through ink density: squared distance of the ink fraction to a target.

    For glyphs of a fixed size, such as centred digits, the fraction of inked pixels grows with
    stroke width, so a high target draws thick strokes and a low one thin strokes.

    Args:
        target: wanted ink fraction in [0, 1].
        low: the value of blank background.
        high: the value of full ink.
    """

    def __init__(self, target: float, low: float = -1.0, high: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= target <= 1.0:
            raise ConstraintError(f"ink-density target must lie in [0, 1], got {target}")
        self.target, self.low, self.high = target, low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Loss (B,), scaled so that a 0.1 miss costs about 1."""
        self.check(x)
        return 100.0 * (ink_density(x, self.low, self.high) - self.target) ** 2


class ClassifierLogProb(Constraint):
    """A learned constraint: ``-log p(target class | x)`` under a frozen classifier.

    Args:
        classifier: a module mapping (B, C, H, W) to logits (B, K); it is frozen here.
        target: the wanted class index, or one index per sample.
    """

    def __init__(self, classifier: nn.Module, target: int | Sequence[int]) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Negative log-probability (B,)."""
        self.check(x)
        logits = self.classifier(x)
        if logits.dim() != 2:
            raise ShapeError(f"the classifier must return logits (B, K), got {tuple(logits.shape)}")
        target = torch.as_tensor(self.target, device=x.device).long()
        target = target.expand(x.shape[0]) if target.dim() == 0 else target
        if target.shape != (x.shape[0],):
            raise ShapeError(f"got {target.numel()} targets for a batch of {x.shape[0]}")
        k = logits.shape[1]
        if bool(((target < 0) | (target >= k)).any()):
            raise ConstraintError(f"class {target.tolist()} out of range: the classifier knows 0..{k - 1}")
        return F.cross_entropy(logits.float(), target, reduction="none")


def _thickness(default: float) -> Callable[..., Constraint]:
    def factory(arg: str | None = None, **_: Any) -> Constraint:
        return StrokeThickness(default if arg is None else _float(arg, "ink-density target"))

    return factory


def _symmetric(arg: str | None = None, **_: Any) -> Constraint:
    return Symmetry(arg or "vertical")


def _class(arg: str | None = None, classifier: nn.Module | None = None, **_: Any) -> Constraint:
    if arg is None:
        raise ConstraintError("the class constraint needs a class: write class=3")
    if classifier is None:
        raise ConstraintError(
            "the class constraint needs a classifier for this prior; the digits prior ships one"
        )
    try:
        target = int(arg)
    except ValueError:
        raise ConstraintError(f"class must be an integer, got {arg!r}; write class=3") from None
    return ClassifierLogProb(classifier, target)


def _float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConstraintError(f"{what} must be a number, got {text!r}") from None


#: name -> factory(arg, **context) -> Constraint. Context carries prior-specific parts (classifier).
CONSTRAINTS: dict[str, Callable[..., Constraint]] = {
    "class": _class,
    "symmetric": _symmetric,
    "thick": _thickness(0.42),
    "thin": _thickness(0.20),
}


def parse_constraint_spec(spec: str) -> tuple[str, str | None, float]:
    """Split ``NAME[=ARG][:WEIGHT]`` into its parts.

    Example:
        >>> parse_constraint_spec("class=3:2")
        ('class', '3', 2.0)
    """
    body, _, weight_text = spec.partition(":")
    name, eq, arg = body.partition("=")
    name = name.strip()
    weight = _float(weight_text, f"weight in {spec!r}") if weight_text else 1.0
    if name not in CONSTRAINTS:
        raise ConstraintError(
            f"unknown constraint {name!r} in {spec!r}; known: {sorted(CONSTRAINTS)} "
            "(write NAME[=ARG][:WEIGHT], e.g. class=3 or symmetric:2)"
        )
    if eq and not arg:
        raise ConstraintError(f"empty argument in {spec!r}; write {name}=VALUE or just {name}")
    return name, (arg if eq else None), weight


def build_constraint(
    specs: str | Constraint | Sequence[str | Constraint], **context: Any
) -> Constraint | None:
    """Build one constraint from specs, ready-made constraints, or a mix; ``None`` if empty.

    Args:
        specs: ``"class=3"``, ``["symmetric", "thick:0.5"]``, a :class:`Constraint`, ...
        **context: prior-specific parts a factory may need (``classifier=...``).

    Raises:
        ConstraintError: for an unknown name or a bad argument; the message lists valid names.
    """
    if isinstance(specs, str | Constraint):
        specs = [specs]
    terms: list[Constraint] = []
    for spec in specs:
        if isinstance(spec, Constraint):
            terms.append(spec)
            continue
        name, arg, weight = parse_constraint_spec(spec)
        term = CONSTRAINTS[name](arg, **context)
        terms.append(term if weight == 1.0 else Weighted(term, weight))
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else Sum(terms)
