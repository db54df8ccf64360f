"""File-level land-cover utilities: scoring a map against the truth, estimating a co-occurrence matrix.

These are the functions behind ``geo-ppp evaluate`` and ``geo-ppp cooccurrence``. They open files
through :mod:`geo_ppp.io` only and hand arrays to the pure-array code in :mod:`~geo_ppp.landcover.metrics`
and :mod:`~geo_ppp.landcover.weak`.

Raster nodata is honoured everywhere: a truth pixel equal to the raster's own nodata value, or to
a code the legend remaps to nodata (for example 15 in the Chesapeake 7-class product), is never
scored and never counted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Sequence

import numpy as np

from geo_ppp.errors import ConfigError, InputError
from geo_ppp.geo.grid import Grid
from geo_ppp.geo.legend import Legend, load_legend
from geo_ppp.io import read_class_raster, read_labels_on_grid, read_map_legend
from geo_ppp.landcover.metrics import Scores, score
from geo_ppp.landcover.weak import Cooccurrence, estimate_cooccurrence

__all__ = ["estimate_cooccurrence_from_files", "evaluate_files", "format_scores", "map_legend", "same_grid"]

PathLike = str | os.PathLike[str]


def same_grid(a: Grid, b: Grid) -> bool:
    """True when two grids share CRS, size and (to a millionth of a pixel) transform."""
    if a.crs != b.crs or (a.width, a.height) != (b.width, b.height):
        return False
    tol = 1e-6 * max(abs(a.transform.a), abs(a.transform.e), 1e-12)
    pairs = zip(a.transform, b.transform, strict=False)
    return all(math.isclose(x, y, rel_tol=0.0, abs_tol=tol) for x, y in pairs)


def _mask_nodata(codes: np.ndarray, nodata: int | None, legend: Legend) -> np.ndarray:
    """Replace the raster's own nodata value with the legend's nodata code."""
    if nodata is None or nodata == legend.nodata:
        return codes
    return np.where(codes == nodata, legend.nodata, codes)


def map_legend(pred: PathLike, legend: str | PathLike | Legend | None = None) -> Legend:
    """The legend to score ``pred`` with: the one the map records, checked against ``legend`` if given.

    A geo_ppp map records its legend (a ``LEGEND`` tag and band 1's ``CLASS_NAMES``). A map that records
    none is read with ``legend`` (default ``chesapeake``).

    Raises:
        ConfigError: ``legend`` contradicts the map's own legend.
    """
    name, class_names = read_map_legend(pred)
    if name is None and class_names is None:
        return load_legend(legend if legend is not None else "chesapeake")
    if legend is None:
        try:
            return load_legend(name or "chesapeake")
        except ConfigError:
            raise ConfigError(
                f"{pred} was made with legend {name!r}, not a built-in one; pass its JSON with --legend"
            ) from None
    given = load_legend(legend)
    mine = ";".join(f"{c}={n}" for c, n in zip(given.codes, given.names, strict=True))
    if (name is not None and name != given.name) or (class_names is not None and class_names != mine):
        raise ConfigError(
            f"{pred} records legend {name!r} ({class_names}), but --legend is {given.name!r} ({mine}); "
            f"scoring it with another legend would mislabel its classes: drop --legend, or pass the map's"
        )
    return given


def evaluate_files(pred: PathLike, truth: PathLike, legend: str | PathLike | Legend | None = None) -> Scores:
    """Score a predicted class map against a truth raster.

    The legend is the one the map records (``legend``, if given, must agree with it; see
    :func:`map_legend`). The truth is read on the prediction's grid: directly when the grids agree,
    otherwise reprojected onto it (nearest neighbour). Both are mapped to channel indices through
    the legend (so truth codes in a source coding, e.g. Chesapeake 5/6, are remapped); pixels that
    are nodata in either are ignored.

    Raises:
        InputError: an unreadable raster, rasters that do not overlap, or no pixel left to score.
        ConfigError: codes the legend does not know (the message names them).
    """
    legend = map_legend(pred, legend)
    pred_codes, pred_nodata, grid = read_class_raster(pred, what="prediction")
    truth_codes, truth_nodata, truth_grid = read_class_raster(truth, what="truth")
    if not same_grid(grid, truth_grid):
        truth_codes, truth_nodata = read_labels_on_grid(truth, grid, what="truth")
    indices = []
    for what, path, codes, nodata in (("prediction", pred, pred_codes, pred_nodata),
                                      ("truth", truth, truth_codes, truth_nodata)):
        try:
            indices.append(legend.to_index(_mask_nodata(codes, nodata, legend)))
        except ConfigError as err:
            raise ConfigError(f"{what} {path}: {err}") from None
    pred_index, true_index = indices
    scores = score(pred_index, true_index, legend.num_classes)
    if scores.pixels == 0:
        raise InputError(
            f"no pixel of prediction {pred} has both a predicted class and a truth class in {truth}; "
            "check that they cover the same area and that nodata is set right"
        )
    return scores


def format_scores(scores: Scores, legend: Legend) -> str:
    """A readable report: accuracy, mIoU, per-class IoU and the confusion matrix."""
    names = list(legend.names)
    width = max(12, *(len(n) for n in names))
    lines = [
        f"pixels scored: {scores.pixels}",
        f"accuracy:      {scores.accuracy:.4f}",
        f"mIoU:          {scores.miou:.4f}  (over the classes present in the truth)",
        "",
        "per-class IoU:",
    ]
    present = scores.confusion.sum(1) > 0
    for name, code, iou, here in zip(names, legend.codes, scores.iou, present, strict=True):
        value = "   n/a" if math.isnan(iou) else f"{iou:.4f}"
        note = "" if here else "  (absent from truth)"
        lines.append(f"  {code:>3} {name:<{width}} {value}{note}")
    counts = scores.confusion
    cell = max(8, len(str(int(counts.max()) if counts.size else 0)) + 1)
    lines += ["", "confusion matrix (rows: truth, columns: prediction):"]
    lines.append(" " * (width + 7) + "".join(f"{c:>{cell}}" for c in legend.codes))
    for name, code, row in zip(names, legend.codes, counts, strict=True):
        lines.append(f"  {code:>3} {name:<{width}} " + "".join(f"{int(v):>{cell}}" for v in row))
    return "\n".join(lines)


def estimate_cooccurrence_from_files(
    truth_paths: Sequence[PathLike],
    weak_paths: Sequence[PathLike],
    legend: str | PathLike | Legend,
    smoothing: float = 1.0,
    description: str | None = None,
    prior: Cooccurrence | None = None,
    prior_weight: float = 0.0,
    sites: Sequence[Hashable] | None = None,
) -> Cooccurrence:
    """Estimate ``P(target class | weak code)`` from pairs of (truth, weak-label) rasters.

    The i-th weak raster is reprojected (nearest neighbour) onto the i-th truth raster's grid. Truth
    pixels that are nodata (the raster's own nodata or a code the legend remaps to nodata) and weak
    pixels that are the weak raster's nodata are skipped.

    Args:
        truth_paths: high-resolution label rasters, in the legend's codes or a coding its remap covers.
        weak_paths: weak label rasters (e.g. NLCD), one per truth raster, in the same order.
        legend: target legend (name, JSON path or :class:`Legend`).
        smoothing: pseudo-count added to every cell of the count matrix.
        description: recorded in the matrix (default: says how and from which files it was made).
        prior: a matrix for the same legend blended in as ``prior_weight`` pseudo-pixels per column
            (see :func:`~geo_ppp.landcover.weak.estimate_cooccurrence`).
        prior_weight: pixels' worth of ``prior`` per column.
        sites: one label per pair; each site weighs the same whatever its pixel count (see
            :func:`~geo_ppp.landcover.weak.estimate_cooccurrence`).

    Raises:
        ConfigError: different numbers of truth and weak files, no pair, or unknown truth codes.
        InputError: an unreadable raster or a weak raster that misses its truth raster.
    """
    legend = load_legend(legend)
    truth_paths, weak_paths = list(truth_paths), list(weak_paths)
    if not truth_paths:
        raise ConfigError("give at least one truth raster and its weak-label raster")
    if len(truth_paths) != len(weak_paths):
        raise ConfigError(
            f"{len(truth_paths)} truth raster(s) but {len(weak_paths)} weak-label raster(s); they are paired "
            "in order, so give as many of each"
        )
    if not (smoothing >= 0 and math.isfinite(smoothing)):
        raise ConfigError(f"smoothing must be a finite number >= 0, got {smoothing}")
    pairs = []
    weak_nodata: int | None = None
    for truth_path, weak_path in zip(truth_paths, weak_paths, strict=True):
        codes, nodata, grid = read_class_raster(truth_path, what="truth")
        weak, w_nodata = read_labels_on_grid(weak_path, grid, what="weak labels")
        if weak_nodata is not None and w_nodata != weak_nodata:
            # estimate_cooccurrence takes one source nodata: bring every weak raster onto the first's
            weak = np.where(weak == w_nodata, weak_nodata, weak)
        weak_nodata = w_nodata if weak_nodata is None else weak_nodata
        pairs.append((_mask_nodata(codes, nodata, legend), weak))
    if description is None:
        description = (
            f"P({legend.name} class | weak-label code) counted over {len(pairs)} pair(s) of truth and "
            "weak-label rasters (weak labels reprojected onto the truth grid, nearest neighbour), smoothing "
            f"{smoothing}: "
            + ", ".join(f"{os.path.basename(str(t))} ~ {os.path.basename(str(w))}"
                        for t, w in zip(truth_paths, weak_paths, strict=True))
        )
    return estimate_cooccurrence(pairs, legend, source_nodata=weak_nodata, smoothing=smoothing,
                                 description=description, prior=prior, prior_weight=prior_weight,
                                 sites=sites)
