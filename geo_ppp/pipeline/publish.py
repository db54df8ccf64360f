"""Mosaic a region's tiles into its outputs: the map COG, its style, and the optional products.

Rows are blended strip by strip (:func:`~geo_ppp.pipeline.mosaic.blend_strip`) and streamed into
:class:`~geo_ppp.io.rasters.RasterWriter`, so memory stays bounded by a strip. When inference ran
on a resampled working grid, the working-grid map is mosaicked into the work dir first and then
warped onto the imagery's grid (nearest for codes, bilinear for probabilities).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from geo_ppp.core.atomic import write_json
from geo_ppp.geo.grid import Grid
from geo_ppp.io.rasters import RasterWriter, read_decimated, read_warped_rows, read_window
from geo_ppp.pipeline.job import RegionJob
from geo_ppp.pipeline.mosaic import blend_strip, iter_strips
from geo_ppp.pipeline.store import TileStore

__all__ = ["STRIP", "WEAK_COVERAGE_WARN", "publish", "weak_label_coverage"]

log = logging.getLogger(__name__)

#: rows blended at a time (a multiple of the COG block size)
STRIP = 512


def _argmax0(p: np.ndarray) -> np.ndarray:
    """``p.argmax(0)`` for (K, H, W), as K elementwise passes (numpy's strided reduction is 5x slower).

    Ties go to the lowest class, as with ``argmax``.
    """
    best = p[0].copy()
    index = np.zeros(p.shape[1:], np.int64)
    for k in range(1, p.shape[0]):
        better = p[k] > best
        index[better] = k
        np.maximum(best, p[k], out=best)
    return index


def _writers(job: RegionJob, grid: Grid, map_path: Path, prob_path: Path | None) -> tuple[RasterWriter, Any]:
    legend = job.legend
    tags = {"GEO_PPP_SEED": str(job.seed), "GEO_PPP_PRIOR": job.prior}
    writer = RasterWriter(map_path, grid, legend=legend, tags=tags)
    probs = None
    if prob_path is not None:
        probs = RasterWriter(
            prob_path,
            grid,
            count=legend.num_classes,
            descriptions=[f"P({n}) x 255" for n in legend.names],
            tags={**tags, "SCALE": "probability x 255"},
            overview_resampling="average",
        )
    return writer, probs


def _commit(*writers: RasterWriter | None) -> None:
    for w in writers:
        if w is not None:
            w.commit()


def _close(*writers: RasterWriter | None) -> None:
    for w in writers:
        if w is not None:
            w.close()


def _mosaic(job: RegionJob, map_path: Path, prob_path: Path | None) -> None:
    """Blend the tiles on the working grid into a map COG (and a probability COG)."""
    store = TileStore.open_existing(job.workdir)
    legend = job.legend
    work = job.image.work
    writer, probs_writer = _writers(job, work, map_path, prob_path)
    try:
        for y0, y1 in iter_strips(work.height, STRIP):
            if not job.tiles.tiles_touching(y0, y1):  # scattered files: strips between them are nodata
                writer.write(y0, np.full((y1 - y0, work.width), legend.nodata, np.uint8))
                if probs_writer is not None:
                    probs_writer.write(y0, np.zeros((legend.num_classes, y1 - y0, work.width), np.uint8))
                continue
            probs, valid = blend_strip(job.tiles, y0, y1, store.load, legend.num_classes)
            index = _argmax0(probs)
            index[~valid] = -1
            writer.write(y0, legend.to_codes(index))
            if probs_writer is not None:
                probs_writer.write(y0, np.round(probs * 255).astype(np.uint8))
        _commit(writer, probs_writer)
    finally:
        _close(writer, probs_writer)


def _warp_onto(
    job: RegionJob, work_map: Path, work_probs: Path | None, map_path: Path, prob_path: Path | None
) -> None:
    grid = job.image.grid
    writer, probs_writer = _writers(job, grid, map_path, prob_path)
    try:
        for y0, y1 in iter_strips(grid.height, STRIP):
            writer.write(y0, read_warped_rows(work_map, grid, y0, y1, "nearest")[0])
            if probs_writer is not None and work_probs is not None:
                probs_writer.write(y0, read_warped_rows(work_probs, grid, y0, y1, "bilinear"))
        _commit(writer, probs_writer)
    finally:
        _close(writer, probs_writer)


def publish(
    job: RegionJob, paths: dict[str, Path], resolved: dict[str, Any], timings: dict[str, float]
) -> None:
    """Write every output of a finished region (each file atomically; the config last)."""
    from geo_ppp.io.styles import write_category_names, write_qml

    t0 = time.perf_counter()
    prob_path = paths.get("probabilities")
    if job.image.resampled:
        folder = Path(job.workdir)
        work_map, work_probs = (
            folder / "work-map.tif",
            (folder / "work-probabilities.tif" if prob_path else None),
        )
        _mosaic(job, work_map, work_probs)
        _warp_onto(job, work_map, work_probs, paths["map"], prob_path)
    else:
        _mosaic(job, paths["map"], prob_path)
    write_qml(paths["qml"], job.legend)
    write_category_names(paths["map"], job.legend)
    timings["mosaic"] = time.perf_counter() - t0
    if "vector" in paths:
        from geo_ppp.io.polygons import write_polygons

        t0 = time.perf_counter()
        write_polygons(paths["vector"], paths["map"], job.legend)
        timings["vector"] = time.perf_counter() - t0
    if "quicklook" in paths:
        t0 = time.perf_counter()
        _quicklook(job, paths["map"], paths["quicklook"])
        timings["quicklook"] = time.perf_counter() - t0
    coverage = weak_label_coverage(job, paths["map"])
    resolved["weak_label_coverage"] = None if coverage is None else round(coverage, 4)
    if coverage is not None and coverage < WEAK_COVERAGE_WARN:
        log.warning(
            "only %.0f %% of the mapped area had weak labels; the rest was inferred from the imagery and the "
            "prior alone, on weaker ground: give weak labels that cover the whole image (recorded as "
            "weak_label_coverage in %s)", 100 * coverage, paths["config"].name,
        )  # fmt: skip
    write_json(paths["config"], resolved)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values() if p.exists()))


#: a map whose weak labels cover less than this share of its pixels gets a warning
WEAK_COVERAGE_WARN = 0.95


def weak_label_coverage(job: RegionJob, map_path: Path, max_size: int = 1024) -> float | None:
    """The share of the map's mapped pixels that had a weak label (on the map decimated to ``max_size``).

    None when the map holds no mapped pixel.
    """
    from geo_ppp.io.weak_labels import WeakReader

    codes, coarse = read_decimated(map_path, max_size)
    mapped = codes != job.legend.nodata
    if not mapped.any():
        return None
    with WeakReader(job.weak) as reader:
        weak = reader.read(coarse)
    return float((mapped & (weak != job.weak.nodata)).sum() / mapped.sum())


def _quicklook(job: RegionJob, map_path: Path, out: Path, max_size: int = 1024) -> None:
    """Image, weak labels and map side by side.

    The whole region, decimated; or, for scattered files, a contact sheet of every file's footprint
    at full resolution (the gaps between them would fill the picture).
    """
    from dataclasses import replace

    from geo_ppp.geo.grid import window_grid
    from geo_ppp.geo.legend import load_legend
    from geo_ppp.io.imagery import ImageReader
    from geo_ppp.io.quicklook import colorize, write_quicklook
    from geo_ppp.io.weak_labels import WeakReader

    grid = job.image.grid
    boxes = _sheet_boxes(job, grid, max_size)
    if boxes is None:
        codes, coarse = read_decimated(map_path, max_size)
        windows = [(coarse, codes)]
    else:
        windows = [
            (window_grid(grid, y0, x0, y1 - y0, x1 - x0), read_window(map_path, y0, x0, y1 - y0, x1 - x0))
            for y0, x0, y1, x1 in boxes
        ]
    nlcd = load_legend("nlcd")
    panels: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with WeakReader(job.weak) as weak_reader:
        for win, codes in windows:
            with ImageReader(replace(job.image, work=win)) as reader:
                data, valid = reader.read(0, 0, win.height, win.width)
            rgb = np.clip(data[:3].transpose(1, 2, 0), 0, 255).astype(np.uint8)
            rgb[~valid] = 255
            weak = weak_reader.read(win)
            weak_rgb = colorize(np.where(np.isin(weak, nlcd.codes), weak, nlcd.nodata).astype(np.uint8), nlcd)
            panels.append((rgb, weak_rgb, codes))
    rgb, weak_rgb, codes = _contact_sheet(panels, job.legend.nodata)
    write_quicklook(
        out,
        rgb,
        weak_rgb,
        codes,
        job.legend,
        title=f"{Path(map_path).name} ({job.legend.name})"
        + (f": the {len(panels)} image files" if len(panels) > 1 else ""),
        weak_title="weak labels (NLCD)",
    )


def _sheet_boxes(job: RegionJob, grid: Grid, max_size: int) -> list[tuple[int, int, int, int]] | None:
    """Pixel boxes of the files on the output grid, when they are scattered, few and small enough."""
    if job.tiles.footprints is None or len(job.image.footprints) > 16:
        return None
    inv = ~grid.transform
    boxes = []
    for left, bottom, right, top in job.image.footprints:
        x0, y0 = inv * (left, top)
        x1, y1 = inv * (right, bottom)
        y0, x0 = max(0, round(y0)), max(0, round(x0))
        y1, x1 = min(grid.height, round(y1)), min(grid.width, round(x1))
        if y1 - y0 > max_size or x1 - x0 > max_size or y0 >= y1 or x0 >= x1:
            return None
        boxes.append((y0, x0, y1, x1))
    return boxes


def _contact_sheet(
    panels: list[tuple[np.ndarray, np.ndarray, np.ndarray]], nodata: int, gap: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lay out (image, weak, codes) triples on a grid of up to 4 columns, white/nodata between."""
    if len(panels) == 1:
        return panels[0]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    h = max(p[0].shape[0] for p in panels)
    w = max(p[0].shape[1] for p in panels)
    height, width = rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap
    rgb = np.full((height, width, 3), 255, np.uint8)
    weak = np.full((height, width, 3), 255, np.uint8)
    codes = np.full((height, width), nodata, np.uint8)
    for i, (a, b, c) in enumerate(panels):
        y, x = (i // cols) * (h + gap), (i % cols) * (w + gap)
        rgb[y : y + a.shape[0], x : x + a.shape[1]] = a
        weak[y : y + b.shape[0], x : x + b.shape[1]] = b
        codes[y : y + c.shape[0], x : x + c.shape[1]] = c
    return rgb, weak, codes
