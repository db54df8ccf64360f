"""Reading tiles: geo_ppp's region reader against torchgeo's RasterDataset + GridGeoSampler.

Both read every 128 x 128 window (stride 112) of real NAIP files: one file on its own grid, and
the eight sample patches (scattered files) as one region. Reported: windows/s and whether each
window comes back on exactly the tile's pixel grid (what the mosaic needs).

    python benchmarks/read_windows.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _markdown
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geo_ppp.io.imagery import ImageReader, open_region  # noqa: E402
from geo_ppp.pipeline.tiling import TileGrid  # noqa: E402

NAIP_5M = ROOT.parent / "shared" / "data" / "naip-clips" / "m_4709963_se_14_1_20200831.tif"
PATCHES = sorted((ROOT / "sample_tiles" / "naip").glob("*.tif"))
SIZE, OVERLAP = 128, 16


def ours(paths: list[Path]) -> tuple[float, int]:
    spec = open_region(paths)
    grid = TileGrid(spec.work.height, spec.work.width, SIZE, OVERLAP)
    t0 = time.perf_counter()
    with ImageReader(spec) as reader:
        for t in grid.tiles:
            reader.read(t.y, t.x, SIZE, SIZE)
    return time.perf_counter() - t0, len(grid)


def torchgeo(paths: list[Path]) -> tuple[float, int, float]:
    from torchgeo.datasets import RasterDataset
    from torchgeo.samplers import GridGeoSampler, Units

    class Naip(RasterDataset):
        filename_glob = "*.tif"
        is_image = True

    folder = paths[0].parent
    ds = Naip(paths=[str(p) for p in paths] if len(paths) > 1 else str(paths[0]))
    res = ds.res[0] if isinstance(ds.res, tuple) else ds.res
    sampler = GridGeoSampler(ds, size=SIZE * res, stride=(SIZE - OVERLAP) * res, units=Units.CRS)
    shapes = []
    t0 = time.perf_counter()
    n = 0
    for query in sampler:
        sample = ds[query]
        shapes.append(tuple(sample["image"].shape[-2:]))
        n += 1
    seconds = time.perf_counter() - t0
    exact = float(np.mean([s == (SIZE, SIZE) for s in shapes])) if shapes else float("nan")
    del folder
    return seconds, n, exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _markdown.add_option(parser)
    args = parser.parse_args()
    _markdown.record(args.markdown)
    print("| data | reader | windows | s | windows/s | exact tile grid |")
    print("|---|---|---|---|---|---|")
    for name, paths in (("one 5 m NAIP file, 934 x 724", [NAIP_5M]), ("8 scattered 1 m patches", PATCHES)):
        s, n = ours(paths)
        print(f"| {name} | geo_ppp ImageReader | {n} | {s:.2f} | {n / s:.0f} | yes (by construction) |")
        try:
            s, n, exact = torchgeo(paths)
            print(f"| {name} | torchgeo RasterDataset + GridGeoSampler | {n} | {s:.2f} | {n / s:.0f} | "
                  f"{exact:.0%} of windows {SIZE}x{SIZE} |")
        except Exception as exc:  # report, do not hide
            print(f"| {name} | torchgeo RasterDataset + GridGeoSampler | - | - | - | failed: {exc} |")


if __name__ == "__main__":
    main()
