"""Build the shipped co-occurrence matrices in geo_ppp/data/cooccurrence from real data.

Run from the repository root:  python pipelines/derive_cooccurrence.py [--source DIR] [--tiles DIR]
    [--other-tile PREFIX] [--only-site wv|md] [--out DIR]

1. ``enviroatlas-{pa,nc,austin_tx,az}.json``: the EnviroAtlas/NLCD co-occurrence matrices of Rolf et
   al. 2022 (``--source``, see /work/shared/data/PROVENANCE.md), (11, 17) float64, column-normalised,
   rows EnviroAtlas codes, columns NLCD codes. Rows are summed into the 5 classes of the
   ``enviroatlas`` legend through its ``remap`` (row 0, unclassified, is dropped); NLCD column 0
   (nodata) and every column left all-zero (NLCD classes that only ever met unclassified pixels)
   are dropped; columns are renormalised.
   ``enviroatlas.json``: the mean of the four cities' matrices over the union of their columns; a
   column is averaged over the cities that have it.
2. ``chesapeake.json``: counted over two real labelled NAIP tiles, each weighing the same (the
   ``sites`` of :func:`~geo_ppp.landcover.weak.estimate_cooccurrence`): the 8 sample tiles
   (``--tiles``, 1 m truth of m_3708020_sw_17_1, West Virginia) and the whole quarter-quad
   m_3907833_nw_17_1 near Cumberland MD/WV point-sampled at ~25 m (``--other-tile``, copied into
   pipelines/data by pipelines/data/build.py). Chesapeake 7-class truth vs the 30 m NLCD reprojected
   onto the truth grid, through the same function as ``geo-ppp cooccurrence``, with the EnviroAtlas
   average (its 5 classes folded onto the Chesapeake 4: water -> water,
   impervious and barren -> built, trees -> tree canopy, grass -> low vegetation) blended in as
   ``--prior-weight`` pseudo-pixels per NLCD class. The sample tiles hold only six NLCD classes (no
   water, no developed 22-24): without the prior a map of any other place would stop on "unknown
   codes", and NLCD 22-24 would never predict built.
   Why two tiles: a matrix counted on one tile is that tile's, and a user's region is another one.
   Counted on the West Virginia tile alone, NLCD-argmax scores 85.8 % on it but 82.0 % on the
   Cumberland tile; the two-tile matrix scores 84.5 % and 84.1 %.
   ``--only-site wv`` or ``md`` writes the matrix of one tile (+ the same EnviroAtlas prior) instead;
   benchmarks/landcover_accuracy.py uses the ``md`` one to score the sample tiles with a matrix that
   never saw them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from geo_ppp.geo.legend import load_legend
from geo_ppp.landcover.weak import Cooccurrence, load_cooccurrence
from geo_ppp.pipeline.evaluate import estimate_cooccurrence_from_files

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "enviroatlas-cooccurrence"
DEFAULT_TILES = ROOT / "sample_tiles"
DEFAULT_OTHER_TILE = ROOT / "pipelines" / "data" / "m_3907833_nw_17_1"
DEFAULT_OUT = ROOT / "geo_ppp" / "data" / "cooccurrence"

ENVIROATLAS_ROWS = (0, 10, 20, 30, 40, 52, 70, 80, 82, 91, 92)
NLCD_COLUMNS = (0, 11, 12, 21, 22, 23, 24, 31, 41, 42, 43, 52, 71, 81, 82, 90, 95)
CITIES = {
    "pa": ("avg_nlcd_pa_whole_city_label_cooccurrences.npy", "Pittsburgh, PA"),
    "nc": ("avg_nlcd_nc_whole_city_label_cooccurrences.npy", "Durham, NC"),
    "austin_tx": (
        "avg_nlcd_austin_tx_whole_city_no_ag_label_cooccurrences.npy",
        "Austin, TX (agricultural tiles excluded)",
    ),
    "az": (
        "avg_nlcd_az_whole_city_no_ag_label_cooccurrences.npy",
        "Phoenix, AZ (agricultural tiles excluded)",
    ),
}
ORIGIN = (
    "Rolf et al. 2022, 'Resolving label uncertainty with implicit posterior models', github "
    "estherrolf/implicit-posterior qr_for_landcover/compute_priors/cooccurrence_matrices/enviroatlas "
    "(commit fcb81f6c2d78618dc9dfb79516c963c04dcfc0c8)"
)


def collapse_enviroatlas(
    raw: np.ndarray, legend_name: str = "enviroatlas"
) -> tuple[tuple[int, ...], np.ndarray]:
    """(11, 17) EnviroAtlas x NLCD matrix -> (kept NLCD codes, (5, n) matrix) for the legend.

    Rows are summed into legend classes through ``legend.to_index`` (its remap); rows that map to
    nodata (unclassified) are dropped, then NLCD 0 and all-zero columns.
    """
    legend = load_legend(legend_name)
    if raw.shape != (len(ENVIROATLAS_ROWS), len(NLCD_COLUMNS)):
        raise SystemExit(f"expected a {(len(ENVIROATLAS_ROWS), len(NLCD_COLUMNS))} matrix, got {raw.shape}")
    index = legend.to_index(np.array(ENVIROATLAS_ROWS))
    out = np.zeros((legend.num_classes, raw.shape[1]))
    for row, k in enumerate(index):
        if k >= 0:
            out[k] += raw[row]
    keep = [j for j, code in enumerate(NLCD_COLUMNS) if code != 0 and out[:, j].sum() > 0]
    return tuple(NLCD_COLUMNS[j] for j in keep), out[:, keep]


def enviroatlas_matrices(source: Path, out: Path) -> list[Path]:
    """Write the four city matrices and their average; returns the files written."""
    legend = load_legend("enviroatlas")
    written = []
    cities: dict[str, Cooccurrence] = {}
    for city, (filename, place) in CITIES.items():
        codes, matrix = collapse_enviroatlas(np.load(source / filename))
        dropped = sorted(set(NLCD_COLUMNS) - set(codes))
        co = Cooccurrence(
            legend=legend.name,
            source_codes=codes,
            target_codes=legend.codes,
            matrix=matrix,
            description=(
                f"P(EnviroAtlas 5-class | NLCD) for {place}, from {ORIGIN}, file {filename}. EnviroAtlas "
                "rows summed into the enviroatlas legend through its remap (row 0 'unclassified' "
                f"dropped); NLCD columns {dropped} dropped (nodata, or only unclassified pixels); columns "
                "renormalised. Built by pipelines/derive_cooccurrence.py."
            ),
        )
        cities[city] = co
        path = out / f"enviroatlas-{city}.json"
        co.save(path)
        written.append(path)
    union = sorted({c for co in cities.values() for c in co.source_codes})
    columns, missing = [], {}
    for code in union:
        have = [
            co.matrix[:, co.source_codes.index(code)] for co in cities.values() if code in co.source_codes
        ]
        columns.append(np.mean(have, axis=0))
        lacking = [city for city, co in cities.items() if code not in co.source_codes]
        if lacking:
            missing[code] = lacking
    note = "; ".join(f"NLCD {c} averaged without {', '.join(v)}" for c, v in missing.items())
    average = Cooccurrence(
        legend=legend.name,
        source_codes=tuple(union),
        target_codes=legend.codes,
        matrix=np.stack(columns, axis=1),
        description=(
            "P(EnviroAtlas 5-class | NLCD), the unweighted mean of the four city matrices enviroatlas-pa "
            "(Pittsburgh), -nc (Durham), -austin_tx (Austin) and -az (Phoenix), each derived from "
            f"{ORIGIN} as described in its own file. Columns are the union of the cities' NLCD codes; each "
            "column is the mean over the cities that have it"
            + (f" ({note})" if note else "")
            + ". Built by pipelines/derive_cooccurrence.py."
        ),
    )
    path = out / "enviroatlas.json"
    average.save(path)
    written.append(path)
    return written


#: EnviroAtlas 5-class code -> Chesapeake 4-class code (barren counts as built in the chesapeake legend)
ENVIROATLAS_TO_CHESAPEAKE = {1: 1, 2: 4, 3: 4, 4: 2, 5: 3}


#: NLCD classes the EnviroAtlas cities never hold (Alaska-only classes, ice) -> the nearest class they do
NLCD_STAND_INS = {12: 31, 51: 52, 72: 71, 73: 71, 74: 71}


def enviroatlas_as_chesapeake(average: Cooccurrence) -> Cooccurrence:
    """Fold the EnviroAtlas matrix's target classes onto the Chesapeake legend; add stand-in columns."""
    legend = load_legend("chesapeake")
    matrix = np.zeros((legend.num_classes, len(average.source_codes)))
    for i, code in enumerate(average.target_codes):
        matrix[legend.codes.index(ENVIROATLAS_TO_CHESAPEAKE[code])] += average.matrix[i]
    codes = list(average.source_codes)
    columns = [matrix[:, j] for j in range(matrix.shape[1])]
    for code, like in NLCD_STAND_INS.items():
        if code not in codes:
            codes.append(code)
            columns.append(matrix[:, average.source_codes.index(like)])
    order = np.argsort(codes)
    return Cooccurrence(
        "chesapeake",
        tuple(int(codes[i]) for i in order),
        legend.codes,
        np.stack([columns[i] for i in order], 1),
        "EnviroAtlas average, folded",
    )


SITES = {
    "wv": "the 8 sample tiles (sample_tiles/truth/patch*.tif vs sample_tiles/nlcd/patch*.tif: 1 m Chesapeake "
    "Land Cover of NAIP tile m_3708020_sw_17_1, West Virginia, 2014)",
    "md": "NAIP quarter-quad m_3907833_nw_17_1 near Cumberland MD/WV "
    "(pipelines/data/m_3907833_nw_17_1_lc.tif vs _nlcd.tif: the CVPR-2019 Chesapeake Land Cover labels "
    "point-sampled at ~25 m, 67,600 pixels)",
}


def chesapeake_matrix(
    tiles: Path,
    other_tile: Path,
    out: Path,
    smoothing: float = 1.0,
    prior: Cooccurrence | None = None,
    prior_weight: float = 0.0,
    only_site: str | None = None,
) -> Path:
    """Count the Chesapeake matrix over the two labelled tiles (each weighing the same) + the prior."""
    truth = sorted((tiles / "truth").glob("patch*.tif"))
    if not truth:
        raise SystemExit(f"no truth rasters under {tiles / 'truth'}; build them with sample_tiles/build.py")
    other = (Path(f"{other_tile}_lc.tif"), Path(f"{other_tile}_nlcd.tif"))
    if not all(p.exists() for p in other):
        raise SystemExit(f"{other[0]} or {other[1]} is missing; copy them with pipelines/data/build.py")
    pairs = {"wv": (truth, [tiles / "nlcd" / p.name for p in truth]), "md": ([other[0]], [other[1]])}
    chosen = [only_site] if only_site else list(pairs)
    truth_paths = [t for site in chosen for t in pairs[site][0]]
    weak_paths = [w for site in chosen for w in pairs[site][1]]
    sites = [site for site in chosen for _ in pairs[site][0]]
    counted = " and ".join(SITES[site] for site in chosen)
    co = estimate_cooccurrence_from_files(
        truth_paths,
        weak_paths,
        "chesapeake",
        smoothing=smoothing,
        description=(
            f"P(Chesapeake 4-class | NLCD 2011) counted over {counted}"
            + (", each tile weighing the same whatever its pixel count" if len(chosen) > 1 else "")
            + "; 7-class codes remapped by the chesapeake legend, the 30 m NLCD reprojected onto the truth "
            f"grid (nearest neighbour), pseudo-count {smoothing} per cell; blended with the EnviroAtlas "
            "average matrix (enviroatlas.json, the four cities of Rolf et al. 2022) folded onto these 4 "
            "classes (water, impervious and barren -> built, trees -> tree canopy, grass -> low vegetation), "
            f"weighted as {prior_weight:g} pixels per NLCD class, so that NLCD classes the tiles lack are "
            "covered; the classes no EnviroAtlas city holds take a stand-in's column "
            f"(NLCD {NLCD_STAND_INS}). "
            "Estimate a matrix for your own area with `geo-ppp cooccurrence`. Built by "
            "pipelines/derive_cooccurrence.py"
            + (f" --only-site {only_site}" if only_site else "")
            + "."
        ),
        prior=prior,
        prior_weight=prior_weight,
        sites=sites,
    )
    path = out / (f"chesapeake-{only_site}.json" if only_site else "chesapeake.json")
    co.save(path)
    return path


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, default=DEFAULT_SOURCE, help="folder of the EnviroAtlas .npy files"
    )
    parser.add_argument(
        "--tiles", type=Path, default=DEFAULT_TILES, help="sample_tiles folder (truth/, nlcd/)"
    )
    parser.add_argument(
        "--other-tile", type=Path, default=DEFAULT_OTHER_TILE,
        help="path prefix of the second tile's _lc.tif and _nlcd.tif",
    )
    parser.add_argument(
        "--only-site", choices=sorted(SITES), default=None,
        help="write chesapeake-SITE.json from one tile only (for the transfer benchmark)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--smoothing", type=float, default=1.0, help="pseudo-count of the Chesapeake matrix")
    parser.add_argument(
        "--prior-weight",
        type=float,
        default=900.0,
        help="pixels' worth of the folded EnviroAtlas matrix per NLCD class (900 = one 30 m cell)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = enviroatlas_matrices(args.source, args.out)
    prior = enviroatlas_as_chesapeake(load_cooccurrence(args.out / "enviroatlas.json"))
    written.append(
        chesapeake_matrix(
            args.tiles, args.other_tile, args.out, args.smoothing, prior, args.prior_weight, args.only_site
        )
    )
    for path in written:
        co = load_cooccurrence(path)
        co.check_legend(load_legend(co.legend))
        print(f"wrote {path} ({len(co.target_codes)} classes x NLCD {list(co.source_codes)})")


if __name__ == "__main__":
    main()
