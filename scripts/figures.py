"""Make every figure of the docs from real outputs (`make figures`); nothing is drawn by hand.

1. `geo-ppp demo --out demo_out` if `demo_out/landcover.tif` is missing (the sample tiles, end to end);
2. its quicklook -> `docs/assets/demo_quicklook.png` (the README's picture);
3. QGIS 3.22+ itself renders the demo's map (styled by its `.qml`) and polygons (their stored style)
   headless -> `docs/assets/qgis_map.png`, `qgis_polygons.png`, `qgis_overlay.png` (scripts/qgis_render.py,
   run by the system Python that has PyQGIS; skipped with a message where QGIS is absent);
4. 16 digits under `class=3` from the shipped digits prior -> `docs/assets/digits_class3.png`
   (`geo-ppp generate --prior digits --constraint class=3 --num 16 --seed 0`;
   minutes on a busy 2-core machine);
5. the figures the benchmarks and the shipped weights carry -> `docs/assets/`:
   `benchmarks/figures/landcover_patches.png` (written by
   `python benchmarks/landcover_accuracy.py --quicklook benchmarks/figures/landcover_patches.png`),
   the land-cover prior's `prior_check.png` (`geo-ppp prior-check landcover-chesapeake --num 256`)
   and the TSP prior's `samples.png`. Those are copied, not rerun: their commands take tens of minutes.

    python scripts/figures.py [--demo-out demo_out] [--qgis-python /usr/bin/python3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "docs" / "assets"
COPIES = {
    ROOT / "benchmarks" / "figures" / "landcover_patches.png": "landcover_patches.png",
    ROOT / "geo_ppp" / "weights" / "landcover-chesapeake" / "prior_check.png": "prior_check.png",
    ROOT / "geo_ppp" / "weights" / "tsp50" / "samples.png": "tsp50_samples.png",
}


def _same(a: Path, b: Path, pixels: bool) -> bool:
    if a.read_bytes() == b.read_bytes():
        return True
    if not pixels:
        return False
    import matplotlib.image as mpimg  # QGIS's PNGs differ in bytes from run to run, not in pixels

    x, y = mpimg.imread(a), mpimg.imread(b)
    return x.shape == y.shape and bool((x == y).all())


def _copy(src: Path, name: str, same_pixels: bool = False) -> None:
    """Copy `src` to docs/assets/NAME unless it holds the same picture already (a clean tree on reruns)."""
    dst = ASSETS / name
    shown = src.relative_to(ROOT) if src.is_relative_to(ROOT) else src.name
    if dst.exists() and _same(src, dst, same_pixels):
        print(f"unchanged {dst.relative_to(ROOT)}")
        return
    shutil.copyfile(src, dst)
    print(f"wrote {dst.relative_to(ROOT)} (from {shown})")


def main() -> None:
    """Make the figures: the demo if needed, its quicklook, the QGIS renders, the copies."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-out", type=Path, default=ROOT / "demo_out")
    parser.add_argument("--qgis-python", default="/usr/bin/python3", help="a Python that imports qgis.core")
    args = parser.parse_args()
    ASSETS.mkdir(parents=True, exist_ok=True)
    demo = args.demo_out
    exe = Path(sys.executable).with_name("geo-ppp")
    geo_ppp = str(exe) if exe.exists() else "geo-ppp"
    if not (demo / "landcover.tif").exists():
        cmd = [geo_ppp, "demo", "--out", str(demo), "--overwrite"]
        print("running", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    _copy(demo / "quicklook.png", "demo_quicklook.png")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    env["GDAL_PAM_ENABLED"] = "NO"  # QGIS would leave .aux.xml statistics beside the sample tiles
    probe = subprocess.run([args.qgis_python, "-c", "import qgis.core"], env=env, capture_output=True)
    if probe.returncode:
        print(f"skipped the QGIS renders: {args.qgis_python} cannot import qgis.core "
              "(install QGIS: `make qgis-deps`)", file=sys.stderr)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run(
                [args.qgis_python, str(ROOT / "scripts" / "qgis_render.py"), str(demo),
                 str(ROOT / "sample_tiles"), tmp],
                env=env, capture_output=True, text=True, cwd=ROOT,
            )
            if proc.returncode:
                raise SystemExit(f"the QGIS render failed:\n{proc.stderr[-2000:]}")
            for png in sorted(Path(tmp).glob("*.png")):
                _copy(png, png.name, same_pixels=True)

    digits = ASSETS / "digits_class3.png"
    if not digits.exists():
        cmd = [geo_ppp, "generate", "--prior", "digits", "--constraint", "class=3", "--num", "16",
               "--seed", "0", "--out", str(digits)]
        print("running", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        for extra in (digits.with_suffix(".npy"), digits.with_suffix(".json")):
            extra.unlink(missing_ok=True)  # the samples and settings beside the picture: not docs

    for src, name in COPIES.items():
        _copy(src, name)


if __name__ == "__main__":
    main()
