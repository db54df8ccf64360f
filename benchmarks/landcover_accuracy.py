"""Land-cover accuracy on sample_tiles at 1 m: baselines (a)-(c) against our method (d).

    python benchmarks/landcover_accuracy.py [--prior landcover-chesapeake] [--steps-curve 0,15,30,60,120,200]
        [--cooccurrence chesapeake|chesapeake-md|chesapeake-wv|FILE.json]

(a) NLCD through the co-occurrence matrix, argmax; (b) per-window k-means on R, G, B, NIR, NDVI
(k=7), each cluster labelled by its weak-label mass; (c) our method without the diffusion prior
(constraints only, same refinement); (d) our method. Scores are pooled over patches: 'tune' are
patches 0-3 (whose labels the shipped prior saw in training and on which settings were tuned),
'check' are patches 4-7 (never seen), 'all' is the eight. Also prints seconds per window and a
curve of plug-and-play steps against accuracy.

The co-occurrence matrix turns NLCD into class probabilities for every method. The shipped one
(``chesapeake``) was counted on two labelled tiles, these eight patches among them, so (a) is scored
partly in-sample; ``--cooccurrence chesapeake-md`` uses the matrix of the other tile alone (near
Cumberland MD), which never saw these patches: the situation of a user's unlabelled region.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from geo_ppp.core.weights import load_prior
from geo_ppp.io import read_class_raster, read_image, read_labels_on_grid
from geo_ppp.landcover.baselines import kmeans_baseline, weak_argmax
from geo_ppp.landcover.infer import infer_windows
from geo_ppp.landcover.legends import load_legend
from geo_ppp.landcover.metrics import Scores, confusion
from geo_ppp.landcover.segment import default_infer_config
from geo_ppp.landcover.weak import load_cooccurrence, weak_distribution

ROOT = Path(__file__).resolve().parent.parent / "sample_tiles"
SPLITS = {"tune": [0, 1, 2, 3], "check": [4, 5, 6, 7], "all": list(range(8))}


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
    parser.add_argument("--steps-curve", default="0,15,30,60,120,200")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cooccurrence", default="chesapeake", help="matrix name or JSON file")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    legend = load_legend("chesapeake")
    cooc = load_cooccurrence(args.cooccurrence)
    prior = load_prior(args.prior)
    config = default_infer_config(prior)
    tiles = load_tiles(legend)
    k = legend.num_classes
    image = torch.tensor(np.stack([t[0] for t in tiles]))
    valid = torch.tensor(np.stack([t[1] for t in tiles]))[:, None]
    weak_codes = torch.tensor(np.stack([t[2] for t in tiles]))
    seeds = [args.seed * 1000 + i for i in range(8)]

    methods = {}
    timings = {}
    t0 = time.perf_counter()
    methods["(a) NLCD x co-occurrence, argmax"] = weak_argmax(weak_distribution(weak_codes, cooc, 0.0)).numpy()
    timings["(a) NLCD x co-occurrence, argmax"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw = weak_distribution(weak_codes, cooc, 0.0)
    methods["(b) k-means (k=7) + weak-label mass"] = kmeans_baseline(image, raw, valid, 7, args.seed).numpy()
    timings["(b) k-means (k=7) + weak-label mass"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res_c = infer_windows(image, weak_codes, valid, cooc, None, config, seeds=seeds)
    methods["(c) ours without the prior"] = res_c.probabilities.argmax(1).numpy()
    timings["(c) ours without the prior"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res_d = infer_windows(image, weak_codes, valid, cooc, prior, config, seeds=seeds)
    methods["(d) ours"] = res_d.probabilities.argmax(1).numpy()
    timings["(d) ours"] = time.perf_counter() - t0
    up = torch.nn.functional.interpolate(res_d.coarse, scale_factor=4, mode="nearest")
    methods["(d') ours at 4 m, nearest-upsampled"] = up.argmax(1).numpy()
    timings["(d') ours at 4 m, nearest-upsampled"] = timings["(d) ours"]

    print(f"prior {args.prior}, {config.pnp_config().steps} plug-and-play steps, seed {args.seed}, "
          f"co-occurrence {args.cooccurrence}\n")
    print("| method | tune acc | tune mIoU | check acc | check mIoU | all acc | all mIoU | IoU water/tree/lowveg/built (all) | s/window |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, pred in methods.items():
        cells = []
        for split in ("tune", "check", "all"):
            s = pooled(pred, tiles, SPLITS[split], k)
            cells += [f"{100 * s.accuracy:.1f}", f"{100 * s.miou:.1f}"]
        s_all = pooled(pred, tiles, SPLITS["all"], k)
        ious = "/".join("-" if np.isnan(v) else f"{100 * v:.0f}" for v in s_all.iou)
        print(f"| {name} | " + " | ".join(cells) + f" | {ious} | {timings[name] / 8:.2f} |")

    print("\nplug-and-play steps against accuracy (all eight patches):\n")
    print("| steps | all acc | all mIoU | check acc | check mIoU | s/window |")
    print("|---|---|---|---|---|---|")
    for steps in [int(s) for s in args.steps_curve.split(",") if s]:
        cfg = config.with_pnp(steps=steps)
        t0 = time.perf_counter()
        res = infer_windows(image, weak_codes, valid, cooc, prior, cfg, seeds=seeds)
        el = (time.perf_counter() - t0) / 8
        pred = res.probabilities.argmax(1).numpy()
        s_all, s_chk = pooled(pred, tiles, SPLITS["all"], k), pooled(pred, tiles, SPLITS["check"], k)
        print(f"| {steps} | {100 * s_all.accuracy:.1f} | {100 * s_all.miou:.1f} | {100 * s_chk.accuracy:.1f} | "
              f"{100 * s_chk.miou:.1f} | {el:.2f} |")


if __name__ == "__main__":
    main()
