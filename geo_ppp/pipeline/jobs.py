"""Batch jobs: a TOML spec listing regions, validated whole, run as Dask tasks (``geo-ppp run``).

A job spec lists regions (inputs, outputs, settings); its format is in :mod:`geo_ppp.pipeline.jobspec`.

Everything is checked before anything is submitted: the spec (:mod:`geo_ppp.pipeline.jobspec`:
unknown and missing keys named with their line, missing files with their key and line), then every
region is planned (inputs read and checked). Then every batch of every region is submitted at once;
a region is mosaicked as soon as its own tiles are done.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from geo_ppp.errors import ConfigError, InputError, OutputExistsError
from geo_ppp.outputs import OutputError
from geo_ppp.pipeline.calibrate import calibrate_stage
from geo_ppp.pipeline.job import (
    Progress,
    RegionResult,
    RunObserver,
    RunSettings,
    as_observer,
    stage_tiles,
)
from geo_ppp.pipeline.jobspec import JobSpec, RegionSpec, load_job
from geo_ppp.pipeline.plan import PreparedRegion, prepare_region
from geo_ppp.pipeline.region import method_inferrer
from geo_ppp.pipeline.run import finish_region
from geo_ppp.pipeline.worker import run_serial

__all__ = ["JobSpec", "RegionSpec", "load_job", "prepare_job_region", "run_job"]

log = logging.getLogger(__name__)


def prepare_job_region(
    spec: JobSpec,
    region: RegionSpec,
    overwrite: bool,
    resume: bool,
    device: str | None,
    setup: bool = True,
    lock: bool = True,
) -> PreparedRegion:
    """Check and plan one region of a job (its work dir is ``WORKDIR/NAME``).

    With ``lock`` (a run), missing output folders are made and the outputs and work dir are locked
    until :meth:`PreparedRegion.release`; without it (``--check``) nothing is written.
    """
    if lock:
        for out in (region.out, region.probabilities, region.vector, region.quicklook):
            if out is not None:
                Path(out).parent.mkdir(parents=True, exist_ok=True)
    s = dict(region.settings)
    legend = s.pop("legend", "chesapeake")
    if device is not None:
        s["device"] = device
    elif s.get("device") in (None, "auto"):
        import torch

        s["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return prepare_region(
            list(region.image),
            list(region.weak_labels),
            legend,
            region.out,
            settings=RunSettings(aoi=region.aoi, **s),
            probabilities=region.probabilities,
            vector=region.vector,
            quicklook=region.quicklook,
            workdir=Path(spec.workdir) / region.name,
            resume=resume,
            overwrite=overwrite,
            command=f"geo-ppp run {spec.path}",
            setup_workdir=setup,
            lock=lock,
            create_folders=True,
        )
    except (InputError, ConfigError, OutputError, OutputExistsError) as exc:
        raise type(exc)(f"region {region.name!r}: {exc}") from exc


def run_job(
    spec: JobSpec | str | os.PathLike[str],
    *,
    scheduler: str | None = None,
    overwrite: bool | None = None,
    resume: bool | None = None,
    device: str | None = None,
    progress: RunObserver | Progress | None = None,
    infer: Callable[..., np.ndarray] | None = None,
    echo: Callable[[str], object] = print,
) -> list[RegionResult]:
    """Validate and plan every region, run all tiles (on Dask when a scheduler is given), mosaic each region.

    Args:
        spec: a job spec or its path.
        scheduler: overrides the spec's ``[job] scheduler`` (None and no spec value: in this process).
        overwrite: overrides the spec's ``overwrite``.
        resume: overrides the spec's ``resume``.
        device: ``cpu`` or ``cuda`` for every region (default: the spec's, else cpu).
        progress: a :class:`~geo_ppp.pipeline.job.RunObserver` (every region planned before any tile
            runs, every tile over all regions, every region published), or a callable per tile.
        infer: replaces the land-cover inference (tests).
        echo: where region summaries go.
    """
    if not isinstance(spec, JobSpec):
        spec = load_job(spec)
    scheduler = scheduler or spec.scheduler
    overwrite = spec.overwrite if overwrite is None else overwrite
    resume = spec.resume if resume is None else resume
    # everything is checked and planned before anything is written or submitted
    runner = None
    if scheduler is not None:
        from geo_ppp.pipeline.distributed import DaskRunner

        # reached first: an unreachable or malformed scheduler stops the job before any folder is made
        runner = DaskRunner(scheduler, infer=infer)
    preps: list[PreparedRegion] = []
    try:
        for r in spec.regions:
            preps.append(prepare_job_region(spec, r, overwrite, resume, device, setup=False))
        observer = as_observer(progress)
        for prep, region in zip(preps, spec.regions, strict=True):
            observer.planned(prep.job, region.name)
        return _run_prepared(spec, preps, runner, observer, infer, echo)
    finally:
        for prep in preps:
            prep.release()  # the locks on every region's outputs and work dir
        if runner is not None:
            runner.close()


def _run_prepared(
    spec: JobSpec,
    preps: list[PreparedRegion],
    runner: Any,
    observer: RunObserver,
    infer: Callable[..., np.ndarray] | None,
    echo: Callable[[str], object],
) -> list[RegionResult]:
    """Run the planned (and locked) regions of a job, in this process or on ``runner`` (a DaskRunner)."""
    results: list[RegionResult] = []
    total = sum(len(p.job.tiles) for p in preps)
    done = [0]

    def step(_done: int, _total: int, tile: Any, status: str) -> None:
        done[0] += 1
        observer.tile(done[0], total, tile, status)

    def publish(i: int, report: dict[str, str], timings: dict[str, float], started: float) -> None:
        result = finish_region(preps[i], report, timings, started)
        results.append(result)
        observer.published(result, spec.regions[i].name)
        echo(_summary(spec.regions[i], result))

    if runner is None:
        for prep in preps:
            prep.setup()
        for i, prep in enumerate(preps):
            started = time.perf_counter()
            timings: dict[str, float] = {}
            job = calibrate_stage(prep.job, progress=observer.stage)
            prep = preps[i] = dataclasses.replace(prep, job=job)
            timings["calibrate"] = time.perf_counter() - started

            def teacher(
                j: Any, batches: list[list[Any]], timings: dict[str, float] = timings
            ) -> dict[str, str]:
                return run_serial(j, batches, stage_tiles(observer), timings, infer=infer)

            tile_infer = method_inferrer(prep.job, teacher, progress=observer.stage) or infer
            report = run_serial(prep.job, prep.job.batches(), step, timings, infer=tile_infer)
            publish(i, report, timings, started)
        return results

    # the runner is closed by run_job
    if runner.dashboard:
        echo(f"Dask dashboard: {runner.dashboard}")
    for prep in {p.job.prior + "|" + p.job.device: p for p in preps}.values():
        runner.prepare(prep.job)
    for prep in preps:  # the scheduler is reachable and the workers hold the prior: now write
        prep.setup()
    started = time.perf_counter()
    # region-level methods first: teacher tiles as tasks, one training task each, then their tiles
    # are mapped with the rest
    method_timings: list[dict[str, float]] = [{} for _ in preps]
    for i, prep in enumerate(preps):  # each region's calibration: one task before its tiles
        t0 = time.perf_counter()
        job = calibrate_stage(prep.job, run_task=runner.run_task, progress=observer.stage)
        preps[i] = dataclasses.replace(prep, job=job)
        method_timings[i]["calibrate"] = time.perf_counter() - t0
    inferrers = [
        method_inferrer(
            prep.job,
            lambda j, b, t=method_timings[i]: runner(j, b, stage_tiles(observer), t, infer=infer),
            train=runner.run_task,
            progress=observer.stage,
        )
        or infer
        for i, prep in enumerate(preps)
    ]
    region_of: dict[str, int] = {}
    pending: list[int] = []
    futures: list[Any] = []
    batches: list[list[Any]] = []
    for i, prep in enumerate(preps):
        region_batches = prep.job.batches()
        fs = runner.submit(prep.job, region_batches, inferrers[i])
        pending.append(len(fs))
        region_of.update({f.key: i for f in fs})
        futures += fs
        batches += region_batches
    reports: list[dict[str, str]] = [{} for _ in preps]
    timings_all = method_timings

    def on_tile(future: Any, tile: Any, status: str) -> None:
        reports[region_of[future.key]][tile.key] = status
        step(0, 0, tile, status)

    def on_batch_done(future: Any) -> None:
        i = region_of[future.key]
        pending[i] -= 1
        if pending[i] == 0:
            publish(i, reports[i], timings_all[i], started)

    runner.collect(futures, batches, on_tile, lambda f: timings_all[region_of[f.key]], on_batch_done)
    return results


def _summary(region: RegionSpec, result: RegionResult) -> str:
    s = result.stats
    line = (
        f"region {region.name}: wrote {result.out} ({s['ran']} tiles ran, {s['skipped']} skipped, "
        f"{s['resumed']} resumed)"
    )
    others = [f"{kind} {path}" for kind, path in result.outputs.items() if kind != "map"]
    if others:
        line += "; also " + ", ".join(others)
    calibration = result.config.get("calibration")
    if calibration and calibration.get("status") != "fitted":
        line += f"; calibration skipped ({calibration.get('reason', '')}): per-window model only"
    return line
