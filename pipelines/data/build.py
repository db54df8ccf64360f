"""Copy the real label rasters the shipped matrix and the shipped prior are made from.

Run from the repository root:  python pipelines/data/build.py

From ../shared/data/chesapeake-lulc-1m (see its PROVENANCE.md), copied unchanged into
``chesapeake-lulc-1m/``: ``Baywide_7class_20132014_E1300000_N1770000.tif``, one 10 x 10 km tile of
the Chesapeake Bay Program's 1 m land cover (2013/2014, ESRI:102039, West Virginia, ~11 % of it
holds data). The shipped land-cover prior is trained on it, and ``geo-ppp prior-check`` draws the
prior's held-out windows from it.

The second labelled NAIP tile the shipped co-occurrence matrix is counted on:

From ../shared/data/chesapeake-tile-25m (see its PROVENANCE.md), copied unchanged:
- ``m_3907833_nw_17_1_lc.tif``: Chesapeake Land Cover classes 1-6 (CVPR-2019 dataset, Robinson et al.)
  of the whole NAIP quarter-quad m_3907833_nw_17_1 near Cumberland MD/WV, 2013/2014;
- ``m_3907833_nw_17_1_nlcd.tif``: NLCD 2011 on the same grid.
Both are 260 x 260 pixels of about 23.6 x 29.5 m, EPSG:26917. The labels are single 1 m codes (no
mixed values; roads, a few metres wide, still hold 1.1 % of the pixels), i.e. point samples of the 1 m
map, which is what a co-occurrence count needs. pipelines/derive_cooccurrence.py reads them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent.parent / "shared" / "data"
FILES = {
    "m_3907833_nw_17_1_lc.tif": "chesapeake-tile-25m/m_3907833_nw_17_1_lc.tif",
    "m_3907833_nw_17_1_nlcd.tif": "chesapeake-tile-25m/m_3907833_nw_17_1_nlcd.tif",
    "chesapeake-lulc-1m/Baywide_7class_20132014_E1300000_N1770000.tif": (
        "chesapeake-lulc-1m/Baywide_7class_20132014_E1300000_N1770000.tif"
    ),
}


def main() -> None:
    """Copy the rasters."""
    for name, source in FILES.items():
        out = HERE / name
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED / source, out)
        print(f"wrote {out.relative_to(HERE.parent.parent)} ({out.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    main()
