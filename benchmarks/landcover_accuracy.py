"""Land-cover accuracy on sample_tiles at 1 m: baselines (a)-(c) against our method (d).

    python benchmarks/landcover_accuracy.py [--prior landcover-chesapeake] [--steps-curve 10,20,40,80]
        [--cooccurrence chesapeake|chesapeake-md|chesapeake-wv|FILE.json] [--no-paper]

(a) NLCD through the co-occurrence matrix, argmax; (b) per-window k-means on R, G, B, NIR, NDVI
(k=7), each cluster labelled by its weak-label mass; (c) our method without the diffusion prior
(constraints only, same refinement); (d) our method; (c) and (d) at the prior's tuned step count S
and at 2S (convergence), and (d) under ``--preset paper``. Scores are pooled over patches: 'tune'
are patches 0-3 (on which settings were tuned), 'check' are patches 4-7, 'all' is the eight. Also
prints seconds per window, km2 per hour, and optionally a curve of plug-and-play steps.

The co-occurrence matrix turns NLCD into class probabilities for every method. The shipped one
(``chesapeake``) was counted on two labelled tiles, these eight patches among them, so (a) is scored
partly in-sample; ``--cooccurrence chesapeake-md`` uses the matrix of the other tile alone (near
Cumberland MD), which never saw these patches: the situation of a user's unlabelled region.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from geo_ppp.core.weights import load_prior
from geo_ppp.geo.legend import load_legend
from geo_ppp.io import read_class_raster, read_image, read_labels_on_grid
from geo_ppp.landcover.baselines import kmeans_baseline, weak_argmax
from geo_ppp.landcover.infer import InferConfig, default_infer_config, infer_windows
from geo_ppp.landcover.metrics import Scores, confusion
from geo_ppp.landcover.weak import load_cooccurrence, weak_distribution

ROOT = Path(__file__).resolve().parent.parent / "sample_tiles"
KM2_PER_WINDOW = 0.256 * 0.256
SPLITS = {"tune": [0, 1, 2, 3], "check": [4, 5, 6, 7], "all": list(range(8))}


def with_settings(config: InferConfig, settings: dict) -> InferConfig:
    """``config`` with dotted-key settings applied (``pnp.lr``, ``clusters.iterations``, ``mi_weight``)."""
    data = config.to_dict()
    for key, value in settings.items():
        if key.startswith("pnp."):
            data["pnp"][key[4:]] = value
        elif key.startswith("clusters."):
            data["clusters"][key[9:]] = value
        else:
            data[key] = value
    return InferConfig.from_dict(data)


def load_tiles(legend):
    """Image, validity, weak codes and truth indices of the eight sample tiles."""
    tiles = []
    for i in range(8):
        img, valid, grid = read_image(ROOT / "naip" / f"patch{i}.tif")
        weak, _ = read_labels_on_grid(ROOT / "nlcd" / f"patch{i}.tif", grid)
        truth, nodata, _ = read_class_raster(ROOT / "truth" / f"patch{i}.tif")
        tiles.append((img, valid, weak, legend.to_index(truth, nodata)))
    return tiles


def pooled(preds, tiles, idx, k):
    """Scores pooled over the tiles in idx."""
    cm = sum(confusion(preds[i], tiles[i][3], k) for i in idx)
    return Scores.from_confusion(cm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default="landcover-chesapeake")
    parser.add_argument("--steps-curve", default="", help="e.g. 10,20,40,80: (c) and (d) at each step count")
    parser.add_argument("--no-paper", action="store_true", help="skip the (slow) --preset paper row")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override an inference setting (JSON value), e.g. mi_weight=0.5 or pnp.t_max=200")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cooccurrence", default="chesapeake", help="matrix name or JSON file")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    legend = load_legend("chesapeake")
    cooc = load_cooccurrence(args.cooccurrence)
    prior = load_prior(args.prior)
    config = default_infer_config(prior)
    if args.overrides:
        settings = {}
        for item in args.overrides:
            key, _, text = item.partition("=")
            settings[key] = json.loads(text)
        config = with_settings(config, settings)
    tiles = load_tiles(legend)
    k = legend.num_classes
    image = torch.tensor(np.stack([t[0] for t in tiles]))
    valid = torch.tensor(np.stack([t[1] for t in tiles]))[:, None]
    weak_codes = torch.tensor(np.stack([t[2] for t in tiles]))
    seeds = [args.seed * 1000 + i for i in range(8)]

    methods = {}
    timings = {}

    def run(name, fn):
        t0 = time.perf_counter()
        methods[name] = fn()
        timings[name] = time.perf_counter() - t0

    run("(a) NLCD x co-occurrence, argmax", lambda: weak_argmax(weak_distribution(weak_codes, cooc, 0.0)).numpy())
    raw = weak_distribution(weak_codes, cooc, 0.0)
    run("(b) k-means (k=7) + weak-label mass", lambda: kmeans_baseline(image, raw, valid, 7, args.seed).numpy())
    steps = config.pnp_config().steps
    for mult in (1, 2):
        cfg = config.with_pnp(steps=steps * mult)
        tag = f"S={steps * mult}" if mult == 1 else f"2S={steps * mult}"
        run(f"(c) ours without the prior, {tag}",
            lambda cfg=cfg: infer_windows(image, weak_codes, valid, cooc, None, cfg, seeds=seeds).probabilities.argmax(1).numpy())
        run(f"(d) ours, {tag}",
            lambda cfg=cfg: infer_windows(image, weak_codes, valid, cooc, prior, cfg, seeds=seeds).probabilities.argmax(1).numpy())
    if not args.no_paper:
        paper = default_infer_config(prior, "paper")
        run("(d) ours, --preset paper", lambda: infer_windows(image, weak_codes, valid, cooc, prior, paper, seeds=seeds).probabilities.argmax(1).numpy())

    print(f"prior {args.prior}, tuned S = {steps} plug-and-play steps, seed {args.seed}, "
          f"co-occurrence {args.cooccurrence}, overrides {args.overrides}\n")
    print("| method | tune acc | tune mIoU | check acc | check mIoU | all acc | all mIoU | IoU water/tree/lowveg/built (check) | s/window | km2/h |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, pred in methods.items():
        cells = []
        for split in ("tune", "check", "all"):
            sc = pooled(pred, tiles, SPLITS[split], k)
            cells += [f"{100 * sc.accuracy:.1f}", f"{100 * sc.miou:.1f}"]
        s_chk = pooled(pred, tiles, SPLITS["check"], k)
        ious = "/".join("-" if np.isnan(v) else f"{100 * v:.0f}" for v in s_chk.iou)
        per = timings[name] / 8
        print(f"| {name} | " + " | ".join(cells) + f" | {ious} | {per:.2f} | {KM2_PER_WINDOW / per * 3600:.0f} |")

    if args.steps_curve:
        print("\nplug-and-play steps against accuracy:\n")
        print("| steps | (c) check acc | (c) check mIoU | (d) check acc | (d) check mIoU | (d) tune acc | (d) tune mIoU |")
        print("|---|---|---|---|---|---|---|")
        for n in [int(v) for v in args.steps_curve.split(",") if v]:
            cfg = config.with_pnp(steps=n)
            row = []
            for p in (None, prior):
                pred = infer_windows(image, weak_codes, valid, cooc, p, cfg, seeds=seeds).probabilities.argmax(1).numpy()
                splits = ("check",) if p is None else ("check", "tune")
                for split in splits:
                    sc = pooled(pred, tiles, SPLITS[split], k)
                    row += [f"{100 * sc.accuracy:.1f}", f"{100 * sc.miou:.1f}"]
            print(f"| {n} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
