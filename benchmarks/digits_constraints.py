"""How well the plug-and-play core satisfies constraints on real digits, and whether samples stay digits.

Measures, with the shipped digits prior and its default plug-and-play settings:

1. class=K: the share of samples that an INDEPENDENT judge (an RBF SVM trained on the held-out
   'judge' split, a different model family from the CNN used as the constraint, on disjoint data)
   classifies as K, per class and overall.  Target: >= 90 %.
2. symmetric: mean asymmetry |x - mirror(x)| of constrained vs unconstrained samples from the same
   seeds.  Target: cut >= 5x.
3. thick / thin: mean ink density against unconstrained samples.
4. digit-likeness of every set, against real digits:
   - judge confidence: the SVM's mean max class probability (real held-out digits score high;
     blobs and noise score low);
   - nearest-real distance: RMS pixel distance to the nearest digit of the prior's training split.
     Real held-out digits set the reference; much larger means off the digit manifold, much
     smaller would mean copying training digits;
   - diversity: mean pairwise RMS distance within the set (within each class for class=K),
     against real digits: a point-estimate optimiser can collapse onto one mode per constraint.

Usage: python benchmarks/digits_constraints.py [--per-class 20] [--num 100] [--steps N]
"""

from __future__ import annotations

import argparse
import time

import _markdown
import numpy as np
import torch

from geo_ppp.core import load_prior
from geo_ppp.core.constraints import ink_density
from geo_ppp.demos.digits import asymmetry
from geo_ppp.generation import default_pnp_config, generate
from geo_ppp.generation.digits import judge_classifier, load_digits


def nearest_real_rms(x: torch.Tensor, real: torch.Tensor) -> float:
    """Mean over samples of the RMS pixel distance to the nearest real digit."""
    d = torch.cdist(x.flatten(1), real.flatten(1)) / (x[0].numel() ** 0.5)
    return float(d.min(1).values.mean())


def diversity(x: torch.Tensor) -> float:
    """Mean pairwise RMS pixel distance within a set (0 = every sample identical)."""
    return float((torch.pdist(x.flatten(1)) / (x[0].numel() ** 0.5)).mean())


def describe(
    name: str,
    x: torch.Tensor,
    judge,
    real: torch.Tensor,
    target: np.ndarray | None,
    judged: tuple[torch.Tensor, np.ndarray | None] | None = None,
) -> str:
    """One table row. ``judged`` replaces the samples scored by the judge (for the real rows)."""
    jx, jt = judged if judged is not None else (x, target)
    flat = jx.flatten(1).numpy()
    if target is None:
        div = diversity(x)
    else:  # within-class diversity, averaged over classes
        div = float(np.mean([diversity(x[torch.from_numpy(target == k)]) for k in np.unique(target)]))
    proba = judge.predict_proba(flat)
    conf = float(proba.max(1).mean())
    hit = "-" if jt is None else f"{(judge.predict(flat) == jt).mean():.1%}"
    return (
        f"| {name} | {len(x)} | {hit} | {conf:.3f} | {nearest_real_rms(x, real):.3f} "
        f"| {div:.3f} | {float(asymmetry(x).mean()):.3f} | {float(ink_density(x).mean()):.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20, help="samples per class for class=K")
    parser.add_argument("--num", type=int, default=100, help="samples for the other sets")
    parser.add_argument("--steps", type=int, default=None, help="override the optimiser steps")
    parser.add_argument("--seed", type=int, default=0)
    _markdown.add_option(parser)
    args = parser.parse_args()
    _markdown.record(args.markdown)

    prior = load_prior("digits")
    config = default_pnp_config(prior)
    if args.steps is not None:
        config = type(config).from_dict({**config.to_dict(), "steps": args.steps})
    judge = judge_classifier()
    x_train, y_train = load_digits("prior")
    x_held, y_held = load_digits("judge")
    print(f"prior: digits, plug-and-play settings: {config.to_dict()}")
    print()

    t0 = time.perf_counter()
    free = generate(prior, [], num=args.num, seed=args.seed, config=config)
    ddim = generate(prior, [], num=args.num, seed=args.seed, sampler="ddim", steps=100)
    sym = generate(prior, ["symmetric"], num=args.num, seed=args.seed, config=config)
    thick = generate(prior, ["thick"], num=args.num, seed=args.seed, config=config)
    thin = generate(prior, ["thin"], num=args.num, seed=args.seed, config=config)
    per_class = {}
    for k in range(10):
        seeds = [args.seed * 1000 + 100 * k + i for i in range(args.per_class)]
        per_class[k] = generate(prior, [f"class={k}"], num=args.per_class, seed=seeds, config=config)
    elapsed = time.perf_counter() - t0
    all_cls = torch.cat(list(per_class.values()))
    targets = np.repeat(np.arange(10), args.per_class)

    print(
        "| set | n | judge says target | judge confidence | nearest-real RMS | diversity | asymmetry | ink |"
    )
    print("|---|---|---|---|---|---|---|---|")
    # Real reference rows: the judge scores the prior split (which it never saw); distances and
    # diversity use the held-out judge split against the prior split.
    print(describe("real digits", x_held, judge, x_train, None, judged=(x_train, None)))
    print(
        describe(
            "real digits, by class", x_held, judge, x_train, y_held.numpy(), judged=(x_train, y_train.numpy())
        )
    )
    print(describe("unconstrained (pnp)", free, judge, x_train, None))
    print(describe("unconstrained (DDIM 100)", ddim, judge, x_train, None))
    print(describe("class=K (all K)", all_cls, judge, x_train, targets))
    print(describe("symmetric", sym, judge, x_train, None))
    print(describe("thick", thick, judge, x_train, None))
    print(describe("thin", thin, judge, x_train, None))
    print()
    rates = [float((judge.predict(per_class[k].flatten(1).numpy()) == k).mean()) for k in range(10)]
    print("| class | " + " | ".join(str(k) for k in range(10)) + " |")
    print("|---|" + "---|" * 10)
    print("| judge says K | " + " | ".join(f"{r:.0%}" for r in rates) + " |")
    print()
    ratio = float(asymmetry(free).mean() / asymmetry(sym).mean())
    print(
        f"class=K success (independent judge): {(judge.predict(all_cls.flatten(1).numpy()) == targets).mean():.1%}  (target >= 90 %)"
    )
    print(f"asymmetry cut by symmetric: {ratio:.1f}x  (target >= 5x)")
    print(
        f"ink: thin {float(ink_density(thin).mean()):.3f} < unconstrained {float(ink_density(free).mean()):.3f} < thick {float(ink_density(thick).mean()):.3f}"
    )
    print(
        f"generation time: {elapsed:.0f} s for {len(all_cls) + 4 * args.num} optimised samples + {args.num} DDIM samples"
    )


if __name__ == "__main__":
    main()
