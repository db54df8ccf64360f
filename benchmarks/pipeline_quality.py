"""Seams and overhead of the tiled pipeline on the real sample tiles, with the shipped prior.

Seams: each 256 x 256 patch is segmented with small tiles (128 px) so that tile borders run
through it, with feathered blending (the default overlap) and without overlap (hard cuts, to show
the measure sees seams). The class disagreement rate between neighbouring pixels is measured
across the lines where a tile starts or ends ("borders") and across lines at least ``overlap``
pixels away from every tile edge ("interiors"). Target: borders / interiors <= 1.5.

Overhead, at default settings, on two regions: a dense 1024 x 1024 mosaic of the real patches
(each patch and its NLCD, mirrored to fill 4 x 4 places: real imagery and labels, artificial
joins) and the eight scattered patches as one region (the demo's case, whose mosaic spans 3.6 x
6.6 km of mostly nodata). The time outside inference (reading, weak labels and clustering, writing
tiles, mosaicking, publishing) over the total; inference = the prior optimisation + the 1 m
refinement. Target: <= 15 %.

    python benchmarks/pipeline_quality.py [--steps N] [--skip-seams] [--skip-overhead]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import _markdown
import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geo_ppp.pipeline import segment  # noqa: E402
from geo_ppp.pipeline.tiling import axis_starts  # noqa: E402

TILES = ROOT / "sample_tiles"


def line_disagreement(codes: np.ndarray, positions: list[int], axis: int) -> tuple[int, int]:
    """(different, total) neighbour pairs across the lines ``positions`` (between p - 1 and p)."""
    diff = total = 0
    for p in positions:
        if not 0 < p < codes.shape[axis]:
            continue
        a = np.take(codes, p - 1, axis=axis)
        b = np.take(codes, p, axis=axis)
        ok = (a != 0) & (b != 0)
        diff += int((a != b)[ok].sum())
        total += int(ok.sum())
    return diff, total


def seam_lines(length: int, size: int, overlap: int) -> tuple[list[int], list[int]]:
    """Tile-edge lines and interior lines (>= overlap px from any tile edge) along one axis."""
    starts = axis_starts(length, size, overlap)
    edges = sorted({s for s in starts if s > 0} | {s + size for s in starts if s + size < length})
    far = [p for p in range(1, length) if all(abs(p - e) >= max(overlap, 8) for e in edges)]
    return edges, far


def seams(
    steps: int | None, tile: int, overlap: int, folder: Path, calibrate: bool = True
) -> tuple[float, float, float]:
    """Mean disagreement across tile edges and interiors over the eight patches, and the seconds."""
    border = [0, 0]
    interior = [0, 0]
    t0 = time.perf_counter()
    for naip in sorted((TILES / "naip").glob("*.tif")):
        out = folder / f"{naip.stem}-{tile}-{overlap}-{int(calibrate)}.tif"
        segment(naip, TILES / "nlcd" / naip.name, "chesapeake", out, steps=steps, tile_size=tile, overlap=overlap,
                overwrite=True, calibrate=calibrate)
        with rasterio.open(out) as ds:
            codes = ds.read(1)
        for axis in (0, 1):
            edges, far = seam_lines(codes.shape[axis], tile, overlap)
            d, n = line_disagreement(codes, edges, axis)
            border[0] += d
            border[1] += n
            d, n = line_disagreement(codes, far, axis)
            interior[0] += d
            interior[1] += n
    return border[0] / max(border[1], 1), interior[0] / max(interior[1], 1), time.perf_counter() - t0


def dense_mosaic(folder: Path, n: int = 4) -> tuple[Path, Path]:
    """A dense n x n mosaic of the real 256 px patches (mirrored in turn) and of their NLCD on that grid."""
    from rasterio.transform import from_origin

    from geo_ppp.io import read_image, read_labels_on_grid

    patches = sorted((TILES / "naip").glob("*.tif"))
    img = np.zeros((4, 256 * n, 256 * n), np.uint8)
    weak = np.zeros((1, 256 * n, 256 * n), np.uint8)
    for i in range(n * n):
        p = patches[i % len(patches)]
        data, _, grid = read_image(p)
        codes, _ = read_labels_on_grid(TILES / "nlcd" / p.name, grid)
        if i >= len(patches):  # the second use of a patch is mirrored
            data, codes = data[:, :, ::-1], codes[:, ::-1]
        r, c = divmod(i, n)
        img[:, r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256] = data.astype(np.uint8)
        weak[0, r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256] = codes
    transform = from_origin(535000.0, 4170000.0, 1.0, 1.0)
    common = {"driver": "GTiff", "width": 256 * n, "height": 256 * n, "crs": "EPSG:26917",
              "transform": transform, "tiled": True, "compress": "deflate"}
    with rasterio.open(folder / "dense.naip.tif", "w", count=4, dtype="uint8", **common) as ds:
        ds.write(img)
    with rasterio.open(folder / "dense.nlcd.tif", "w", count=1, dtype="uint8", nodata=0, **common) as ds:
        ds.write(weak)
    return folder / "dense.naip.tif", folder / "dense.nlcd.tif"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="plug-and-play steps (default: the prior's)")
    parser.add_argument("--skip-seams", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    _markdown.add_option(parser)
    args = parser.parse_args()
    _markdown.record(args.markdown)
    folder = Path(tempfile.mkdtemp(prefix="geo_ppp_quality_"))
    if not args.skip_seams:
        print("seams: 8 real patches, tiles of 128 px, shipped prior\n")
        print("| overlap | region calibration | disagreement at tile edges | in tile interiors | ratio "
              "| target <= 1.5 | s |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for overlap, calibrate in ((32, True), (32, False), (0, True)):
            b, i, s = seams(args.steps, 128, overlap, folder, calibrate)
            verdict = "MET" if b <= 1.5 * i else "NOT MET"
            print(f"| {overlap} | {'on (default)' if calibrate else 'off'} | {b:.4f} | {i:.4f} | "
                  f"{b / max(i, 1e-9):.2f} | {verdict} | {s:.0f} |")
        print()
    if not args.skip_overhead:
        image, weak = dense_mosaic(folder)
        naip = sorted((TILES / "naip").glob("*.tif"))
        nlcd = sorted((TILES / "nlcd").glob("*.tif"))
        runs = {
            "dense 1024 x 1024 mosaic": segment(image, weak, "chesapeake", folder / "dense.tif", steps=args.steps,
                                               overwrite=True),
            "8 scattered patches": segment(naip, nlcd, "chesapeake", folder / "region.tif", steps=args.steps,
                                           overwrite=True),
        }
        print("overhead at default settings (seconds; inference = pnp + refine)\n")
        keys = ("read", "clustering", "pnp", "refine", "write_tiles", "publish")
        print("| region | tiles | " + " | ".join(keys) + " | rest | total | outside inference | target <= 15 % |")
        print("|---|---|" + "---|" * (len(keys) + 4))
        for name, res in runs.items():
            sec = res.stats["seconds"]
            total = sec["total"]
            rest = total - sum(sec.get(k, 0.0) for k in keys)
            share = 1 - (sec.get("pnp", 0.0) + sec.get("refine", 0.0)) / total
            cells = " | ".join(f"{sec.get(k, 0.0):.2f}" for k in keys)
            print(f"| {name} | {res.stats['ran']} | {cells} | {rest:.2f} | {total:.2f} | {share:.1%} | "
                  f"{'MET' if share <= 0.15 else 'NOT MET'} |")


if __name__ == "__main__":
    main()
