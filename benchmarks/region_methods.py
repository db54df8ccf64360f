"""Region-level learning on the sample tiles, through the product (issue 13's table).

    python benchmarks/region_methods.py [--train-steps 1000] [--seed 0] [--out DIR]

Each region is a set of the demo's sample patches mapped as ONE region by ``geo_ppp.pipeline.segment``:
'tune' is patches 0-3 and 'check' patches 4-7 (settings were chosen on 'tune' only). Rows:

- (a) NLCD x co-occurrence, argmax; (b) k-means (k=7) + weak-label mass, per tile;
- (d) ``--method pnp``: plug-and-play per tile with the shipped prior at its tuned settings;
- (e) ``--method qr``: Rolf et al.'s implicit posterior, trained on the region from the weak labels;
- (f) ``--method distill``: plug-and-play on the region's tiles (all four: ``--distill-tiles 4``), then a
  segmenter trained on those maps maps the region;
- (g) transfer: (f)'s segmenter saved on 'tune' (``--save-segmenter``) maps 'check' unchanged
  (``--segmenter``): no plug-and-play, no training.

Prints a table (accuracy / mIoU per region, per-class IoU on 'check', seconds and km2/hour of the
whole run per region) and the per-window cost of plug-and-play against the segmenter's forward pass.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _markdown
import numpy as np
import torch
from landcover_accuracy import SPLITS, load_tiles  # noqa: E402  (benchmarks/ is the script's folder)

from geo_ppp.geo.legend import load_legend
from geo_ppp.io import read_class_raster, read_image, read_labels_on_grid
from geo_ppp.landcover.baselines import kmeans_baseline, weak_argmax
from geo_ppp.landcover.metrics import Scores, confusion
from geo_ppp.landcover.weak import load_cooccurrence, weak_distribution
from geo_ppp.pipeline import segment
from geo_ppp.pipeline.region import SegmenterInfer

ROOT = Path(__file__).resolve().parents[1] / "sample_tiles"


def files(region: str) -> tuple[list[Path], list[Path]]:
    """The region's imagery and weak-label files."""
    idx = SPLITS[region]
    return [ROOT / "naip" / f"patch{i}.tif" for i in idx], [ROOT / "nlcd" / f"patch{i}.tif" for i in idx]


def score_map(path: Path, region: str, legend, k: int) -> Scores:
    """A region's map against the 1 m truth of each of its patches (pooled)."""
    cm = 0
    for i in SPLITS[region]:
        truth, nodata, grid = read_class_raster(ROOT / "truth" / f"patch{i}.tif")
        pred, _ = read_labels_on_grid(path, grid)
        pred_idx = legend.to_index(pred, legend.nodata)
        cm = cm + confusion(pred_idx, legend.to_index(truth, nodata), k)
    return Scores.from_confusion(cm)


def main() -> None:
    """Run the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep the maps here (default: a temp dir)")
    _markdown.add_option(parser)
    args = parser.parse_args()
    _markdown.record(args.markdown)
    legend = load_legend("chesapeake")
    k = legend.num_classes
    out = args.out or Path(tempfile.mkdtemp(prefix="region-methods-"))
    out.mkdir(parents=True, exist_ok=True)
    area_km2 = {}
    for region in ("tune", "check"):
        valid = sum(int(read_image(p)[1].sum()) for p in files(region)[0])
        area_km2[region] = valid / 1e6  # 1 m pixels

    rows: dict[str, dict[str, tuple[Scores, float]]] = {}
    # (a), (b): per tile, in memory
    tiles = load_tiles(legend)
    cooc = load_cooccurrence("chesapeake")
    for name, fn in (
        ("(a) NLCD x co-occurrence, argmax", lambda im, v, w: weak_argmax(w)),
        ("(b) k-means (k=7) + weak-label mass", lambda im, v, w: kmeans_baseline(im, w, v, 7, args.seed)),
    ):
        for region in ("tune", "check"):
            t0 = time.perf_counter()
            cm = 0
            for i in SPLITS[region]:
                img, valid, weak, truth = tiles[i]
                dist = weak_distribution(torch.from_numpy(weak)[None], cooc, 0.0)
                pred = fn(torch.from_numpy(img)[None], torch.from_numpy(valid)[None, None].float(), dist)
                cm = cm + confusion(np.asarray(pred)[0], truth, k)
            rows.setdefault(name, {})[region] = (Scores.from_confusion(cm), time.perf_counter() - t0)

    common = {"seed": args.seed, "progress": None}
    methods = (
        ("(d) pnp (the teacher)", {"method": "pnp"}),
        ("(e) qr", {"method": "qr", "train_steps": args.train_steps, "distill_tiles": 4}),
        ("(f) distill", {"method": "distill", "train_steps": args.train_steps, "distill_tiles": 4}),
    )
    pnp_tile_s = None
    for name, kw in methods:
        for region in ("tune", "check"):
            images, weak = files(region)
            tag = kw["method"]
            extra = {"save_segmenter": out / f"segmenter-{region}"} if tag == "distill" else {}
            t0 = time.perf_counter()
            res = segment(images, weak, "chesapeake", out / f"{tag}-{region}.tif", overwrite=True, **kw, **extra,
                          **common)  # fmt: skip
            seconds = time.perf_counter() - t0
            rows.setdefault(name, {})[region] = (score_map(res.out, region, legend, k), seconds)
            if tag == "pnp" and region == "check":
                pnp_tile_s = res.stats["seconds"]["infer_total"] / res.stats["ran"]
    images, weak = files("check")
    t0 = time.perf_counter()
    res = segment(images, weak, "chesapeake", out / "transfer-check.tif", overwrite=True,
                  segmenter=out / "segmenter-tune", **common)  # fmt: skip
    rows["(g) distill on 0-3, applied to 4-7"] = {
        "check": (score_map(res.out, "check", legend, k), time.perf_counter() - t0)
    }

    # the segmenter's forward pass per 256 x 256 window, batched as the pipeline batches (8)
    infer = SegmenterInfer(out / "segmenter-tune")
    batch = np.stack([tiles[i][0] for i in range(8)]).astype(np.float32)
    infer(batch, None, None, [], {})
    reps = 5
    t0 = time.perf_counter()
    for _ in range(reps):
        infer(batch, None, None, [], {})
    forward_s = (time.perf_counter() - t0) / (8 * reps)

    print(f"seed {args.seed}, {args.train_steps} training steps, torch threads {torch.get_num_threads()}, "
          f"maps in {out}\n")  # fmt: skip
    print("| method | tune acc | tune mIoU | check acc | check mIoU | IoU water/tree/lowveg/built (check) "
          "| s (tune / check) | km2/h (check) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, by_region in rows.items():
        cells = []
        for region in ("tune", "check"):
            if region in by_region:
                sc = by_region[region][0]
                cells += [f"{100 * sc.accuracy:.1f}", f"{100 * sc.miou:.1f}"]
            else:
                cells += ["-", "-"]
        sc, check_s = by_region["check"]
        ious = "/".join("-" if np.isnan(v) else f"{100 * v:.0f}" for v in sc.iou)
        secs = " / ".join(f"{by_region[r][1]:.1f}" if r in by_region else "-" for r in ("tune", "check"))
        print(f"| {name} | " + " | ".join(cells) + f" | {ious} | {secs} | {area_km2['check'] / check_s * 3600:.0f} |")
    print(f"\nper 256 x 256 window on this CPU: plug-and-play {pnp_tile_s:.3f} s (its inference stage in the "
          f"pipeline), segmenter forward {forward_s * 1000:.1f} ms: {pnp_tile_s / forward_s:.0f}x faster per km2")


if __name__ == "__main__":
    main()
