"""Segment whole regions: plan, run the tiles, mosaic and publish (:func:`segment`).

:func:`segment` is the Python API behind ``geo-ppp segment``. It checks every input and output
before any work, then:

1. defines the region (one or many image files, cropped to the AOI) and the working grid at the
   prior's resolution, and covers it with overlapping tiles (:class:`~geo_ppp.pipeline.tiling.TileGrid`)
   (:mod:`geo_ppp.pipeline.plan`);
2. runs the tiles in fixed batches (the same batches whatever was done before, so a resumed run
   gives bit-identical tiles), each with a seed derived from its position, skipping tiles without
   a valid pixel, and keeps each tile's probabilities in the work dir (:mod:`geo_ppp.pipeline.worker`,
   in this process or on Dask through :mod:`geo_ppp.pipeline.distributed`);
3. blends the tiles strip by strip with feathered weights into a Cloud Optimized GeoTIFF of uint8
   legend codes (colour table, class names, ``.qml`` style, GDAL category names), optionally a
   probability COG, polygons and a quicklook, plus the resolved configuration as JSON
   (:mod:`geo_ppp.pipeline.publish`).

This module is the only one that imports both ``distributed`` and ``publish``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geo_ppp.errors import InputError, OutputExistsError
from geo_ppp.geo.legend import Legend
from geo_ppp.io.rasters import gdal_env
from geo_ppp.landcover.infer import InferConfig
from geo_ppp.outputs import OutputError
from geo_ppp.pipeline.calibrate import calibrate_stage
from geo_ppp.pipeline.job import (
    PRODUCT_LABELS,
    Progress,
    RegionJob,
    RegionResult,
    RunObserver,
    RunSettings,
    as_observer,
    default_workdir,
    output_paths,
    resolved_config,
    stage_tiles,
)
from geo_ppp.pipeline.plan import PreparedRegion, prepare_region
from geo_ppp.pipeline.publish import publish
from geo_ppp.pipeline.region import is_segmenter_folder, method_inferrer, publish_segmenter
from geo_ppp.pipeline.store import TileStore
from geo_ppp.pipeline.tiling import Tile
from geo_ppp.pipeline.worker import run_serial

__all__ = ["finish_region", "segment"]

log = logging.getLogger(__name__)


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
    method: str = "pnp",
    train_steps: int = 1000,
    distill_tiles: int | None = None,
    segmenter: str | os.PathLike[str] | None = None,
    save_segmenter: str | os.PathLike[str] | None = None,
    calibrate: bool = True,
    progress: RunObserver | Progress | None = None,
    scheduler: str | None = None,
    runner: Callable[..., dict[str, str]] | None = None,
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
        method: ``pnp`` (plug-and-play per tile, the default), ``qr`` (a small segmenter trained on
            the region from the weak labels alone, Rolf et al.'s implicit posterior) or ``distill``
            (plug-and-play on a sample of tiles, then a segmenter trained on its maps maps the region).
        train_steps: training steps of a ``qr`` or ``distill`` segmenter.
        distill_tiles: tiles a ``qr``/``distill`` segmenter learns from (default: 64, or all if fewer).
        segmenter: a segmenter saved by ``save_segmenter``: it maps the region, nothing is trained.
        save_segmenter: keep the trained segmenter in this folder (safetensors + JSON config).
        calibrate: fit the region appearance model first (:mod:`geo_ppp.pipeline.calibrate`):
            what each class looks like on this region and how far to trust its weak labels; plug-and-play
            (and distill's teacher) then follow the imagery where it plainly disagrees with a 30 m block.
            ``False`` maps with the per-window model alone.
        progress: a :class:`~geo_ppp.pipeline.job.RunObserver` (the region planned, with its tile
            count, before any tile runs; every tile; the outputs), or a callable called after every tile.
        scheduler: run the tiles on Dask: ``local``, ``local:N`` or a scheduler address (default: in
            this process).
        runner: runs the batches (default: in this process, in order, or on ``scheduler``): a
            :class:`~geo_ppp.pipeline.distributed.DaskRunner` or anything called like it.
        infer: replaces the land-cover inference (tests, benchmarks).
        command: the command line, recorded in the config.

    Raises:
        InputError: bad inputs (each message says what and how to fix it), before any output.
        OutputExistsError: an output exists and ``overwrite`` is false.
    """
    started = time.perf_counter()
    observer = as_observer(progress)
    settings = RunSettings(
        prior=prior,
        cooccurrence=cooccurrence,
        config=config,
        steps=steps,
        preset=preset,
        tile_size=tile_size,
        overlap=overlap,
        batch_size=batch_size,
        seed=seed,
        bands=bands,
        aoi=aoi,
        label_attribute=label_attribute,
        device=device,
        method=method,
        train_steps=train_steps,
        distill_tiles=distill_tiles,
        segmenter=segmenter,
        calibrate=calibrate,
    )
    products = output_paths(out, probabilities, vector, quicklook)
    work = Path(workdir) if workdir is not None else default_workdir(products["map"])
    save_to = _check_save_segmenter(save_segmenter, settings, overwrite, {**products, "work dir": work})
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
                image,
                weak_labels,
                legend,
                out,
                settings=settings,
                probabilities=probabilities,
                vector=vector,
                quicklook=quicklook,
                workdir=workdir,
                resume=resume,
                overwrite=overwrite,
                command=command,
                before_workdir=connect if runner is None and scheduler is not None else None,
                save_segmenter=save_to,
            )
            observer.planned(prep.job)
            timings: dict[str, float] = {}
            active = dask_runner if dask_runner is not None else runner
            t0 = time.perf_counter()
            # the region's appearance model, fitted before any tile (one task on Dask)
            task = getattr(active, "run_task", None)
            job = calibrate_stage(prep.job, run_task=task, progress=observer.stage)
            prep = dataclasses.replace(prep, job=job)
            timings["calibrate"] = time.perf_counter() - t0

            def run_tiles(j: RegionJob, batches: list[list[Tile]], tile_infer: Any = infer) -> dict[str, str]:
                on_tile = observer.tile if j is job else stage_tiles(observer)
                if active is None:
                    return run_serial(j, batches, on_tile, timings, infer=tile_infer)
                return active(j, batches, on_tile, timings, infer=tile_infer)

            t0 = time.perf_counter()
            tile_infer = infer
            if tile_infer is None or job.method != "pnp":
                tile_infer = (
                    method_inferrer(
                        job, run_tiles, train=getattr(active, "run_task", None), progress=observer.stage
                    )
                    or infer
                )
            timings["method"] = time.perf_counter() - t0
            report = run_tiles(job, job.batches(), tile_infer)
            timings["tiles_wall"] = time.perf_counter() - t0
        finally:
            if dask_runner is not None:
                dask_runner.close()
        result = finish_region(prep, report, timings, started)
        observer.published(result)
        return result
    finally:
        if prep is not None:
            prep.release()  # the locks on the outputs and the work dir


def _check_save_segmenter(
    folder: str | os.PathLike[str] | None, settings: RunSettings, overwrite: bool, others: dict[str, Path]
) -> Path | None:
    """``--save-segmenter``: only with a trained segmenter, and in a folder of its own.

    The folder must not overlap the run's products and work dir, and ``--overwrite`` replaces only an
    earlier saved segmenter.
    """
    if folder is None:
        return None
    if settings.method not in ("qr", "distill"):
        raise InputError(
            "--save-segmenter keeps the segmenter that --method distill or qr trains; add --method distill"
        )
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--save-segmenter {folder} is a file; give a folder to write the segmenter into")
    mine = folder.resolve()
    for label, path in others.items():
        other = Path(path).resolve()
        if other == mine or mine in other.parents or other in mine.parents:
            flag = PRODUCT_LABELS[label].format(path) if label in PRODUCT_LABELS else f"the {label} {path}"
            raise OutputError(
                f"--save-segmenter {folder} overlaps {flag}; give the segmenter a folder of its own"
            )
    ancestor = next((a for a in folder.absolute().parents if a.exists()), None)
    if ancestor is None or not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(
            f"--save-segmenter {folder} cannot be written: {ancestor} is not a writable folder; choose "
            "a folder you can write to (nothing was run)"
        )
    if folder.exists() and any(folder.iterdir()):
        if _stopped_publish(folder, others):
            return folder  # this run's own segmenter, saved by a publish that was stopped: saved again
        if not overwrite:
            raise OutputExistsError(
                f"--save-segmenter {folder} already exists; pass --overwrite or another folder"
            )
        if not is_segmenter_folder(folder):
            raise OutputError(
                f"--save-segmenter {folder} is a folder that holds something else than a saved segmenter; "
                "--overwrite replaces only a segmenter: choose another folder"
            )
    return folder


def _stopped_publish(folder: Path, products: dict[str, Path]) -> bool:
    """Whether ``folder`` is the segmenter of a run onto this map whose publishing was stopped.

    The segmenter is saved first and the map's configuration last, so a map without its
    configuration and a segmenter that names that map are one stopped run (the rerun saves it again).
    """
    import json

    if not is_segmenter_folder(folder) or "map" not in products or products["config"].exists():
        return False
    try:
        meta = json.loads((folder / "config.json").read_text()).get("meta", {})
    except (OSError, ValueError):
        return False
    return bool(meta.get("map")) and Path(meta["map"]).resolve() == Path(products["map"]).resolve()


def finish_region(
    prep: PreparedRegion,
    report: dict[str, str],
    timings: dict[str, float],
    started: float | None = None,
    save_segmenter: Path | None = None,
) -> RegionResult:
    """Mosaic and publish a region whose tiles are all done; remove a default work dir.

    ``save_segmenter`` (default: the prepared region's, locked with its outputs): copy the work dir's
    trained segmenter there (with the command and outputs); it is named in the result's outputs.
    """
    job = prep.job
    save_segmenter = save_segmenter if save_segmenter is not None else prep.save_segmenter
    counts = {s: sum(1 for v in report.values() if v == s) for s in ("ran", "skipped", "resumed")}
    store = TileStore.open_existing(job.workdir)
    if not any(store.status(t) == "done" for t in job.tiles.tiles):
        raise InputError(
            "no tile of the region holds a valid pixel (all nodata or outside the AOI); nothing to map"
        )

    if not prep.overwrite:  # another program may have made one since the run started
        mine = [*prep.paths.values(), *([save_segmenter] if save_segmenter is not None else [])]
        appeared = [str(p) for p in mine if p.exists() and p not in prep.existed]
        if appeared:
            raise OutputExistsError(
                f"{', '.join(appeared)} appeared while this run was working; it is kept. The tiles are kept "
                f"in {job.workdir}: rerun with another --out, or with --overwrite, to publish them"
            )
    resolved = resolved_config(job, prep.paths, prep.command)
    t0 = time.perf_counter()
    if save_segmenter is not None:  # before the map, whose configuration is written last of all: a
        # publish stopped in between is completed by the rerun (see _check_save_segmenter)
        publish_segmenter(
            Path(job.workdir) / "segmenter",
            save_segmenter,
            {"command": prep.command, "map": str(Path(prep.paths["map"]).absolute())},
        )
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
    if save_segmenter is not None:
        written["segmenter"] = save_segmenter
    return RegionResult(paths["map"], written, job.image.grid, resolved, stats)
