"""The region calibration stage: the appearance model fitted on the region before any tile runs.

:func:`calibrate_stage` runs once per region, after the work dir is set up and before the tiles
(and before distill's teacher): it reads a seeded sample of :data:`CALIBRATION_TILES` tiles, draws
pixels from them with their weak-label codes, fits :func:`geo_ppp.landcover.appearance.fit_appearance`
and writes the model (``WORKDIR/appearance.safetensors``) and its record (``WORKDIR/appearance.json``,
written last, so a record means a finished stage). Every tile of the run then loads the model from
the work dir (:class:`~geo_ppp.pipeline.worker.TileInferrer`).

- Deterministic: the tiles, the pixels and the fit are seeded by the run's seed and the tiles'
  positions, and the fit runs single-threaded, so the model does not depend on where it runs.
- Resumable: a record of the same run (its digest) is reused; one of another run is fitted again.
- On Dask it is one task (``run_task``), like a segmenter's training.
- A region too small or too uniform to calibrate falls back to the per-window model with a warning,
  and the record says why.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geo_ppp.core.atomic import write_json
from geo_ppp.core.weights import write_safetensors
from geo_ppp.io.imagery import ImageReader
from geo_ppp.io.rasters import gdal_env
from geo_ppp.io.weak_labels import WeakReader
from geo_ppp.landcover.appearance import AppearanceConfig, CalibrationSkipped, sample_pixels
from geo_ppp.landcover.appearance_fit import fit_appearance
from geo_ppp.pipeline.job import CALIBRATION_MODEL, CALIBRATION_RECORD, RegionJob
from geo_ppp.pipeline.region import sample_tiles
from geo_ppp.pipeline.worker import cached_cooccurrence, read_tile

__all__ = ["CALIBRATION_TILES", "calibrate_stage", "fit_region_appearance", "tile_sample_seed"]

log = logging.getLogger(__name__)

#: tiles the calibration samples its pixels from (all of a smaller region)
CALIBRATION_TILES = 32


def tile_sample_seed(seed: int, y: int, x: int) -> int:
    """The seed of the pixels the calibration draws from the tile at (y, x) of a run seeded ``seed``."""
    return (seed * 1_000_003 + y * 7919 + x) % (2**63)


def _read_record(job: RegionJob) -> dict[str, Any] | None:
    try:
        record = json.loads((Path(job.workdir) / CALIBRATION_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if record.get("digest") != job.digest():
        return None
    if record.get("status") == "fitted" and not (Path(job.workdir) / CALIBRATION_MODEL).exists():
        return None
    return record


def fit_region_appearance(job: RegionJob) -> dict[str, Any]:
    """Fit the region's appearance model into the work dir (or reuse this run's); returns the record.

    Runs in any process (a Dask worker included): it takes the small job value and reads its own
    tiles.
    """
    record = _read_record(job)
    if record is not None:
        return record
    started = time.perf_counter()
    config = AppearanceConfig(seed=job.seed)
    tiles = sample_tiles(job, CALIBRATION_TILES)
    per_tile = -(-config.samples // max(len(tiles), 1))
    feats, codes = [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same sums in the same order wherever the stage runs
    try:
        with gdal_env():
            image_reader, weak_reader = ImageReader(job.image), WeakReader(job.weak)
            try:
                for tile in tiles:
                    data, valid, weak = read_tile(job, tile, image_reader, weak_reader)
                    if weak is None:
                        continue
                    gen = torch.Generator().manual_seed(tile_sample_seed(job.seed, tile.y, tile.x))
                    f, c = sample_pixels(
                        torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None],
                        torch.from_numpy(np.asarray(weak, dtype=np.int64))[None],
                        torch.from_numpy(valid)[None, None],
                        per_tile,
                        gen,
                        config.texture_radius,
                        config.smooth_radius,
                        job.weak.nodata,
                    )
                    feats.append(f)
                    codes.append(c)
            finally:
                image_reader.close()
                weak_reader.close()
        features = torch.cat(feats) if feats else torch.zeros(0, 1)
        code_t = torch.cat(codes) if codes else torch.zeros(0, dtype=torch.long)
        cooc = cached_cooccurrence(job.cooccurrence)
        try:
            model = fit_appearance(features, code_t, cooc, config)
        except CalibrationSkipped as exc:
            record = {"status": "skipped", "reason": str(exc)}
        else:
            write_safetensors(
                Path(job.workdir) / CALIBRATION_MODEL,
                model.tensors(),
                {"appearance": json.dumps(model.metadata())},
            )
            record = {"status": "fitted", "summary": model.summary(list(job.legend.names))}
    finally:
        torch.set_num_threads(threads)
    record.update(
        digest=job.digest(),
        tiles=len(tiles),
        pixels=int(features.shape[0]),
        seconds=round(time.perf_counter() - started, 3),
    )
    write_json(Path(job.workdir) / CALIBRATION_RECORD, record)
    return record


def calibrate_stage(
    job: RegionJob,
    *,
    run_task: Callable[..., Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> RegionJob:
    """Run (or resume) the calibration of ``job``; returns the job that uses the fitted model.

    Args:
        job: the region (a job that does not calibrate is returned unchanged).
        run_task: runs ``fit_region_appearance(job)`` somewhere (a Dask task); default: here.
        progress: called with (``"calibrate"``, done, total).
    """
    if not job.calibrate:
        return job
    if progress is not None:
        progress("calibrate", 0, 1)
    record = fit_region_appearance(job) if run_task is None else run_task(fit_region_appearance, job)
    if progress is not None:
        progress("calibrate", 1, 1)
    if record.get("status") != "fitted":
        log.warning(
            "region calibration skipped (%s): mapping with the per-window model alone",
            record.get("reason", "no reason recorded"),
        )
        return dataclasses.replace(job, appearance=None)
    return dataclasses.replace(job, appearance=str(Path(job.workdir) / CALIBRATION_MODEL))
