"""Dask scaling and overhead on this machine: serial in-process vs LocalCluster of 1 and 2 workers.

The eight real sample patches form one region, tiled at 128 px (overlap 16, 72 tiles, batches of
4: 18 tasks), segmented with the shipped prior at its default settings. Every run writes the same
map (checked byte for byte). Reported: wall time of the tile phase (the cluster's one-off start-up,
worker processes importing geo_ppp and loading the prior, is reported apart), tasks/s, tiles/s and
km2/hour, then

- scaling: throughput of 2 worker processes over 1 (target >= 1.7x);
- overhead: Dask with 1 single-threaded worker against the serial path with 1 torch thread on the
  same tiles (target <= 10 %).

    python benchmarks/dask_scaling.py [--steps N] [--tile-size 128] [--batch-size 4] [--repeats 3]

Each mode runs ``--repeats`` times in rotating order; medians are reported (the machine is shared).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _markdown
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geo_ppp.pipeline.distributed import DaskRunner  # noqa: E402
from geo_ppp.pipeline.job import RunSettings  # noqa: E402
from geo_ppp.pipeline.plan import prepare_region  # noqa: E402
from geo_ppp.pipeline.run import finish_region  # noqa: E402
from geo_ppp.pipeline.worker import run_serial  # noqa: E402

TILES = ROOT / "sample_tiles"
STARTUP: dict[str, float] = {}


def run(mode: str, folder: Path, args: argparse.Namespace) -> tuple[float, int, int, bytes, float]:
    """(tile-phase seconds, tasks, tiles, map bytes, km2) of one run."""
    naip = sorted((TILES / "naip").glob("*.tif"))
    nlcd = sorted((TILES / "nlcd").glob("*.tif"))
    out = folder / f"{mode}.tif"
    prep = prepare_region(
        naip, nlcd, "chesapeake", out, workdir=folder / f"{mode}.work", resume=False, overwrite=True,
        settings=RunSettings(
            steps=args.steps, tile_size=args.tile_size, overlap=16, batch_size=args.batch_size
        ),
    )
    job = prep.job
    batches = job.batches()
    timings: dict[str, float] = {}
    if mode == "serial":
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        report = run_serial(job, batches, None, timings)
        seconds = time.perf_counter() - t0
    else:
        t0 = time.perf_counter()
        with DaskRunner(mode) as runner:
            runner.prepare(job)  # start-up: worker processes, imports, the prior loaded once per worker
            STARTUP[mode] = time.perf_counter() - t0
            t0 = time.perf_counter()
            report = runner(job, batches, None, timings)
            seconds = time.perf_counter() - t0
    result = finish_region(prep, report, timings)
    ran = sum(1 for v in report.values() if v == "ran")
    km2 = ran * (args.tile_size - 16) ** 2 * job.image.work_resolution_m**2 / 1e6
    return seconds, len(batches), ran, result.out.read_bytes(), km2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--tile-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the three runs (medians reported)")
    _markdown.add_option(parser)
    args = parser.parse_args()
    _markdown.record(args.markdown)
    folder = Path(tempfile.mkdtemp(prefix="geo_ppp_dask_"))
    modes = ("serial", "local:1", "local:2")
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    rows = {}
    maps = set()
    for r in range(args.repeats):
        # the order rotates each round, so slow drifts of a shared machine hit every mode alike
        for mode in modes[r % 3:] + modes[: r % 3]:
            sec, tasks, tiles, data, km2 = run(mode, folder, args)
            seconds[mode].append(sec)
            rows[mode] = (tasks, tiles, km2)
            maps.add(data)
            print(f"  round {r + 1} {mode}: {sec:.1f} s", flush=True)
    med = {m: statistics.median(v) for m, v in seconds.items()}
    print(f"\ntiles of {args.tile_size} px, overlap 16, batches of {args.batch_size}, shipped prior, "
          f"steps {args.steps or 'default'}, {args.repeats} rounds; identical maps: {len(maps) == 1}\n")
    print("| run | tile phase s (median) | runs s | tasks/s | tiles/s | km2/hour |")
    print("|---|---|---|---|---|---|")
    for mode in modes:
        tasks, tiles, km2 = rows[mode]
        sec = med[mode]
        name = {"serial": "serial, in process, 1 torch thread", "local:1": "LocalCluster, 1 worker x 1 thread",
                "local:2": "LocalCluster, 2 workers x 1 thread"}[mode]
        runs = ", ".join(f"{v:.1f}" for v in seconds[mode])
        print(f"| {name} | {sec:.1f} | {runs} | {tasks / sec:.3f} | {tiles / sec:.2f} | {km2 / sec * 3600:.2f} |")
    print("\none-off start-up (processes, imports, prior), last round: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in STARTUP.items()))
    scaling = med["local:1"] / med["local:2"]
    overhead = med["local:1"] / med["serial"] - 1
    print(f"\nscaling 2 vs 1 workers (medians): {scaling:.2f}x (target >= 1.7x: {'MET' if scaling >= 1.7 else 'NOT MET'})")
    print(f"Dask overhead vs serial (medians): {overhead:+.1%} (target <= 10 %: "
          f"{'MET' if overhead <= 0.10 else 'NOT MET'})")


if __name__ == "__main__":
    main()
