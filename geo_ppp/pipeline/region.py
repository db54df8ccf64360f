"""Region-level methods: a segmenter trained on the region itself, then applied tile by tile.

``--method qr`` (Rolf et al.'s implicit posterior): the segmenter of
:mod:`geo_ppp.landcover.segmenter` is trained on crops of up to :data:`REGION_TILES` tiles of the
region (held in memory: bounded whatever the region's size), supervised by the weak labels alone;
then every tile is mapped by one forward pass and blended like plug-and-play tiles. The trained
segmenter is kept in the work dir (``WORKDIR/segmenter``), so a resumed run does not train again.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geo_ppp.errors import InputError
from geo_ppp.geo.grid import window_grid
from geo_ppp.io.imagery import ImageReader
from geo_ppp.io.rasters import gdal_env
from geo_ppp.io.weak_labels import WeakReader
from geo_ppp.landcover.segmenter import (
    SegmenterConfig,
    feature_statistics,
    load_segmenter,
    random_crops,
    save_segmenter,
    train_segmenter,
)
from geo_ppp.landcover.weak import weak_distribution
from geo_ppp.pipeline.job import RegionJob
from geo_ppp.pipeline.worker import cached_cooccurrence

__all__ = ["METHODS", "REGION_TILES", "SegmenterInfer", "region_inferrer"]

log = logging.getLogger(__name__)

#: how tiles are inferred: plug-and-play per window, or a segmenter trained on the region (QR)
METHODS = ("pnp", "qr")
#: tiles of a region the segmenter trains on (a random sample of the tiles holding valid pixels)
REGION_TILES = 64


def _training_tiles(job: RegionJob, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Imagery (N, C, T, T), weak distributions (N, K, T, T) and validity (N, 1, T, T) of sampled tiles."""
    cooc = cached_cooccurrence(job.cooccurrence)
    size = job.tiles.size
    order = np.random.default_rng(seed).permutation(len(job.tiles.tiles))
    images, targets, valids = [], [], []
    with gdal_env(), ImageReader(job.image) as image_reader, WeakReader(job.weak) as weak_reader:
        for i in order:
            tile = job.tiles.tiles[int(i)]
            data, valid = image_reader.read(tile.y, tile.x, size, size)
            if valid.mean() < 0.5:
                continue
            weak = weak_reader.read(window_grid(job.image.work, tile.y, tile.x, size, size))
            dist = weak_distribution(torch.from_numpy(weak), cooc, 0.0, nodata=job.weak.nodata)[0]
            images.append(torch.from_numpy(data))
            targets.append(dist.float())
            valids.append(torch.from_numpy(valid)[None].float())
            if len(images) >= REGION_TILES:
                break
    if not images:
        raise InputError(
            "no tile of the region is at least half valid imagery; --method qr has nothing to learn from"
        )
    return torch.stack(images), torch.stack(targets), torch.stack(valids)


def train_region_segmenter(job: RegionJob, folder: Path) -> Path:
    """Train the QR segmenter of a region into ``folder`` (kept: a rerun loads it instead)."""
    if (folder / "config.json").exists():
        log.info("segmenter found in %s: not trained again", folder)
        return folder
    images, targets, valids = _training_tiles(job, job.seed)
    mean, std = feature_statistics(images, valids)
    config = SegmenterConfig(in_channels=len(mean), classes=targets.shape[1], steps=job.train_steps)
    model = train_segmenter(random_crops(images, targets, valids), config, mean, std, seed=job.seed)
    meta = {
        "legend": job.legend.name,
        "codes": list(job.legend.codes),
        "bands": list(job.image.bands),
        "resolution_m": job.image.work_resolution_m,
        "method": "qr",
        "tiles": len(images),
    }
    save_segmenter(folder, model, meta)
    return folder


@functools.lru_cache(maxsize=4)
def _cached_segmenter(folder: str) -> Any:
    return load_segmenter(folder)[0]


class SegmenterInfer:
    """A tile ``infer`` (:class:`~geo_ppp.pipeline.worker.TileInferrer`'s signature) running a segmenter.

    Picklable (it holds the folder): a Dask worker loads the segmenter once.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = str(folder)

    def __call__(
        self, image: np.ndarray, valid: np.ndarray, weak: np.ndarray, seeds: list[int], timings: dict
    ) -> np.ndarray:
        """(B, C, T, T) imagery -> (B, K, T, T) float32 probabilities."""
        return (
            _cached_segmenter(self.folder).probabilities(torch.from_numpy(image)).numpy().astype(np.float32)
        )


def region_inferrer(job: RegionJob) -> SegmenterInfer | None:
    """The ``infer`` of a job's method: None for plug-and-play, a trained segmenter for ``qr``."""
    if job.method == "pnp":
        return None
    if job.method != "qr":
        raise InputError(f"unknown --method {job.method!r}; use one of {METHODS}")
    return SegmenterInfer(train_region_segmenter(job, Path(job.workdir) / "segmenter"))
