"""Build sample_tiles/ from the real Chesapeake patches in ../shared/data/chesapeake-wv-patches.

Run from the repository root:  python sample_tiles/build.py [--source DIR]

Each patch .npz holds NAIP (4, 256, 256) uint8, Chesapeake 1 m land cover and NLCD resampled to
1 m, pixel-aligned, with NO georeferencing. We write them the way users hold such data:

- ``naip/patchN.tif``: NAIP R, G, B, NIR uint8 at 1 m in EPSG:26917 (UTM 17N), colour
  interpretation red, green, blue, undefined (NIR is data, not an alpha band: QGIS draws it as RGB).
- ``nlcd/patchN.tif``: NLCD class codes at 30 m in EPSG:5070 (CONUS Albers, the NLCD product's own
  CRS and grid alignment), nodata 0: the 1 m NLCD is reprojected with mode resampling onto the
  30 m NLCD grid, so its 30 m blocks come back as single cells.
- ``truth/patchN.tif``: the Chesapeake 1 m land cover, raw codes 1-6, nodata 15, on the NAIP grid.

The transform is APPROXIMATE: the patches come from NAIP quarter-quad m_3708020_sw_17_1, whose
north-west corner we place at 37.6875 N, 80.625 W (the quarter-quad's nominal corner) projected to
UTM 17N and snapped to 1 m; a patch's offsets (``x_offset``, ``y_offset``, pixels, anchor convention
undocumented) are added to it. Positions may be off by up to a few hundred metres; pixels within a
patch are exact and the NLCD/NAIP alignment inside a patch is preserved by construction.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.transform import from_origin
from rasterio.warp import reproject, transform, transform_bounds

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parent.parent / "shared" / "data" / "chesapeake-wv-patches"
TILE = "m_3708020_sw_17_1"
UTM = CRS.from_epsg(26917)
ALBERS = CRS.from_epsg(5070)
NLCD_RES = 30.0
NLCD_EDGE = 15.0  # NLCD CONUS cell edges sit at 15 m (mod 30) in EPSG:5070


def _corner() -> tuple[float, float]:
    xs, ys = transform(CRS.from_epsg(4326), UTM, [-80.625], [37.6875])
    return math.floor(xs[0]), math.ceil(ys[0])


def _write(path: Path, data: np.ndarray, crs: CRS, tf, nodata: int | None, descriptions: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype="uint8",
        crs=crs,
        transform=tf,
        nodata=nodata,
        compress="deflate",
        tiled=True,
        blockxsize=128,
        blockysize=128,
    )
    if descriptions[:3] == ["red", "green", "blue"]:
        profile["photometric"] = "RGB"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions[:3] == ["red", "green", "blue"]:
            rest = [ColorInterp.undefined] * (data.shape[0] - 3)
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, *rest]
        for i, d in enumerate(descriptions, 1):
            dst.set_band_description(i, d)
        dst.update_tags(
            SOURCE=f"Chesapeake Land Cover (CVPR 2019) patch of NAIP {TILE}; approximate transform"
        )


def _nlcd_30m(nlcd: np.ndarray, tf_1m) -> tuple[np.ndarray, object]:
    h, w = nlcd.shape
    left, top = tf_1m.c, tf_1m.f
    b = transform_bounds(UTM, ALBERS, left, top - h, left + w, top)
    x0 = math.floor((b[0] - NLCD_EDGE) / NLCD_RES) * NLCD_RES + NLCD_EDGE
    y1 = math.ceil((b[3] - NLCD_EDGE) / NLCD_RES) * NLCD_RES + NLCD_EDGE
    cols = math.ceil((b[2] - x0) / NLCD_RES)
    rows = math.ceil((y1 - b[1]) / NLCD_RES)
    dst_tf = from_origin(x0, y1, NLCD_RES, NLCD_RES)
    out = np.zeros((rows, cols), np.uint8)
    reproject(
        nlcd,
        out,
        src_transform=tf_1m,
        src_crs=UTM,
        src_nodata=0,
        dst_transform=dst_tf,
        dst_crs=ALBERS,
        dst_nodata=0,
        resampling=Resampling.mode,
    )
    return out, dst_tf


def main() -> None:
    """Write the sample tiles."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    ulx, uly = _corner()
    files = sorted(args.source.glob(f"*{TILE}-*.npz"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    if not files:
        raise SystemExit(f"no patches found in {args.source}")
    index = []
    for f in files:
        i = int(f.stem.rsplit("-", 1)[1])
        d = np.load(f)
        tf = from_origin(ulx + int(d["x_offset"]), uly - int(d["y_offset"]), 1.0, 1.0)
        name = f"patch{i}.tif"
        _write(args.out / "naip" / name, d["naip"], UTM, tf, None, ["red", "green", "blue", "nir"])
        _write(args.out / "truth" / name, d["lc"][None], UTM, tf, 15, ["chesapeake_7class"])
        nl, nl_tf = _nlcd_30m(d["nlcd"], tf)
        _write(args.out / "nlcd" / name, nl[None], ALBERS, nl_tf, 0, ["nlcd_2011"])
        index.append(
            {"patch": i, "source": f.name, "x_offset": int(d["x_offset"]), "y_offset": int(d["y_offset"])}
        )
    (args.out / "index.json").write_text(
        json.dumps({"tile": TILE, "corner_utm17n": [ulx, uly], "patches": index}, indent=1) + "\n"
    )
    print(f"wrote {len(index)} patches under {args.out}")


if __name__ == "__main__":
    main()
