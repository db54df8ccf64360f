"""Land-cover accuracy on sample_tiles at 1 m: baselines (a)-(c), today's method (d) and the calibrated default (e).

    python benchmarks/landcover_accuracy.py [--prior landcover-chesapeake] [--steps-curve 10,20,40,80]
        [--cooccurrence chesapeake|chesapeake-md|chesapeake-wv|FILE.json] [--no-paper]
        [--quicklook benchmarks/figures/landcover_patches.png]

(a) NLCD through the co-occurrence matrix, argmax; (b) per-window k-means on R, G, B, NIR, NDVI
(k=8), each cluster labelled by its weak-label mass; (c) our method without the diffusion prior and
without the region calibration; (d) our method without the region calibration (the default before
it); (e) the default: the region appearance model fitted on the eight patches as one region
(geo_ppp.landcover.appearance, as `segment` fits it on a region), then plug-and-play; (e) also
without the prior, with --steps 0, with the mean-free prior gradient and under ``--preset paper``.
Scores are pooled over patches: 'mixed' are patches 0, 3 and 7 (the only ones that are not pure
forest: any method scores ~100 % on the other five), 'tune' are patches 0-3 (on which settings were
chosen), 'check' are patches 4-7, 'all' is the eight; 'pure min' is the lowest accuracy of a pure
forest patch. Also prints seconds per window (the calibration's fit shared out over the eight
windows), km2 per hour, and optionally a curve of plug-and-play steps.

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

import _markdown
import numpy as np
import torch

from geo_ppp.core.weights import load_prior
from geo_ppp.demos import sample_patches
from geo_ppp.geo.legend import load_legend
from geo_ppp.landcover.appearance import AppearanceConfig, sample_pixels
from geo_ppp.landcover.appearance_fit import fit_appearance
from geo_ppp.landcover.baselines import kmeans_baseline, weak_argmax
from geo_ppp.landcover.infer import InferConfig, default_infer_config, infer_windows
from geo_ppp.landcover.metrics import Scores, confusion
from geo_ppp.landcover.weak import load_cooccurrence, weak_distribution

ROOT = Path(__file__).resolve().parent.parent / "sample_tiles"
KM2_PER_WINDOW = 0.256 * 0.256
SPLITS = {"mixed": [0, 3, 7], "tune": [0, 1, 2, 3], "check": [4, 5, 6, 7], "all": list(range(8))}
PURE = [1, 2, 4, 5, 6]


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
    return sample_patches(legend, ROOT)


def pooled(preds, tiles, idx, k):
    """Scores pooled over the tiles in idx."""
    cm = sum(confusion(preds[i], tiles[i][3], k) for i in idx)
    return Scores.from_confusion(cm)


def _quicklook(path, tiles, image, methods, legend):
    """One row per patch: image (R, G, B), weak labels (NLCD argmax), truth, (d), (e)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap([np.array(c) / 255 for c in legend.colors])
    names = list(methods)
    cols = [("image", None), ("weak labels (a)", names[0]), ("truth", "truth"),
            ("(d) old default", next(n for n in names if n.startswith("(d)"))),
            ("(e) calibrated default", next(n for n in names if n.startswith("(e)")))]  # fmt: skip
    fig, axes = plt.subplots(8, len(cols), figsize=(2.2 * len(cols), 2.2 * 8))
    for i in range(8):
        for j, (title, key) in enumerate(cols):
            ax = axes[i, j]
            if key is None:
                ax.imshow(np.clip(image[i, :3].permute(1, 2, 0).numpy() / 255 * 1.4, 0, 1))
            else:
                m = tiles[i][3] if key == "truth" else methods[key][i]
                ax.imshow(np.ma.masked_less(m, 0), cmap=cmap, vmin=-0.5, vmax=len(legend.colors) - 0.5,
                          interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=8)
        axes[i, 0].set_ylabel(f"patch {i}" + (" (mixed)" if i in SPLITS["mixed"] else ""), fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"\nwrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default="landcover-chesapeake")
    parser.add_argument("--steps-curve", default="", help="e.g. 10,20,40,80: (c) and (d) at each step count")
    parser.add_argument("--no-paper", action="store_true", help="skip the (slow) --preset paper row")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override an inference setting (JSON value), e.g. mi_weight=0.5 or pnp.t_max=200")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cooccurrence", default="chesapeake", help="matrix name or JSON file")
    parser.add_argument("--quicklook", type=Path, default=None,
                        help="write a PNG: each patch's image, weak labels, truth, (d) and (e)")
    _markdown.add_option(parser)
    args = parser.parse_args()
    _markdown.record(args.markdown)
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

    def run(name, fn, extra=0.0):
        t0 = time.perf_counter()
        methods[name] = fn()
        timings[name] = time.perf_counter() - t0 + extra

    # the region calibration, fitted once on the eight patches as one region (as `segment` does)
    t0 = time.perf_counter()
    acfg = AppearanceConfig(seed=args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    feats, codes = sample_pixels(image, weak_codes, valid, acfg.samples, gen, acfg.texture_radius, acfg.smooth_radius)
    model = fit_appearance(feats, codes, cooc, acfg)
    fit_s = time.perf_counter() - t0

    def ours(p, cfg, calibrated=True):
        app = model if calibrated else None
        return infer_windows(image, weak_codes, valid, cooc, p, cfg, seeds=seeds, appearance=app).probabilities.argmax(1).numpy()

    run("(a) NLCD x co-occurrence, argmax", lambda: weak_argmax(weak_distribution(weak_codes, cooc, 0.0)).numpy())
    raw = weak_distribution(weak_codes, cooc, 0.0)
    run("(b) k-means (k=8) + weak-label mass", lambda: kmeans_baseline(image, raw, valid, 8, args.seed).numpy())
    steps = config.pnp_config().steps
    run(f"(c) no prior, no calibration, S={steps}", lambda: ours(None, config, False))
    run(f"(d) prior, no calibration (the old default), S={steps}", lambda: ours(prior, config, False))
    run(f"(e) calibrated + prior (the default), S={steps}", lambda: ours(prior, config), fit_s)
    run(f"(e) calibrated + prior, 2S={2 * steps}", lambda: ours(prior, config.with_pnp(steps=2 * steps)), fit_s)
    run("(e) calibrated, no prior", lambda: ours(None, config), fit_s)
    run("(e) calibrated, --steps 0", lambda: ours(prior, config.with_pnp(steps=0)), fit_s)
    run("(e) calibrated + prior, mean-free", lambda: ours(prior, config.with_pnp(prior_mean_free=True)), fit_s)
    if not args.no_paper:
        paper = default_infer_config(prior, "paper")
        run("(d) prior, no calibration, --preset paper", lambda: ours(prior, paper, False))
        run("(e) calibrated + prior, --preset paper", lambda: ours(prior, paper), fit_s)

    summary = model.summary(list(legend.names))
    print(f"prior {args.prior}, tuned S = {steps} plug-and-play steps, seed {args.seed}, "
          f"co-occurrence {args.cooccurrence}, overrides {args.overrides}")
    print(f"region calibration: {fit_s:.1f} s, classes modelled {summary['modelled']}, evidence weight "
          f"{summary['evidence_weight']}, trust of NLCD 41 (forest) {summary['trust'].get('41')}\n")
    print("| method | mixed acc | mixed mIoU | pure min acc | tune acc | tune mIoU | check acc | check mIoU | all acc | all mIoU | IoU water/tree/lowveg/built (mixed) | s/window | km2/h |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, pred in methods.items():
        cells = []
        for split in ("mixed", "tune", "check", "all"):
            sc = pooled(pred, tiles, SPLITS[split], k)
            cells += [f"{100 * sc.accuracy:.1f}", f"{100 * sc.miou:.1f}"]
            if split == "mixed":
                cells.append(f"{100 * min(pooled(pred, tiles, [i], k).accuracy for i in PURE):.1f}")
        s_mix = pooled(pred, tiles, SPLITS["mixed"], k)
        ious = "/".join("-" if np.isnan(v) else f"{100 * v:.0f}" for v in s_mix.iou)
        per = timings[name] / 8
        print(f"| {name} | " + " | ".join(cells) + f" | {ious} | {per:.2f} | {KM2_PER_WINDOW / per * 3600:.0f} |")
    print("\nper patch, accuracy (patches 0, 3, 7 mixed; the others pure forest):\n")
    print("| method | " + " | ".join(f"p{i}" for i in range(8)) + " |")
    print("|---|" + "---|" * 8)
    for name, pred in methods.items():
        print(f"| {name} | " + " | ".join(f"{100 * pooled(pred, tiles, [i], k).accuracy:.1f}" for i in range(8)) + " |")
    if args.quicklook:
        _quicklook(args.quicklook, tiles, image, methods, legend)

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
