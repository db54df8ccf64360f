"""Copy the real NAIP clips the tests need from ../shared/data/naip-clips (see its PROVENANCE.md).

Run from the repository root:  python tests/data/build.py

- naip_0.6m_epsg26911.tif: m_3211605_ne_11_060_20200415.tif as is (real NAIP, 0.6 m, 266 x 204,
  EPSG:26911, San Diego County CA, public domain; from stactools-packages/naip test data).
- naip_5m_epsg26914_crop.tif: the top-left 240 x 240 pixels of m_4709963_se_14_1_20200831.tif (real
  NAIP resampled to 5 m, EPSG:26914, nodata 0, North Dakota; from opengeos/data), cropped so the
  repository stays small; georeferencing, dtype, nodata and band interpretation are kept.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import rasterio
from rasterio.windows import Window

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent.parent.parent / "shared" / "data" / "naip-clips"


def main() -> None:
    shutil.copyfile(SOURCE / "m_3211605_ne_11_060_20200415.tif", HERE / "naip_0.6m_epsg26911.tif")
    with rasterio.open(SOURCE / "m_4709963_se_14_1_20200831.tif") as src:
        window = Window(0, 0, 240, 240)
        profile = src.profile | {
            "width": 240, "height": 240, "transform": src.window_transform(window), "compress": "deflate",
        }
        with rasterio.open(HERE / "naip_5m_epsg26914_crop.tif", "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.colorinterp = src.colorinterp
    for path in sorted(HERE.glob("*.tif")):
        print(f"wrote {path.relative_to(HERE.parent.parent)} ({path.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    main()
