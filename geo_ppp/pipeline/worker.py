"""The tile work, run in whichever process holds a batch: per-process caches, inference, ``run_batch``.

:func:`run_batch` takes only small picklable values (a :class:`~geo_ppp.pipeline.job.RegionJob` and
its tiles), so the Dask scheduler can run it on any worker; the prior, the co-occurrence matrix and
the open readers are cached per process. :func:`run_serial` runs every batch in this process.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from geo_ppp.core.weights import Prior, load_prior
from geo_ppp.geo.grid import window_grid
from geo_ppp.io.imagery import ImageReader, ImageSpec
from geo_ppp.io.rasters import gdal_env
from geo_ppp.io.weak_labels import WeakReader, WeakSpec
from geo_ppp.landcover.appearance import AppearanceModel, load_appearance
from geo_ppp.landcover.infer import infer_windows
from geo_ppp.landcover.weak import Cooccurrence, load_cooccurrence
from geo_ppp.pipeline.job import Progress, RegionJob
from geo_ppp.pipeline.store import TileStore
from geo_ppp.pipeline.tiling import Tile, tile_seed

__all__ = [
    "TileInferrer",
    "aoi_tile_mask",
    "cached_appearance",
    "cached_cooccurrence",
    "cached_prior",
    "cells_per_pixel",
    "read_tile",
    "run_batch",
    "run_serial",
]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def cached_prior(name: str, device: str) -> Prior:
    """The prior ``name`` on ``device``, loaded once per process (a Dask worker: on its first task)."""
    return load_prior(name).to(device)


@functools.lru_cache(maxsize=8)
def cached_cooccurrence(name: str) -> Cooccurrence:
    """The co-occurrence matrix ``name``, loaded once per process."""
    return load_cooccurrence(name)


@functools.lru_cache(maxsize=4)
def _appearance(path: str, stamp: tuple[int, int]) -> AppearanceModel:
    return load_appearance(path)


def cached_appearance(path: str) -> AppearanceModel:
    """The region appearance model at ``path``, loaded once per process (and again when refitted)."""
    st = os.stat(path)
    return _appearance(path, (st.st_mtime_ns, st.st_size))


class TileInferrer:
    """Turns a batch of tiles into class probabilities with the land-cover method.

    The prior is loaded once per process and kept (a Dask worker loads it on its first task).
    """

    def __init__(self, job: RegionJob) -> None:
        self.job = job
        self.prior = cached_prior(job.prior, job.device)
        self.cooc = cached_cooccurrence(job.cooccurrence)
        self.appearance = cached_appearance(job.appearance) if job.appearance else None

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
            factor=cells_per_pixel(self.prior, job.image.work_resolution_m),
            device=dev,
            timings=timings,
            appearance=self.appearance,
        )
        probs = result.probabilities.float().cpu().numpy()
        timings["infer_total"] = timings.get("infer_total", 0.0) + time.perf_counter() - t0
        return probs


def cells_per_pixel(prior: Prior, work_resolution_m: float) -> int:
    """Working-grid pixels per prior cell (4 for a 4 m prior on 1 m imagery)."""
    return max(1, round(float(prior.meta.get("resolution_m", 4.0)) / work_resolution_m))


def read_tile(
    job: RegionJob, tile: Tile, image_reader: ImageReader, weak_reader: WeakReader
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A tile's imagery (C, T, T), validity (AOI applied) and weak codes; codes None if nothing is valid."""
    size = job.tiles.size
    data, valid = image_reader.read(tile.y, tile.x, size, size)
    mask = aoi_tile_mask(job, tile)
    if mask is not None:
        valid &= mask
    if not valid.any():
        return data, valid, None
    return data, valid, weak_reader.read(window_grid(job.image.work, tile.y, tile.x, size, size))


def aoi_tile_mask(job: RegionJob, tile: Tile) -> np.ndarray | None:
    """The AOI as a (T, T) mask of a tile (None without an AOI)."""
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
    t0 = time.perf_counter()
    images, valids, weaks, tiles = [], [], [], []
    report: dict[str, str] = {}
    for tile in batch:
        data, valid, weak = read_tile(job, tile, image_reader, weak_reader)
        if weak is None:
            if status[tile.key] is None:
                store.mark_skipped(tile)
            report[tile.key] = "skipped" if status[tile.key] is None else "resumed"
            continue
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
    total = sum(len(b) for b in batches)
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
