"""Which training levers move a distilled segmenter away from its teacher? (issue 13, row (f))

    python benchmarks/distill_levers.py [--seed 0]

In memory, on the eight sample patches: plug-and-play (the shipped prior, tuned settings) maps each
patch once (the teacher); then geo_ppp's segmenter is trained on the region made of patches 0-3
('tune') and on 4-7 ('check'), each time with one setting changed, and scored on its own region.
Single-threaded, as the pipeline trains. Prints acc / mIoU per region and setting.
"""

from __future__ import annotations

import argparse

import _markdown
import numpy as np
import torch
from landcover_accuracy import SPLITS, load_tiles, pooled  # noqa: E402  (benchmarks/ is the script's folder)

from geo_ppp.core.weights import load_prior
from geo_ppp.geo.legend import load_legend
from geo_ppp.landcover.infer import default_infer_config, infer_windows
from geo_ppp.landcover.segmenter import SegmenterConfig, feature_statistics, random_crops, train_segmenter
from geo_ppp.landcover.weak import load_cooccurrence, weak_distribution

LEVERS = {
    "plain (the shipped training)": ({}, None),
    "sharpened targets (teacher^4, renormalised)": ({}, 4.0),
    "+ QR term, weight 0.5": ({"qr_weight": 0.5}, None),
    "+ QR term, weight 1": ({"qr_weight": 1.0}, None),
    "+ QR term, weight 2": ({"qr_weight": 2.0}, None),
    "3000 steps": ({"steps": 3000}, None),
    "128 px crops": ({"crop": 128}, None),
    "pixel path + a 4-channel context": ({"width": 4, "dilations": (1,)}, None),
}


def main() -> None:
    """Run the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    _markdown.add_option(parser)
    args = parser.parse_args()
    _markdown.record(args.markdown)
    torch.set_num_threads(1)
    legend = load_legend("chesapeake")
    k = legend.num_classes
    tiles = load_tiles(legend)
    cooc, prior = load_cooccurrence("chesapeake"), load_prior("landcover-chesapeake")
    image = torch.tensor(np.stack([t[0] for t in tiles]))
    valid = torch.tensor(np.stack([t[1] for t in tiles]))[:, None].float()
    weak = torch.tensor(np.stack([t[2] for t in tiles]))
    teacher = infer_windows(image, weak, valid, cooc, prior, default_infer_config(prior),
                            seeds=list(range(8))).probabilities.float()  # fmt: skip
    weak_p = weak_distribution(weak, cooc, 0.0).float()
    print("| setting | tune acc | tune mIoU | check acc | check mIoU |\n|---|---|---|---|---|")
    print("| (d) the teacher itself | " + " | ".join(
        f"{100 * v:.1f}" for r in ("tune", "check")
        for v in (lambda sc: (sc.accuracy, sc.miou))(pooled(teacher.argmax(1).numpy(), tiles, SPLITS[r], k))
    ) + " |")  # fmt: skip
    for name, (changes, power) in LEVERS.items():
        pred = np.zeros((8, 256, 256), np.int64)
        for region in ("tune", "check"):
            idx = torch.tensor(SPLITS[region])
            target = teacher[idx]
            if power is not None:
                target = target**power / (target**power).sum(1, keepdim=True).clamp_min(1e-8)
            mean, std = feature_statistics(image[idx], valid[idx])
            config = SegmenterConfig(in_channels=len(mean), classes=k, loss="distill", **changes)
            net = train_segmenter(random_crops(image[idx], target, valid[idx], weak_p[idx]), config, mean, std,
                                  seed=args.seed)  # fmt: skip
            pred[idx.numpy()] = net.probabilities(image[idx]).argmax(1).numpy()
        cells = []
        for region in ("tune", "check"):
            sc = pooled(pred, tiles, SPLITS[region], k)
            cells += [f"{100 * sc.accuracy:.1f}", f"{100 * sc.miou:.1f}"]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
