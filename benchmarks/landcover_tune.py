"""Grid search of land-cover inference settings: choose on the tune patches, read the check patches.

    python benchmarks/landcover_tune.py --grid "pnp.steps=20,40" --grid "mi_weight=0.2,0.5" [--prior P]
        [--base KEY=VALUE ...] [--no-prior]

Every combination of the ``--grid`` values (JSON values, keys as in the prior's ``infer`` config;
``pnp.`` and ``clusters.`` reach the nested settings) runs (d) on the eight sample patches in one
batch; prints accuracy and mIoU on the tune split (patches 0-3) and on the check split (4-7), and
seconds per window. Choose by the tune columns only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
import torch
from landcover_accuracy import SPLITS, load_tiles, pooled, with_settings  # noqa: E402  (benchmarks/ is the script's folder)

from geo_ppp.core.weights import load_prior
from geo_ppp.geo.legend import load_legend
from geo_ppp.landcover.infer import default_infer_config, infer_windows
from geo_ppp.landcover.weak import load_cooccurrence


def parse(items: list[str]) -> dict[str, list[object]]:
    out: dict[str, list[object]] = {}
    for item in items:
        key, _, values = item.partition("=")
        out[key] = [json.loads(v) for v in values.split(",")]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default="landcover-chesapeake")
    parser.add_argument("--preset", default="tuned")
    parser.add_argument("--grid", action="append", default=[])
    parser.add_argument("--base", action="append", default=[], help="KEY=VALUE applied to every run")
    parser.add_argument("--no-prior", action="store_true", help="(c): constraints only")
    parser.add_argument("--cooccurrence", default="chesapeake")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    legend = load_legend("chesapeake")
    cooc = load_cooccurrence(args.cooccurrence)
    prior = load_prior(args.prior)
    base = with_settings(default_infer_config(prior, args.preset), {k: v[0] for k, v in parse(args.base).items()})
    tiles = load_tiles(legend)
    image = torch.tensor(np.stack([t[0] for t in tiles]))
    valid = torch.tensor(np.stack([t[1] for t in tiles]))[:, None]
    weak = torch.tensor(np.stack([t[2] for t in tiles]))
    seeds = [args.seed * 1000 + i for i in range(8)]
    grid = parse(args.grid)
    keys = list(grid)
    print(f"prior {args.prior} ({'not used' if args.no_prior else 'used'}), base {args.base}, seed {args.seed}\n")
    print("| " + " | ".join(keys) + " | tune acc | tune mIoU | check acc | check mIoU | s/window |")
    print("|" + "---|" * (len(keys) + 5))
    for values in itertools.product(*grid.values()) if keys else [()]:
        config = with_settings(base, dict(zip(keys, values, strict=True)))
        t0 = time.perf_counter()
        res = infer_windows(image, weak, valid, cooc, None if args.no_prior else prior, config, seeds=seeds)
        per = (time.perf_counter() - t0) / 8
        pred = res.probabilities.argmax(1).numpy()
        tune, check = (pooled(pred, tiles, SPLITS[s], legend.num_classes) for s in ("tune", "check"))
        print("| " + " | ".join(str(v) for v in values) + f" | {100 * tune.accuracy:.1f} | {100 * tune.miou:.1f} | "
              f"{100 * check.accuracy:.1f} | {100 * check.miou:.1f} | {per:.2f} |", flush=True)


if __name__ == "__main__":
    main()
