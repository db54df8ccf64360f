"""Region-level learning on the sample tiles: is it worth building? (issue 13's rows (d), (e), (f), (g))

    python benchmarks/region_methods.py [--prior landcover-chesapeake] [--steps 1000] [--seed 0]

geo_ppp's segmenter (:mod:`geo_ppp.landcover.segmenter`: 5 dilated 3x3 conv layers, 32 channels,
BatchNorm; inputs R, G, B, NIR, NDVI standardised on the region) is trained on a region made of sample patches 0-3 ('tune')
or 4-7 ('check') and scored on the same region (transductive, as the methods are meant to be used):

- (d) pnp: plug-and-play with the shipped prior at its tuned settings (the teacher);
- (e) qr: Rolf et al.'s implicit posterior, trained from the weak labels alone (torchgeo's QRLoss
  against the NLCD x co-occurrence distribution);
- (f) distill: trained on (d)'s posteriors as soft targets, weighted by their confidence;
- (g) transfer: (f) trained on the tune region and applied to the check region unchanged.

Prints a table: accuracy / mIoU per region, per-class IoU on the check region, training seconds,
and the segmenter's forward cost per 256 x 256 window. ``geo-ppp segment --method qr`` is row (e)
inside the pipeline; (f) and (g) are not in the product yet.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from landcover_accuracy import SPLITS, load_tiles, pooled  # noqa: E402  (benchmarks/ is the script's folder)

from geo_ppp.core.weights import load_prior
from geo_ppp.geo.legend import load_legend
from geo_ppp.landcover.infer import default_infer_config, infer_windows
from geo_ppp.landcover.segmenter import (
    Segmenter,
    SegmenterConfig,
    feature_statistics,
    random_crops,
    train_segmenter,
)
from geo_ppp.landcover.weak import load_cooccurrence, weak_distribution


def train(
    image: torch.Tensor, target: torch.Tensor, idx: list[int], loss: str, steps: int, seed: int
) -> Segmenter:
    """geo_ppp's segmenter trained on random 64 x 64 crops of the windows ``idx`` (``qr`` or ``distill``)."""
    pick = torch.tensor(idx)
    images, targets = image[pick], target[pick]
    valid = torch.ones(len(idx), 1, *target.shape[-2:])
    mean, std = feature_statistics(images, valid)
    config = SegmenterConfig(in_channels=len(mean), classes=target.shape[1], steps=steps, loss=loss)
    return train_segmenter(random_crops(images, targets, valid), config, mean, std, seed=seed)


def main() -> None:
    """Run the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default="landcover-chesapeake")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of each segmenter")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    legend = load_legend("chesapeake")
    k = legend.num_classes
    tiles = load_tiles(legend)
    cooc = load_cooccurrence("chesapeake")
    prior = load_prior(args.prior)
    image = torch.tensor(np.stack([t[0] for t in tiles]))
    valid = torch.tensor(np.stack([t[1] for t in tiles]))[:, None]
    weak = torch.tensor(np.stack([t[2] for t in tiles]))
    t0 = time.perf_counter()
    teacher = infer_windows(image, weak, valid, cooc, prior, default_infer_config(prior),
                            seeds=[args.seed * 1000 + i for i in range(8)]).probabilities.float()  # fmt: skip
    pnp_s = (time.perf_counter() - t0) / 8
    weak_p = weak_distribution(weak, cooc, 0.0).float()

    rows: dict[str, dict[str, object]] = {
        "(d) pnp (teacher)": {"pred": teacher.argmax(1).numpy(), "s": pnp_s * 4}
    }
    nets = {}
    for region in ("tune", "check"):
        idx = SPLITS[region]
        for name, target, loss in (("(e) qr", weak_p, "qr"), ("(f) distill", teacher, "distill")):
            t0 = time.perf_counter()
            net = train(image, target, idx, loss, args.steps, args.seed)
            seconds = time.perf_counter() - t0
            pred = net.probabilities(image).argmax(1).numpy()
            row = rows.setdefault(name, {"pred": np.zeros_like(pred), "s": 0.0})
            row["pred"][idx] = pred[idx]
            row["s"] += seconds / 2
            nets[(name, region)] = net
    net = nets[("(f) distill", "tune")]
    rows["(g) distill on 0-3, applied to 4-7"] = {
        "pred": net.probabilities(image).argmax(1).numpy(),
        "s": rows["(f) distill"]["s"],
        "check_only": True,
    }
    x8 = torch.full((8, 4, 256, 256), 100.0)
    net.probabilities(x8)
    t0 = time.perf_counter()
    net.probabilities(x8)
    forward_s = (time.perf_counter() - t0) / 8

    print(f"prior {args.prior}, {args.steps} training steps per segmenter, seed {args.seed}, "
          f"torch threads {torch.get_num_threads()}\n")  # fmt: skip
    print(
        "| method | tune acc | tune mIoU | check acc | check mIoU | IoU water/tree/lowveg/built (check) | train s (per region) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        cells = []
        for region in ("tune", "check"):
            if row.get("check_only") and region == "tune":
                cells += ["-", "-"]
                continue
            sc = pooled(row["pred"], tiles, SPLITS[region], k)
            cells += [f"{100 * sc.accuracy:.1f}", f"{100 * sc.miou:.1f}"]
        ious = "/".join(
            "-" if np.isnan(v) else f"{100 * v:.0f}"
            for v in pooled(row["pred"], tiles, SPLITS["check"], k).iou
        )
        train_s = "plug-and-play" if name.startswith("(d)") else f"{row['s']:.0f}"
        print(f"| {name} | " + " | ".join(cells) + f" | {ious} | {train_s} |")
    print(f"\nper 256 x 256 window: plug-and-play {pnp_s:.2f} s, segmenter forward {forward_s:.3f} s "
          f"({pnp_s / forward_s:.0f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
