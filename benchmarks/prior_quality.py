"""Prior quality against training time: ``prior-check`` on snapshots of one training run.

    python benchmarks/prior_quality.py SNAPSHOT_DIR [--num 128] [--times TIMES.txt] [--threads 2]

SNAPSHOT_DIR holds one prior folder per checkpoint (named by its step; ``runs/snap.sh`` copies the
prior a running ``train-prior`` publishes every 1000 steps). TIMES.txt (``NAME STEP UNIX_TIME`` lines,
the first line ``start UNIX_TIME``) gives the wall clock of each snapshot; with ``--threads`` it becomes
CPU-hours. Prints one row per snapshot: the statistics and checks of ``geo-ppp prior-check`` against
the prior's held-out windows (the same windows for every row: same seed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _markdown

from geo_ppp.core.weights import load_prior
from geo_ppp.landcover.prior_check import check_prior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("snapshots", type=Path)
    parser.add_argument("--num", type=int, default=128)
    parser.add_argument("--times", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    _markdown.add_option(parser)
    args = parser.parse_args()
    _markdown.record(args.markdown)
    start, stamps = None, {}
    if args.times and args.times.exists():
        for line in args.times.read_text().splitlines():
            parts = line.split()
            if parts[0] == "start":
                start = float(parts[1])
            elif len(parts) == 3:
                stamps[int(parts[1])] = float(parts[2])
    folders = sorted((p for p in args.snapshots.iterdir() if (p / "config.json").exists()), key=lambda p: int(p.name))
    print("| steps | CPU-h | one-hot | mix TV | speckle x real | rare majorities | PD tree | MPA tree | PD low veg | MPA low veg | passed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for folder in folders:
        step = int(folder.name)
        hours = "-" if start is None or step not in stamps else f"{(stamps[step] - start) * args.threads / 3600:.2f}"
        r = check_prior(load_prior(folder), num=args.num, seed=args.seed)
        c = r.checks

        def v(name, c=c):
            value = c.get(name, {}).get("value")
            return "-" if value is None else f"{value:.2f}"

        print(f"| {step} | {hours} | {r.samples['one_hotness']:.3f} | {c['class_mix_tv']['value']:.3f} | "
              f"{c['speckle_ratio']['value']:.2f} | {c['rare_majority_share']['value']:.3f} | "
              f"{v('patch_density_ratio[tree canopy]')} | {v('mean_patch_area_ratio[tree canopy]')} | "
              f"{v('patch_density_ratio[low vegetation]')} | {v('mean_patch_area_ratio[low vegetation]')} | "
              f"{'yes' if r.passed else 'no'} |")


if __name__ == "__main__":
    main()
