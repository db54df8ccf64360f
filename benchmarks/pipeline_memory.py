"""Peak memory of segmenting a large raster: 16384 x 16384 x 4 uint8, tiny prior, 1 step.

With ``--method distill --distill-tiles 64`` plug-and-play runs on 64 sampled tiles, a segmenter is
trained on them (streamed from the work dir: never the region in memory) and maps every tile.

The image is synthetic (smooth fields plus texture, written tiled) with NLCD-coded weak labels at
30 m; the prior is a tiny random-weight U-Net. The run happens in a child process, whose peak RSS
(``ru_maxrss``) is reported with the output's validity checks. Target: peak RSS < 2 GB.

    python benchmarks/pipeline_memory.py [--size 16384] [--tile-size 512] [--keep DIR]
        [--method pnp|distill|qr] [--distill-tiles 64] [--train-steps 1000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _markdown
import numpy as np
import rasterio
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, time
from geo_ppp.pipeline import segment
from geo_ppp.landcover.infer import InferConfig
a = json.loads(sys.argv[1])
cfg = InferConfig(pnp={"steps": 1}, clusters={"iterations": 1, "warmup_iterations": 0}, refine_iterations=1)
t = time.perf_counter()
r = segment(a["image"], a["weak"], "chesapeake", a["out"], prior=a["prior"], config=cfg, tile_size=a["tile"],
            overlap=32, batch_size=4, overwrite=True, workdir=a["workdir"], method=a["method"],
            train_steps=a["train_steps"], distill_tiles=a["distill_tiles"])
print(json.dumps({"seconds": time.perf_counter() - t, "stats": r.stats,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_image(path: Path, size: int) -> None:
    """A tiled 4-band uint8 GeoTIFF: smooth random fields plus noise, written block row by block row."""
    rng = np.random.default_rng(0)
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 4, "dtype": "uint8", "crs": "EPSG:26917",
        "transform": from_origin(500000.0, 4200000.0, 1.0, 1.0), "tiled": True, "blockxsize": 512,
        "blockysize": 512, "compress": "deflate", "BIGTIFF": "YES",
    }
    coarse = rng.uniform(40, 200, (4, size // 512 + 2, size // 512 + 2)).astype(np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for y0 in range(0, size, 512):
            rows = np.linspace(y0 / 512, (y0 + 512) / 512, 512, endpoint=False)
            cols = np.linspace(0, size / 512, size, endpoint=False)
            r0 = rows.astype(int)
            c0 = cols.astype(int)
            fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
            block = (
                coarse[:, r0][:, :, c0] * (1 - fr) * (1 - fc)
                + coarse[:, r0 + 1][:, :, c0] * fr * (1 - fc)
                + coarse[:, r0][:, :, c0 + 1] * (1 - fr) * fc
                + coarse[:, r0 + 1][:, :, c0 + 1] * fr * fc
            )
            block += rng.normal(0, 12, block.shape)
            dst.write(np.clip(block, 0, 255).astype(np.uint8), window=rasterio.windows.Window(0, y0, size, 512))


def make_weak(path: Path, size: int) -> None:
    """NLCD-coded weak labels at 30 m over the image (blocks of forest, pasture, developed)."""
    n = size // 30 + 2
    rng = np.random.default_rng(1)
    codes = np.array([41, 81, 21, 11], np.uint8)[rng.integers(0, 4, (n // 8 + 1, n // 8 + 1))]
    codes = np.kron(codes, np.ones((8, 8), np.uint8))[:n, :n]
    profile = {"driver": "GTiff", "width": n, "height": n, "count": 1, "dtype": "uint8", "crs": "EPSG:26917",
               "transform": from_origin(500000.0, 4200000.0, 30.0, 30.0), "nodata": 0}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(codes, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--keep", type=Path, default=None, help="keep inputs and outputs here")
    parser.add_argument("--method", default="pnp", choices=("pnp", "distill", "qr"))
    parser.add_argument("--distill-tiles", type=int, default=None)
    parser.add_argument("--train-steps", type=int, default=1000)
    _markdown.add_option(parser)
    args = parser.parse_args()
    _markdown.record(args.markdown)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="geo_ppp_mem_"))
    folder.mkdir(parents=True, exist_ok=True)
    image, weak = folder / "image.tif", folder / "weak.tif"
    t0 = time.perf_counter()
    if not image.exists():
        make_image(image, args.size)
        make_weak(weak, args.size)
    prep = time.perf_counter() - t0
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import _tiny_landcover_prior

    prior = folder / "tiny-prior"
    if not prior.exists():
        _tiny_landcover_prior(prior)
    spec = {"image": str(image), "weak": str(weak), "out": str(folder / "map.tif"), "prior": str(prior),
            "tile": args.tile_size, "workdir": str(folder / "work"), "method": args.method,
            "train_steps": args.train_steps, "distill_tiles": args.distill_tiles}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode:
        print(proc.stderr[-3000:])
        _markdown.discard()
        raise SystemExit(proc.returncode)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    with rasterio.open(folder / "map.tif") as ds:
        complete = (ds.width, ds.height) == (args.size, args.size)
        layout = ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")
        overviews = ds.overviews(1)
        ov = ds.read(1, out_shape=(1024, 1024))
        valid_share = float((ov != ds.nodata).mean())
    s = res["stats"]
    method = args.method if args.method == "pnp" else (
        f"--method {args.method} --distill-tiles {args.distill_tiles} --train-steps {args.train_steps}")
    print(f"image {args.size} x {args.size} x 4 uint8 (made in {prep:.0f} s), tile {args.tile_size}, overlap 32, "
          f"tiny prior, 1 step, {method}")
    print()
    print("| quantity | value |")
    print("|---|---|")
    print(f"| tiles (ran / skipped) | {s['tiles']} ({s['ran']} / {s['skipped']}) |")
    print(f"| wall time | {res['seconds']:.0f} s |")
    print(f"| peak RSS of the segmenting process | {max(child_rss, res['maxrss_mb']):.0f} MB |")
    print(f"| output complete ({args.size}^2, COG, overviews) | {complete}, {layout}, {overviews} |")
    print(f"| mapped (non-nodata) share | {valid_share:.3f} |")
    print(f"| seconds per stage | {json.dumps(s['seconds'])} |")
    ok = max(child_rss, res["maxrss_mb"]) < 2048 and complete and layout == "COG" and valid_share > 0.99
    print(f"\ntarget peak RSS < 2 GB with a complete, valid output: {'MET' if ok else 'NOT MET'}")
    if args.keep is None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
