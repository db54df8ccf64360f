"""Is the region calibration robust to what the region holds? Mixed-patch accuracy per region make-up.

The calibration is fitted on the region it maps, so its benefit depends on which patches the region
holds. This runs ``geo-ppp segment``'s pipeline (shipped prior, seed 0) on several regions built from
the eight sample patches: each mixed patch alone, patches 0-3, patches 4-7 (three all-forest
patches, one of them bright autumn crowns, beside one pasture), and all eight; three ways each:
no calibration (``--no-calibrate``), the default anchors-only fit, and the label-super-resolution EM
fit (``AppearanceConfig(fit="em")``, set here by replacing the pipeline's config class: there is no
CLI switch for it). Prints per-patch accuracy and the sum over the mixed-patch cells (each mixed
patch in each region it is part of counts once), plus the lowest all-forest patch.

Usage: python benchmarks/calibration_regions.py [--cooccurrence chesapeake] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
from pathlib import Path

import _markdown
import torch

import geo_ppp.pipeline.calibrate as calibrate_module
from geo_ppp.geo.legend import load_legend
from geo_ppp.io import read_class_raster, read_labels_on_grid
from geo_ppp.landcover.appearance import AppearanceConfig
from geo_ppp.landcover.metrics import Scores, confusion
from geo_ppp.pipeline import segment

ROOT = Path(__file__).resolve().parents[1] / "sample_tiles"
MIXED = (0, 3, 7)
REGIONS = ((0,), (3,), (7,), (0, 1, 2, 3), (4, 5, 6, 7), tuple(range(8)))
WAYS = ("no calibration", "anchors (default)", "em")


def run(region: tuple[int, ...], way: str, out: Path, cooccurrence: str) -> tuple[dict[int, float], str]:
    """Map ``region`` one ``way``; per-patch accuracy and the evidence weight chosen."""
    fit = "em" if way == "em" else "anchors"
    calibrate_module.AppearanceConfig = functools.partial(AppearanceConfig, fit=fit)
    legend = load_legend("chesapeake")
    images = [ROOT / "naip" / f"patch{i}.tif" for i in region]
    weak = [ROOT / "nlcd" / f"patch{i}.tif" for i in region]
    path = out / f"{'-'.join(map(str, region))}-{fit if way != 'no calibration' else 'none'}.tif"
    res = segment(images, weak, "chesapeake", path, seed=0, progress=None, overwrite=True,
                  calibrate=way != "no calibration", cooccurrence=cooccurrence)  # fmt: skip
    record = json.loads(Path(f"{res.out}.json").read_text()).get("calibration")
    weight = ""
    if isinstance(record, dict):
        weight = str((record.get("summary") or {}).get("evidence_weight", "skipped"))
    acc = {}
    for i in region:
        truth, nodata, grid = read_class_raster(ROOT / "truth" / f"patch{i}.tif")
        pred, _ = read_labels_on_grid(path, grid)
        k = legend.num_classes
        acc[i] = Scores.from_confusion(confusion(legend.to_index(pred, legend.nodata),
                                                 legend.to_index(truth, nodata), k)).accuracy * 100  # fmt: skip
    return acc, weight


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cooccurrence", default="chesapeake")
    _markdown.add_option(parser)
    args = parser.parse_args()
    _markdown.record(args.markdown)
    torch.set_num_threads(1)
    out = Path(tempfile.mkdtemp(prefix="calibration-regions-"))
    print(f"co-occurrence {args.cooccurrence}, seed 0, shipped prior; accuracy % per patch (mixed: 0, 3, 7)")
    print()
    print("| region | " + " | ".join(WAYS) + " |")
    print("|---|" + "---|" * len(WAYS))
    sums = dict.fromkeys(WAYS, 0.0)
    pure_min = dict.fromkeys(WAYS, 100.0)
    for region in REGIONS:
        cells = []
        for way in WAYS:
            acc, weight = run(region, way, out, args.cooccurrence)
            sums[way] += sum(acc[i] for i in region if i in MIXED)
            pure = [acc[i] for i in region if i not in MIXED]
            if pure:
                pure_min[way] = min(pure_min[way], *pure)
            shown = " ".join(f"p{i} {acc[i]:.1f}" for i in region if i in MIXED or acc[i] < 99.5)
            cells.append(shown + (f" (w {weight})" if weight else ""))
        print(f"| {','.join(map(str, region))} | " + " | ".join(cells) + " |")
    print("| sum over mixed cells | " + " | ".join(f"{sums[w]:.1f}" for w in WAYS) + " |")
    print("| lowest all-forest patch | " + " | ".join(f"{pure_min[w]:.1f}" for w in WAYS) + " |")
    print()
    print("all-forest patches are shown only where they fall below 99.5 %; w: the evidence weight chosen")


if __name__ == "__main__":
    main()
