"""Segment whole regions: tile, infer in batches, keep tiles in a work dir, mosaic, publish.

:func:`segment` is the Python API behind ``geo-ppp segment``. It checks every input and output
before any work, then:

1. defines the region (one or many image files, cropped to the AOI) and the working grid at the
   prior's resolution, and covers it with overlapping tiles (:class:`~geo_ppp.pipeline.tiling.TileGrid`);
2. runs the tiles in fixed batches (the same batches whatever was done before, so a resumed run
   gives bit-identical tiles), each with a seed derived from its position, skipping tiles without
   a valid pixel, and keeps each tile's probabilities in the work dir;
3. blends the tiles strip by strip with feathered weights into a Cloud Optimized GeoTIFF of uint8
   legend codes (colour table, class names, ``.qml`` style, GDAL category names), optionally a
   probability COG, polygons and a quicklook, plus the resolved configuration as JSON.

The tile work (:func:`run_batch`) takes only small picklable values (:class:`RegionJob`, tiles),
so the Dask scheduler can run it anywhere.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geo_ppp.core.weights import Prior, load_prior
from geo_ppp.errors import ConfigError, InputError, OutputExistsError
from geo_ppp.geo.grid import window_grid
from geo_ppp.geo.legend import Legend, load_legend
from geo_ppp.io.imagery import ImageReader, ImageSpec, open_region, scan_image_files
from geo_ppp.io.rasters import gdal_env
from geo_ppp.io.weak_labels import WeakReader, WeakSpec, open_weak_labels
from geo_ppp.landcover.infer import InferConfig, default_infer_config, infer_windows
from geo_ppp.landcover.prior import DEFAULT_PRIORS, check_prior_legend
from geo_ppp.landcover.weak import Cooccurrence, load_cooccurrence
from geo_ppp.outputs import OutputError, RunLock, check_distinct, check_outputs
from geo_ppp.pipeline.store import TileStore
from geo_ppp.pipeline.tiling import Tile, TileGrid, tile_seed

__all__ = [
    "DEFAULT_PRIORS",
    "PreparedRegion",
    "Progress",
    "RegionJob",
    "RegionResult",
    "TileInferrer",
    "finish_region",
    "plan",
    "prepare_region",
    "run_batch",
    "segment",
]

log = logging.getLogger(__name__)

#: image pixels per prior cell the shipped land-cover priors were tuned with (4 m cells, 1 m pixels)
PIXELS_PER_CELL = 4
#: a resampling factor beyond this (either way) gets a warning
LARGE_FACTOR = 2.0

#: ``progress(done, total, tile, status)``, status one of ran / skipped / resumed
Progress = Callable[[int, int, Tile, str], None]


@dataclass(frozen=True)
class RegionJob:
    """Everything a worker needs to run tiles of one region: small, frozen, picklable.

    Attributes:
        image, weak: the imagery and weak-label sources.
        legend: the target legend.
        prior: prior name or folder (loaded once per process).
        cooccurrence: matrix name or JSON path.
        config: inference settings.
        tiles: the tile grid over ``image.work``.
        seed: the run's seed (each tile gets :func:`tile_seed` of it and its position).
        batch_size: tiles per batch.
        workdir: where tile results go.
        device: ``cpu`` or ``cuda``.
        aoi_wkt: the AOI polygon in the image CRS (WKT), or None.
    """

    image: ImageSpec
    weak: WeakSpec
    legend: Legend
    prior: str
    cooccurrence: str
    config: InferConfig
    tiles: TileGrid
    seed: int
    batch_size: int
    workdir: str
    device: str = "cpu"
    aoi_wkt: str | None = None

    def batches(self) -> list[list[Tile]]:
        """The fixed batches: row-major tiles in groups of ``batch_size``."""
        tiles = self.tiles.tiles
        return [tiles[i : i + self.batch_size] for i in range(0, len(tiles), self.batch_size)]

    def fingerprint(self) -> dict[str, Any]:
        """What determines tile results (the work dir refuses tiles of another fingerprint)."""
        return {
            "image": self.image.to_dict(),
            "weak": self.weak.to_dict(),
            "legend": self.legend.to_dict(),
            "prior": self.prior,
            "cooccurrence": self.cooccurrence,
            "infer": self.config.to_dict(),
            "tiles": self.tiles.to_dict(),
            "seed": self.seed,
            "batch_size": self.batch_size,
            "device": self.device,
            "aoi": self.aoi_wkt,
        }


@dataclass
class RegionResult:
    """What :func:`segment` returns.

    Attributes:
        out: the written map.
        outputs: every written file by kind (map, config, qml, probabilities, vector, quicklook).
        grid: the output grid.
        config: the resolved configuration (as saved beside the map).
        stats: tile counts (total, ran, skipped, resumed) and seconds per stage.
    """

    out: Path
    outputs: dict[str, Path]
    grid: Any
    config: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)


# -- the per-process inference ------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _cached_prior(name: str, device: str) -> Prior:
    return load_prior(name).to(device)


@functools.lru_cache(maxsize=8)
def _cached_cooccurrence(name: str) -> Cooccurrence:
    return load_cooccurrence(name)


class TileInferrer:
    """Turns a batch of tiles into class probabilities with the land-cover method.

    The prior is loaded once per process and kept (a Dask worker loads it on its first task).
    """

    def __init__(self, job: RegionJob) -> None:
        self.job = job
        self.prior = _cached_prior(job.prior, job.device)
        self.cooc = _cached_cooccurrence(job.cooccurrence)

    def __call__(
        self,
        image: np.ndarray,
        valid: np.ndarray,
        weak: np.ndarray,
        seeds: list[int],
        timings: dict[str, float],
    ) -> np.ndarray:
        """(B, C, T, T) image, (B, T, T) valid, (B, T, T) weak codes -> (B, K, T, T) float32."""
        job = self.job
        dev = torch.device(job.device)
        t0 = time.perf_counter()
        result = infer_windows(
            torch.from_numpy(image),
            torch.from_numpy(weak),
            torch.from_numpy(valid)[:, None].float(),
            self.cooc,
            self.prior,
            job.config,
            seeds=seeds,
            resolution_m=job.image.work_resolution_m,
            weak_nodata=job.weak.nodata,
            factor=_factor(self.prior, job.image.work_resolution_m),
            device=dev,
            timings=timings,
        )
        probs = result.probabilities.float().cpu().numpy()
        timings["infer_total"] = timings.get("infer_total", 0.0) + time.perf_counter() - t0
        return probs


def _factor(prior: Prior, work_resolution_m: float) -> int:
    return max(1, round(float(prior.meta.get("resolution_m", 4.0)) / work_resolution_m))


def _aoi_mask(job: RegionJob, tile: Tile) -> np.ndarray | None:
    if job.aoi_wkt is None:
        return None
    from geo_ppp.io.vectors import aoi_mask

    grid = window_grid(job.image.work, tile.y, tile.x, job.tiles.size, job.tiles.size)
    return aoi_mask(_cached_wkt(job.aoi_wkt), grid)


@functools.lru_cache(maxsize=4)
def _cached_wkt(text: str) -> Any:
    """The AOI geometry, parsed once per process (not once per tile)."""
    from shapely import wkt

    return wkt.loads(text)


@functools.lru_cache(maxsize=4)
def _cached_readers(image: ImageSpec, weak: WeakSpec, stamps: tuple) -> tuple[ImageReader, WeakReader]:
    return ImageReader(image), WeakReader(weak)


def _stamps(paths: Sequence[str]) -> tuple:
    """(size, mtime) of each file: a file replaced since it was opened gets new readers."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def _process_readers(job: RegionJob) -> tuple[ImageReader, WeakReader]:
    """Readers kept open in this process across batches of a region (a Dask worker runs many).

    The files stay open for the life of the process (at most 4 regions' worth): a batch then costs
    its reads, not opening every file and building its warped VRTs again.
    """
    return _cached_readers(job.image, job.weak, _stamps([*job.image.paths, *job.weak.paths]))


def run_batch(
    job: RegionJob,
    batch: Sequence[Tile],
    *,
    infer: Callable[..., np.ndarray] | None = None,
    readers: tuple[ImageReader, WeakReader] | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, str]:
    """Run one batch of tiles and store their results in the job's work dir.

    Tiles already in the work dir are not recomputed; if some tiles of the batch are missing,
    the whole batch is run again (so each tile sees the same batch as in an uninterrupted run) and
    only the missing ones are stored.

    Args:
        job: the region job.
        batch: tiles of one batch of :meth:`RegionJob.batches`.
        infer: replaces the land-cover inference (same signature as :class:`TileInferrer`).
        readers: open readers to use (default: this process's cached readers of the region).
        timings: seconds per stage are added to it.

    Returns:
        tile key -> ``ran``, ``skipped`` or ``resumed``.
    """
    with gdal_env():
        return _run_batch(job, batch, infer, readers, {} if timings is None else timings)


def _run_batch(
    job: RegionJob,
    batch: Sequence[Tile],
    infer: Callable[..., np.ndarray] | None,
    readers: tuple[ImageReader, WeakReader] | None,
    timings: dict[str, float],
) -> dict[str, str]:
    store = TileStore.open_existing(job.workdir)
    status = {t.key: store.status(t) for t in batch}
    todo = [t for t in batch if status[t.key] is None]
    if not todo:
        return {t.key: "resumed" for t in batch}
    image_reader, weak_reader = readers if readers is not None else _process_readers(job)
    size = job.tiles.size
    t0 = time.perf_counter()
    images, valids, weaks, tiles = [], [], [], []
    report: dict[str, str] = {}
    for tile in batch:
        data, valid = image_reader.read(tile.y, tile.x, size, size)
        mask = _aoi_mask(job, tile)
        if mask is not None:
            valid &= mask
        if not valid.any():
            if status[tile.key] is None:
                store.mark_skipped(tile)
            report[tile.key] = "skipped" if status[tile.key] is None else "resumed"
            continue
        weak = weak_reader.read(window_grid(job.image.work, tile.y, tile.x, size, size))
        images.append(data)
        valids.append(valid)
        weaks.append(weak)
        tiles.append(tile)
    timings["read"] = timings.get("read", 0.0) + time.perf_counter() - t0
    if tiles:
        infer = infer or TileInferrer(job)
        seeds = [tile_seed(job.seed, t.y, t.x) for t in tiles]
        probs = infer(np.stack(images), np.stack(valids), np.stack(weaks), seeds, timings)
        t0 = time.perf_counter()
        for tile, p, v in zip(tiles, probs, valids, strict=True):
            if status[tile.key] is None:
                store.save(tile, p * v)
                report[tile.key] = "ran"
            else:
                report[tile.key] = "resumed"
        timings["write_tiles"] = timings.get("write_tiles", 0.0) + time.perf_counter() - t0
    return report


# -- planning -----------------------------------------------------------------------------------


def _resolve_prior(legend: Legend, prior: str | os.PathLike[str] | None) -> str:
    if prior is not None:
        # a folder is made absolute: the job travels to Dask workers that may run elsewhere
        return str(Path(prior).resolve()) if Path(prior).exists() else str(prior)
    if legend.name not in DEFAULT_PRIORS:
        raise InputError(
            f"no shipped prior for legend {legend.name!r}; train one with "
            "`geo-ppp train-prior --dataset landcover` "
            "and pass --prior"
        )
    return DEFAULT_PRIORS[legend.name]


def _sparse_footprints(spec: ImageSpec) -> tuple[tuple[int, int, int, int], ...] | None:
    """The files' pixel boxes when they cover less than half the region (scattered files), else None.

    Scattered files get one tile grid each (no tile wasted on the gaps, each file tiled as if
    alone); contiguous mosaics keep one regular grid (no doubled tiles where files meet).
    """
    boxes = spec.footprint_boxes()
    if len(boxes) < 2:
        return None
    area = sum(max(0, y1 - y0) * max(0, x1 - x0) for y0, x0, y1, x1 in boxes)
    if area >= 0.5 * spec.work.height * spec.work.width:
        return None
    return tuple(boxes)


def _check_tile_size(prior: Prior, tile_size: int, factor: int) -> None:
    cell = factor * int(getattr(prior.denoiser, "size_multiple", 1))
    if tile_size < cell or tile_size % cell:
        good = max(cell, round(tile_size / cell) * cell)
        raise InputError(
            f"tile size {tile_size} does not fit the prior: it must be a multiple of {cell} pixels "
            f"({factor} pixels "
            f"per {prior.meta.get('resolution_m', '?')} m cell x the U-Net's multiple of "
            f"{getattr(prior.denoiser, 'size_multiple', 1)}); use e.g. --tile-size {good}"
        )


def plan(
    image: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    weak_labels: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    legend: str | os.PathLike[str] | Legend = "chesapeake",
    *,
    workdir: str | os.PathLike[str],
    prior: str | os.PathLike[str] | None = None,
    cooccurrence: str | os.PathLike[str] | None = None,
    config: InferConfig | None = None,
    steps: int | None = None,
    preset: str = "tuned",
    tile_size: int = 256,
    overlap: int = 32,
    batch_size: int = 8,
    seed: int = 0,
    bands: Sequence[int] | None = None,
    aoi: str | None = None,
    label_attribute: str | None = None,
    device: str = "cpu",
) -> RegionJob:
    """Check every input and build the :class:`RegionJob` of a region (no tile is run).

    See :func:`segment` for the arguments.
    """
    legend = load_legend(legend)
    prior_name = _resolve_prior(legend, prior)
    prior_obj = _cached_prior(prior_name, "cpu")
    check_prior_legend(prior_obj, legend)
    cooc_name = str(cooccurrence) if cooccurrence is not None else legend.name
    if Path(cooc_name).exists():
        cooc_name = str(Path(cooc_name).resolve())
    cooc = _cached_cooccurrence(cooc_name)
    cooc.check_legend(legend)
    try:
        config = config or default_infer_config(prior_obj, preset)
    except ConfigError as err:
        raise InputError(f"--preset: {err}") from None
    if steps is not None:
        config = config.with_pnp(steps=steps)
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    prior_res = float(prior_obj.meta.get("resolution_m", 4.0))
    work_res = prior_res / PIXELS_PER_CELL

    images = [image] if isinstance(image, (str, os.PathLike)) else list(image)
    aoi_geom = None
    aoi_bounds = None
    if aoi is not None:
        from geo_ppp.io.vectors import read_aoi

        crs = open_region(images[:1]).grid.crs
        aoi_geom = read_aoi(aoi, crs)
        aoi_bounds = tuple(aoi_geom.bounds)
    spec = open_region(
        images, bands=tuple(bands) if bands else None, work_resolution_m=work_res, aoi_bounds=aoi_bounds
    )
    scan_image_files(spec)  # damaged blocks and NaNs stop the run now, not when their tile comes
    ratio = spec.resolution_m / spec.work_resolution_m
    if spec.resampled:
        msg = (
            f"the imagery is at {spec.resolution_m:.2f} m; it is resampled to the prior's "
            f"{spec.work_resolution_m:.2f} m "
            "for inference and the map is returned on the imagery's grid"
        )
        if ratio > LARGE_FACTOR or ratio < 1 / LARGE_FACTOR:
            log.warning("%s (factor %.1f: expect coarser detail or a slower run)", msg, max(ratio, 1 / ratio))
        else:
            log.info(msg)
    factor = _factor(prior_obj, spec.work_resolution_m)
    _check_tile_size(prior_obj, tile_size, factor)
    tiles = TileGrid(spec.work.height, spec.work.width, tile_size, overlap, _sparse_footprints(spec))
    weak = open_weak_labels(
        [weak_labels] if isinstance(weak_labels, (str, os.PathLike)) else list(weak_labels),
        spec.work,
        attribute=label_attribute,
    )
    unknown = sorted(set(weak.codes) - set(cooc.source_codes))
    if unknown:
        raise InputError(
            f"weak-label codes {unknown} are not in the co-occurrence matrix "
            f"(it knows {list(cooc.source_codes)}); pass --cooccurrence with a matrix that covers them, "
            "for example one estimated with `geo-ppp cooccurrence`"
        )
    return RegionJob(
        image=spec,
        weak=weak,
        legend=legend,
        prior=prior_name,
        cooccurrence=cooc_name,
        config=config,
        tiles=tiles,
        seed=seed,
        batch_size=batch_size,
        workdir=str(workdir),
        device=str(device),
        aoi_wkt=aoi_geom.wkt if aoi_geom is not None else None,
    )


# -- the whole run -------------------------------------------------------------------------------


PRODUCT_LABELS = {
    "map": "--out {}",
    "config": "its configuration {}",
    "qml": "its QGIS style {}",
    "aux": "its GDAL sidecar {}",
    "probabilities": "--probabilities {}",
    "vector": "--vector {}",
    "quicklook": "--quicklook {}",
}


PRODUCT_SUFFIXES = {
    "map": (".tif", ".tiff"),
    "probabilities": (".tif", ".tiff"),
    "vector": (".gpkg",),
    "quicklook": (".png",),
}
PRODUCT_FORMATS = {
    "map": "a Cloud Optimized GeoTIFF",
    "probabilities": "a Cloud Optimized GeoTIFF",
    "vector": "a GeoPackage",
    "quicklook": "a PNG",
}


def check_products_distinct(
    paths: dict[str, Path], workdir: Path, removed: bool, prefix: str = ""
) -> tuple[dict[str, Path], dict[str, Path], dict[str, Path]]:
    """Every product of a run, labelled, checked against every other and the work dir.

    Args:
        paths: the products (:func:`output_paths`).
        workdir: the work dir.
        removed: the work dir is removed after the run (the default one); else only its
            ``tiles/`` folder may be cleared and its ``manifest.json`` rewritten.
        prefix: put before every label (a job's region name).

    Returns:
        The labelled files, folders and roots (a job checks them across its regions too).
    """
    for kind, suffixes in PRODUCT_SUFFIXES.items():
        path = paths.get(kind)
        if path is not None and path.suffix.lower() not in suffixes:
            flag = PRODUCT_LABELS[kind].split()[0]
            raise OutputError(
                f"{prefix}{flag} {path}: this output is written as {PRODUCT_FORMATS[kind]}, so its name "
                f"must end in {' or '.join(suffixes)} (e.g. {path.with_suffix(suffixes[0]).name})"
            )
    files = {prefix + PRODUCT_LABELS[k].format(p.name): p for k, p in paths.items()}
    roots: dict[str, Path] = {}
    if removed:
        folders = {prefix + "the work dir": workdir}
    else:
        files[prefix + "the work dir's manifest"] = workdir / "manifest.json"
        folders = {prefix + "the work dir's tiles": workdir / "tiles"}
        roots = {prefix + "the work dir": workdir}
    check_distinct(files, folders, roots)
    return files, folders, roots


def output_paths(
    out: str | os.PathLike[str],
    probabilities: str | os.PathLike[str] | None = None,
    vector: str | os.PathLike[str] | None = None,
    quicklook: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Every file a run writes, by kind."""
    out = Path(out)
    paths = {
        "map": out,
        "config": out.with_name(out.name + ".json"),
        "qml": out.with_suffix(".qml"),
        "aux": out.with_name(out.name + ".aux.xml"),
    }
    for kind, p in (("probabilities", probabilities), ("vector", vector), ("quicklook", quicklook)):
        if p is not None:
            paths[kind] = Path(p)
    return paths


def segment(
    image: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    weak_labels: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    legend: str | os.PathLike[str] | Legend = "chesapeake",
    out: str | os.PathLike[str] = "landcover.tif",
    *,
    prior: str | os.PathLike[str] | None = None,
    cooccurrence: str | os.PathLike[str] | None = None,
    config: InferConfig | None = None,
    steps: int | None = None,
    preset: str = "tuned",
    tile_size: int = 256,
    overlap: int = 32,
    batch_size: int = 8,
    seed: int = 0,
    bands: Sequence[int] | None = None,
    aoi: str | None = None,
    label_attribute: str | None = None,
    probabilities: str | os.PathLike[str] | None = None,
    vector: str | os.PathLike[str] | None = None,
    quicklook: str | os.PathLike[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    overwrite: bool = False,
    device: str = "cpu",
    progress: Progress | None = None,
    scheduler: str | None = None,
    runner: Callable[[RegionJob, list[list[Tile]], Progress | None, dict[str, float]], dict[str, str]]
    | None = None,
    infer: Callable[..., np.ndarray] | None = None,
    command: str = "",
) -> RegionResult:
    """Segment a region into a land-cover map (a COG with its style, config and optional products).

    Args:
        image: one or more GeoTIFF/VRT files (any CRS) forming the region.
        weak_labels: NLCD-coded rasters (any CRS and resolution), or a vector file with ``label_attribute``.
        legend: target legend name or JSON.
        out: the output map (``.tif``).
        prior: prior name or folder (default: the legend's shipped prior).
        cooccurrence: co-occurrence name or JSON (default: the legend's).
        config: inference settings (default: the prior's tuned ones); ``steps`` overrides its steps.
        steps: plug-and-play steps (default: the prior's tuned ones).
        preset: ``tuned`` (the prior's settings) or ``paper`` (the paper's 200-step schedule).
        tile_size: tile size in working-grid pixels.
        overlap: tile overlap in pixels (blended with feathered weights).
        batch_size: tiles per inference batch.
        seed: same seed, same map (each tile gets a seed from it and its position).
        bands: 1-based image bands (R, G, B[, NIR]) in order.
        aoi: a vector file or ``minx,miny,maxx,maxy[@CRS]``: only it is segmented.
        label_attribute: class attribute of vector weak labels.
        probabilities: also write class probabilities (uint8, 0-255) as a COG there.
        vector: also write dissolved, simplified class polygons (GeoPackage) there.
        quicklook: also write a PNG of image, weak labels and map there.
        workdir: where tiles are kept (default: ``OUT.work`` beside the map, removed after success).
        resume: reuse finished tiles of the same run found in the work dir.
        overwrite: replace existing outputs.
        device: ``cpu`` or ``cuda``.
        progress: called after every tile.
        scheduler: run the tiles on Dask: ``local``, ``local:N`` or a scheduler address (default: in
            this process).
        runner: runs the batches (default: in this process, in order, or on ``scheduler``).
        infer: replaces the land-cover inference (tests, benchmarks).
        command: the command line, recorded in the config.

    Raises:
        InputError: bad inputs (each message says what and how to fix it), before any output.
        OutputExistsError: an output exists and ``overwrite`` is false.
    """
    started = time.perf_counter()
    dask_runner = None

    def connect(job: RegionJob) -> None:
        nonlocal dask_runner
        from geo_ppp.pipeline.distributed import DaskRunner

        dask_runner = DaskRunner(scheduler, infer=infer)
        dask_runner.prepare(job)

    prep: PreparedRegion | None = None
    try:
        try:
            # The scheduler is reached (and the prior loaded on its workers) before the work dir is set
            # up: a malformed or unreachable scheduler, or workers that cannot load the prior, leave nothing.
            prep = prepare_region(
                image, weak_labels, legend, out, prior=prior, cooccurrence=cooccurrence, config=config,
                steps=steps, preset=preset, tile_size=tile_size, overlap=overlap, batch_size=batch_size,
                seed=seed, bands=bands, aoi=aoi, label_attribute=label_attribute, probabilities=probabilities,
                vector=vector, quicklook=quicklook, workdir=workdir, resume=resume, overwrite=overwrite,
                device=device, command=command,
                before_workdir=connect if runner is None and scheduler is not None else None,
            )
            job = prep.job
            timings: dict[str, float] = {}
            batches = job.batches()
            t0 = time.perf_counter()
            if dask_runner is not None:
                report = dask_runner(job, batches, progress, timings)
            elif runner is None:
                report = run_serial(job, batches, progress, timings, infer=infer)
            else:
                report = runner(job, batches, progress, timings)
            timings["tiles_wall"] = time.perf_counter() - t0
        finally:
            if dask_runner is not None:
                dask_runner.close()
        return finish_region(prep, report, timings, started)
    finally:
        if prep is not None:
            prep.release()  # the locks on the outputs and the work dir


@dataclass(frozen=True)
class PreparedRegion:
    """A checked region whose work dir is set up: the job, its outputs, and what to keep."""

    job: RegionJob
    paths: dict[str, Path]
    keep_workdir: bool
    command: str = ""
    resume: bool = True
    overwrite: bool = False
    existed: frozenset[Path] = frozenset()
    lock: RunLock | None = None

    def release(self) -> None:
        """Give up the run's locks (outputs and work dir)."""
        if self.lock is not None:
            self.lock.release()

    def setup(self) -> None:
        """Set up the work dir (refuses one that holds another run's tiles unless ``resume`` is off)."""
        TileStore(self.job.workdir, self.job.fingerprint(), resume=self.resume)


def prepare_region(
    image: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    weak_labels: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    legend: str | os.PathLike[str] | Legend,
    out: str | os.PathLike[str],
    *,
    workdir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    overwrite: bool = False,
    probabilities: str | os.PathLike[str] | None = None,
    vector: str | os.PathLike[str] | None = None,
    quicklook: str | os.PathLike[str] | None = None,
    command: str = "",
    before_workdir: Callable[[RegionJob], None] | None = None,
    setup_workdir: bool = True,
    lock: bool = True,
    create_folders: bool = False,
    **plan_options: Any,
) -> PreparedRegion:
    """Check outputs and inputs, plan the job and set up its work dir (see :func:`segment`).

    ``before_workdir(job)``, if given, runs between planning and setting up the work dir (a check
    that must fail before anything is written, such as reaching the Dask scheduler). With
    ``setup_workdir=False`` nothing is written at all; call :meth:`PreparedRegion.setup` later.
    With ``lock`` (the default) the outputs and the work dir are locked against other runs until
    :meth:`PreparedRegion.release` (a second run stops at once, naming the first).
    """
    paths = output_paths(out, probabilities, vector, quicklook)
    keep_workdir = workdir is not None
    workdir = Path(workdir) if workdir is not None else paths["map"].with_name(paths["map"].name + ".work")
    check_products_distinct(paths, workdir, removed=not keep_workdir)
    run_lock = RunLock([*paths.values(), workdir], command).__enter__() if lock else None
    try:
        interrupted: OutputExistsError | None = None
        try:
            check_outputs([p for k, p in paths.items() if k != "aux"], overwrite, create_folders)
        except OutputExistsError as err:
            # a map without its configuration (written last) beside a work dir: a publish that was
            # stopped; this run may complete it if it is the same run (checked once planned)
            if not (paths["map"].exists() and not paths["config"].exists() and resume
                    and (workdir / "manifest.json").exists()):
                raise
            interrupted = err
        if lock:
            _remove_stale_scratch(paths.values())
        existed = frozenset(p for p in paths.values() if p.exists())
        job = plan(image, weak_labels, legend, workdir=workdir, **plan_options)
        if interrupted is not None:
            if not TileStore.holds_run(workdir, job.fingerprint()):
                raise interrupted
            log.warning(
                "%s has no %s: its publishing was stopped; this run is the same run (the work dir %s "
                "holds its tiles), so it publishes the map and its products again", paths["map"],
                paths["config"].name, workdir,
            )
            overwrite = True
        if before_workdir is not None:
            before_workdir(job)
        prep = PreparedRegion(job, paths, keep_workdir, command, resume, overwrite, existed, run_lock)
        if setup_workdir:
            prep.setup()
    except BaseException:
        if run_lock is not None:
            run_lock.release()
        raise
    return prep


def _remove_stale_scratch(products: Iterable[Path]) -> None:
    """Remove temporary files an earlier run of these outputs left when it was killed while publishing.

    Only called under the outputs' locks: no live run can own such a file. Atomic writes name their
    temporaries ``.STEM.XXXX.tmp.SUFFIX``; the COG writer's scratch raster is ``..NAME.scratch.XXXX.tmp.tif``.
    """
    for product in products:
        folder = product.parent
        if not folder.is_dir():
            continue
        # exactly mkstemp's 8 random characters: ``.map.v2.XXXXXXXX.tmp.tif`` (another output's, maybe
        # another live run's) must not match ``map.tif``'s pattern
        mine = re.compile(
            rf"^(\.{re.escape(product.stem)}\.[a-z0-9_]{{8}}\.tmp{re.escape(product.suffix)}"
            rf"|\.\.{re.escape(product.name)}\.scratch\.[a-z0-9_]{{8}}\.tmp\.tif)$"
        )
        for stale in folder.iterdir():
            if mine.match(stale.name):
                with contextlib.suppress(OSError):
                    stale.unlink()
                    log.info("removed %s, left by a run that was stopped while publishing", stale)


def finish_region(
    prep: PreparedRegion, report: dict[str, str], timings: dict[str, float], started: float | None = None
) -> RegionResult:
    """Mosaic and publish a region whose tiles are all done; remove a default work dir."""
    job = prep.job
    counts = {s: sum(1 for v in report.values() if v == s) for s in ("ran", "skipped", "resumed")}
    store = TileStore.open_existing(job.workdir)
    if not any(store.status(t) == "done" for t in job.tiles.tiles):
        raise InputError(
            "no tile of the region holds a valid pixel (all nodata or outside the AOI); nothing to map"
        )

    from geo_ppp.pipeline.publish import publish

    if not prep.overwrite:  # another program may have made one since the run started
        appeared = [str(p) for p in prep.paths.values() if p.exists() and p not in prep.existed]
        if appeared:
            raise OutputExistsError(
                f"{', '.join(appeared)} appeared while this run was working; it is kept. The tiles are kept "
                f"in {job.workdir}: rerun with another --out, or with --overwrite, to publish them"
            )
    resolved = resolved_config(job, prep.paths, prep.command)
    t0 = time.perf_counter()
    with gdal_env():
        publish(job, prep.paths, resolved, timings)
    timings["publish"] = time.perf_counter() - t0
    if not prep.keep_workdir:
        shutil.rmtree(job.workdir, ignore_errors=True)
    stats = {"tiles": len(job.tiles), **counts, "seconds": {k: round(v, 3) for k, v in timings.items()}}
    if started is not None:
        stats["seconds"]["total"] = round(time.perf_counter() - started, 3)
    paths = prep.paths
    written = {k: p for k, p in paths.items() if p.exists()}
    return RegionResult(paths["map"], written, job.image.grid, resolved, stats)


def run_serial(
    job: RegionJob,
    batches: list[list[Tile]],
    progress: Progress | None,
    timings: dict[str, float],
    *,
    infer: Callable[..., np.ndarray] | None = None,
) -> dict[str, str]:
    """Run every batch in this process, in order (readers and the prior opened once)."""
    report: dict[str, str] = {}
    total = len(job.tiles)
    readers = (ImageReader(job.image), WeakReader(job.weak))
    inferrer = infer
    env = gdal_env()
    env.__enter__()
    try:
        for batch in batches:
            if inferrer is None and any(
                TileStore.open_existing(job.workdir).status(t) is None for t in batch
            ):
                inferrer = TileInferrer(job)
            result = run_batch(job, batch, infer=inferrer, readers=readers, timings=timings)
            for tile in batch:
                status = result[tile.key]
                report[tile.key] = status
                log.info("tile %s at (%d, %d): %s", tile.key, tile.y, tile.x, _why(status))
                if progress is not None:
                    progress(len(report), total, tile, status)
    finally:
        readers[0].close()
        readers[1].close()
        env.__exit__(None, None, None)
    return report


def _why(status: str) -> str:
    return {
        "ran": "ran",
        "skipped": "skipped (no valid image pixel in the tile)",
        "resumed": "skipped (finished in an earlier run; kept from the work dir)",
    }[status]


def resolved_config(job: RegionJob, paths: dict[str, Path], command: str) -> dict[str, Any]:
    """The configuration saved beside the map."""
    return {
        "command": command,
        "outputs": {k: str(v) for k, v in paths.items()},
        "image": job.image.to_dict(),
        "weak_labels": job.weak.to_dict(),
        "legend": job.legend.to_dict(),
        "prior": job.prior,
        "cooccurrence": job.cooccurrence,
        "infer": job.config.to_dict(),
        "tiles": job.tiles.to_dict(),
        "batch_size": job.batch_size,
        "seed": job.seed,
        "device": job.device,
        "aoi_wkt": job.aoi_wkt,
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
