"""Region-level methods: a segmenter trained on the region itself, then applied tile by tile.

- ``--method qr`` (Rolf et al.'s implicit posterior): the segmenter of
  :mod:`geo_ppp.landcover.segmenter` is trained on a sample of the region's tiles, supervised by the
  weak labels alone.
- ``--method distill`` (the paper's "U-Net trained on inferred patches"): plug-and-play runs on a
  sample of the region's tiles (``--distill-tiles``; the teacher), and the segmenter learns the
  teacher's posteriors as soft targets, weighted by their confidence.
- ``--segmenter DIR``: a saved segmenter maps the region; nothing is trained.

Then every tile is mapped by one forward pass and blended like plug-and-play tiles. Training streams
its tiles: each sampled tile is read once into ``WORKDIR/segmenter.train/`` (one ``.npy`` per array)
and crops are cut from those files, so memory does not grow with the sample. Everything is kept in the
work dir, so a resumed run skips what finished: the teacher's tiles (``WORKDIR/teacher/``, a
:class:`~geo_ppp.pipeline.store.TileStore`), the training (a checkpoint every 100 steps) and the
segmenter (``WORKDIR/segmenter/``).

Where the tiles run is the caller's (:func:`geo_ppp.pipeline.segment`): in this process or as Dask
tasks; the training runs where ``train`` sends it (in this process, or on a Dask worker).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geo_ppp.core.atomic import atomic_folder
from geo_ppp.errors import InputError
from geo_ppp.geo.grid import window_grid
from geo_ppp.io.imagery import ImageReader
from geo_ppp.io.rasters import gdal_env
from geo_ppp.io.weak_labels import WeakReader
from geo_ppp.landcover.segmenter import (
    FeatureStatistics,
    SegmenterConfig,
    load_segmenter,
    save_segmenter,
    train_segmenter,
)
from geo_ppp.landcover.weak import weak_distribution
from geo_ppp.pipeline.job import CALIBRATION_MODEL, CALIBRATION_RECORD, RegionJob
from geo_ppp.pipeline.store import TileStore
from geo_ppp.pipeline.tiling import Tile
from geo_ppp.pipeline.worker import aoi_tile_mask, cached_cooccurrence

__all__ = [
    "METHODS",
    "TRAIN_TILES",
    "SegmenterInfer",
    "check_segmenter_bands",
    "check_segmenter_fits",
    "clear_method_state",
    "is_segmenter_folder",
    "file_digest",
    "method_inferrer",
    "sample_tiles",
    "teacher_job",
    "train_region_segmenter",
    "training_tiles",
]

log = logging.getLogger(__name__)

#: how tiles are inferred: plug-and-play per window, a segmenter trained on the region from the weak
#: labels (QR), or one trained on plug-and-play's posteriors over a sample of the region (distill)
METHODS = ("pnp", "qr", "distill")
#: tiles a region-trained segmenter learns from by default (``--distill-tiles``)
TRAIN_TILES = 64
#: a sampled tile with fewer valid pixels than this (a 32 x 32 crop's worth) is left out of training
MIN_VALID_PIXELS = 1024


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-1 of a file (a segmenter's weights: a retrained segmenter is a different one)."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def clear_method_state(workdir: str | os.PathLike[str]) -> None:
    """Remove a work dir's teacher tiles, training cache, segmenter and calibration (``--no-resume``)."""
    for name in ("teacher", "segmenter", "segmenter.train"):
        shutil.rmtree(Path(workdir) / name, ignore_errors=True)
    for name in (CALIBRATION_RECORD, CALIBRATION_MODEL):
        (Path(workdir) / name).unlink(missing_ok=True)


def _belongs(folder: Path, digest: str, record: Path) -> bool:
    """Whether ``folder`` was made by the run ``digest``; one made by another run is removed."""
    try:
        if record.read_text().strip() == digest:
            return True
    except OSError:
        if not folder.exists():
            return False
    log.info("%s was made by another run in this work dir: made again", folder)
    shutil.rmtree(folder, ignore_errors=True)
    return False


def training_tiles(job: RegionJob) -> list[Tile]:
    """The seeded sample of tiles a segmenter learns from, in row-major order.

    Tiles that touch an image file come first (a scattered region's empty tiles are not sampled);
    ``job.distill_tiles`` of them (default :data:`TRAIN_TILES`, at most all).
    """
    return sample_tiles(job, job.distill_tiles or TRAIN_TILES)


def sample_tiles(job: RegionJob, count: int) -> list[Tile]:
    """A seeded sample of ``count`` of the region's tiles (at most all), in row-major order.

    Tiles that touch an image file are sampled (a scattered region's empty tiles are not), all tiles
    when none does.
    """
    tiles = job.tiles.tiles
    boxes = job.image.footprint_boxes()
    size = job.tiles.size

    def touches(t: Tile) -> bool:
        return any(t.y < y1 and t.y + size > y0 and t.x < x1 and t.x + size > x0 for y0, x0, y1, x1 in boxes)

    candidates = [t for t in tiles if touches(t)] or list(tiles)
    n = min(count, len(candidates))
    pick = np.random.default_rng(job.seed).permutation(len(candidates))[:n]
    return sorted(candidates[int(i)] for i in pick)


def teacher_job(job: RegionJob) -> RegionJob:
    """The plug-and-play job whose tiles teach a ``distill`` segmenter (work dir ``WORKDIR/teacher``)."""
    return dataclasses.replace(
        job, method="pnp", train_steps=1000, distill_tiles=None, segmenter=None,
        workdir=str(Path(job.workdir) / "teacher"),
    )  # fmt: skip


def _cache_tiles(job: RegionJob, tiles: list[Tile], folder: Path, teacher: TileStore | None) -> list[Tile]:
    """Read each sampled tile once into ``folder`` (image, valid, weak codes); the tiles kept."""
    folder.mkdir(parents=True, exist_ok=True)
    size = job.tiles.size
    kept = []
    readers: tuple[ImageReader, WeakReader] | None = None
    try:
        for tile in tiles:
            if teacher is not None and teacher.status(tile) != "done":
                continue  # the teacher found no valid pixel there
            marker = folder / f"{tile.key}.ok"
            if not marker.exists():
                if readers is None:
                    readers = (ImageReader(job.image), WeakReader(job.weak))
                data, valid = readers[0].read(tile.y, tile.x, size, size)
                mask = aoi_tile_mask(job, tile)
                if mask is not None:
                    valid &= mask
                weak = readers[1].read(window_grid(job.image.work, tile.y, tile.x, size, size))
                # float16 holds 0-255 imagery exactly where it is integer (NAIP) and to 1/8 otherwise
                image16, valid8 = data.astype(np.float16), valid.astype(np.uint8)
                for name, arr in (("image", image16), ("valid", valid8), ("weak", weak)):
                    np.save(folder / f"{tile.key}.{name}.npy", arr, allow_pickle=False)
                marker.write_text(f"{int(valid.sum())}\n")
            if int(marker.read_text()) >= MIN_VALID_PIXELS:
                kept.append(tile)
    finally:
        if readers is not None:
            readers[0].close()
            readers[1].close()
    return kept


class TileCrops:
    """The ``crops`` of :func:`~geo_ppp.landcover.segmenter.train_segmenter` over cached tiles (streamed).

    Each crop is cut from the tile files (memory-mapped), so memory stays that of one batch.
    """

    def __init__(self, job: RegionJob, tiles: list[Tile], cache: Path, teacher: TileStore | None) -> None:
        self.job, self.tiles, self.cache, self.teacher = job, tiles, cache, teacher
        self.cooc = cached_cooccurrence(job.cooccurrence)

    def _load(self, tile: Tile, name: str) -> np.ndarray:
        return np.load(self.cache / f"{tile.key}.{name}.npy", mmap_mode="r", allow_pickle=False)

    def __call__(self, gen: torch.Generator, batch: int, crop: int) -> tuple[torch.Tensor, ...]:
        size = self.job.tiles.size
        crop = min(crop, size)
        which = torch.randint(0, len(self.tiles), (batch,), generator=gen).tolist()
        ys = torch.randint(0, size - crop + 1, (batch,), generator=gen).tolist()
        xs = torch.randint(0, size - crop + 1, (batch,), generator=gen).tolist()
        images, valids, weaks, teachers = [], [], [], []
        for i, y, x in zip(which, ys, xs, strict=True):
            tile, cut = self.tiles[i], (slice(y, y + crop), slice(x, x + crop))
            images.append(np.array(self._load(tile, "image")[(slice(None), *cut)], dtype=np.float32))
            valids.append(np.array(self._load(tile, "valid")[cut]))
            weaks.append(np.array(self._load(tile, "weak")[cut]))
            if self.teacher is not None:
                teachers.append(np.array(self.teacher.load(tile)[(slice(None), *cut)], dtype=np.float32))
        valid = torch.from_numpy(np.stack(valids))[:, None].float()
        weak = weak_distribution(
            torch.from_numpy(np.stack(weaks)), self.cooc, 0.0, nodata=self.job.weak.nodata
        ).float()
        target = torch.from_numpy(np.stack(teachers)) if teachers else weak
        return torch.from_numpy(np.stack(images)), target, valid, weak


def train_region_segmenter(
    job: RegionJob,
    folder: str | os.PathLike[str],
    tiles: list[Tile],
    teacher: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """Train the segmenter of a region into ``folder`` (kept: a rerun loads it instead).

    Args:
        job: the region (``qr`` or ``distill``).
        folder: where the segmenter is written (``WORKDIR/segmenter``).
        tiles: the sampled tiles (:func:`training_tiles`).
        teacher: the teacher's work dir (``distill``), or None (``qr``: the weak labels teach).
        progress: called with (step, steps).

    Runs anywhere the work dir is readable (a Dask worker too); single-threaded, so the weights do
    not depend on the machine's core count (torch's sums do).
    """
    folder = Path(folder)
    digest = job.digest()
    if _belongs(folder, digest, folder / "run.txt") and (folder / "config.json").exists():
        log.info("segmenter found in %s: not trained again", folder)
        return str(folder)
    train_dir = folder.with_name(folder.name + ".train")
    if not _belongs(train_dir, digest, train_dir / "run.txt"):
        train_dir.mkdir(parents=True)
        (train_dir / "run.txt").write_text(digest + "\n")
    store = TileStore.open_existing(teacher) if teacher is not None else None
    with gdal_env():
        kept = _cache_tiles(job, tiles, train_dir / "tiles", store)
    if not kept:
        raise InputError(
            f"no sampled tile of the region holds {MIN_VALID_PIXELS} valid image pixels; --method "
            f"{job.method} has nothing to learn from (check the imagery's nodata and the AOI, raise "
            "--distill-tiles, or use --method pnp for so small a region)"
        )
    crops = TileCrops(job, kept, train_dir / "tiles", store)
    stats = FeatureStatistics()
    for tile in kept:
        image, valid = crops._load(tile, "image"), crops._load(tile, "valid")
        image32 = torch.from_numpy(np.array(image, np.float32))
        stats.add(image32[None], torch.from_numpy(np.array(valid))[None, None])
    mean, std = stats.result()
    config = SegmenterConfig(
        in_channels=len(mean), classes=job.legend.num_classes, steps=job.train_steps,
        loss="qr" if job.method == "qr" else "distill",
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        device = job.device if job.device.startswith("cuda") else "cpu"
        model = train_segmenter(
            crops, config, mean, std, seed=job.seed, progress=progress,
            checkpoint=train_dir / "state.pt", device=device,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    meta = {
        "legend": job.legend.name,
        "codes": list(job.legend.codes),
        "class_names": list(job.legend.names),
        "colors": [list(c) for c in job.legend.colors],
        "bands": list(job.image.bands),
        "resolution_m": job.image.work_resolution_m,
        "features": ["red", "green", "blue", "nir", "ndvi"][: len(mean)],
        "standardisation": {"mean": mean.tolist(), "std": std.tolist()},
        "method": job.method,
        "tiles": [t.key for t in kept],
        "teacher": {"prior": job.prior, "infer": job.config.to_dict()} if job.method == "distill" else None,
        "data": {"image": list(job.image.paths), "weak_labels": list(job.weak.paths)},
        "seed": job.seed,
    }
    save_segmenter(folder, model, meta)
    (folder / "run.txt").write_text(digest + "\n")  # written last: a segmenter without it is retrained
    shutil.rmtree(train_dir, ignore_errors=True)
    return str(folder)


@functools.lru_cache(maxsize=4)
def _cached_segmenter(folder: str, digest: str, device: str) -> Any:
    return load_segmenter(folder)[0].to(device)


class SegmenterInfer:
    """A tile ``infer`` (:class:`~geo_ppp.pipeline.worker.TileInferrer`'s signature) running a segmenter.

    Picklable (it holds the folder and the weights' digest): a Dask worker loads the segmenter once,
    and again only if the weights changed. On ``cuda`` a batch runs at once under bf16 autocast.
    """

    def __init__(self, folder: str | os.PathLike[str], device: str = "cpu") -> None:
        self.folder = str(folder)
        self.device = device
        self.digest = file_digest(Path(folder) / "model.safetensors")

    def __call__(
        self, image: np.ndarray, valid: np.ndarray, weak: np.ndarray, seeds: list[int], timings: dict
    ) -> np.ndarray:
        """(B, C, T, T) imagery -> (B, K, T, T) float32 probabilities."""
        model = _cached_segmenter(self.folder, self.digest, self.device)
        t0 = time.perf_counter()
        probs = model.probabilities(torch.from_numpy(image).to(self.device)).cpu().numpy()
        timings["segmenter"] = timings.get("segmenter", 0.0) + time.perf_counter() - t0
        return probs


def check_segmenter_fits(folder: str | os.PathLike[str], legend: Any) -> dict[str, Any]:
    """Load a saved segmenter's metadata and check it maps this legend.

    Returns:
        Its metadata, with ``in_bands``: the image bands it reads (for :func:`check_segmenter_bands`).

    Raises:
        InputError: not a segmenter, a damaged one, or one for another legend.
    """
    model, meta = load_segmenter(folder)
    missing = [k for k in ("legend", "codes") if k not in meta]
    if missing:
        raise InputError(
            f"segmenter {folder}: its config.json has no {' and no '.join(missing)} in its 'meta' (which "
            "legend it maps is unknown); re-save it with --save-segmenter"
        )
    if list(meta["codes"]) != list(legend.codes) or model.config.classes != legend.num_classes:
        raise InputError(
            f"--segmenter {folder} maps the legend {meta.get('legend')!r} (codes {meta.get('codes')}), not "
            f"{legend.name!r} (codes {list(legend.codes)}); pass --legend {meta.get('legend')} or a "
            "segmenter trained for this legend"
        )
    return {**meta, "in_bands": 3 if model.config.in_channels < 5 else 4}


def check_segmenter_bands(folder: str | os.PathLike[str], meta: dict[str, Any], bands: int) -> None:
    """Refuse imagery of another band count than the segmenter's (``meta``: from check_segmenter_fits)."""
    if bands != meta["in_bands"]:
        raise InputError(
            f"--segmenter {folder} was trained on {meta['in_bands']}-band imagery (bands "
            f"{meta.get('bands')}); this imagery gives {bands} bands. Choose them with --bands, or train a "
            "segmenter on such imagery"
        )


def method_inferrer(
    job: RegionJob,
    run_tiles: Callable[[RegionJob, list[list[Tile]]], dict[str, str]],
    *,
    train: Callable[..., str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> SegmenterInfer | None:
    """The tile ``infer`` of a job's method (None for plug-and-play), after teaching and training it.

    Args:
        job: the region.
        run_tiles: runs plug-and-play batches of a job (the teacher's), in this process or on Dask.
        train: calls :func:`train_region_segmenter` with its arguments somewhere (default: here).
        progress: called with (stage, done, total): ``teacher`` tiles, ``train`` steps.
    """
    if job.method == "pnp":
        return None
    if job.segmenter is not None:
        return SegmenterInfer(job.segmenter, job.device)
    folder = Path(job.workdir) / "segmenter"
    if not _belongs(folder, job.digest(), folder / "run.txt"):
        tiles = training_tiles(job)
        teacher_dir = None
        if job.method == "distill":
            tj = teacher_job(job)
            fingerprint = {**tj.fingerprint(), "sampled": [t.key for t in tiles]}
            TileStore(tj.workdir, fingerprint, resume=True)
            batches = [tiles[i : i + job.batch_size] for i in range(0, len(tiles), job.batch_size)]
            if progress is not None:
                progress("teacher", 0, len(tiles))
            run_tiles(tj, batches)
            teacher_dir = tj.workdir
        step = None if progress is None else functools.partial(progress, "train")
        if train is None:
            train_region_segmenter(job, folder, tiles, teacher_dir, step)
        else:
            train(train_region_segmenter, job, str(folder), tiles, teacher_dir)
    return SegmenterInfer(folder, job.device)


def is_segmenter_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds only a saved segmenter (what ``--save-segmenter --overwrite`` may replace)."""
    folder = Path(folder)
    try:
        record = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    names = {p.name for p in folder.iterdir()}
    allowed = {"config.json", "model.safetensors", "run.txt"}
    return record.get("format") == "geo_ppp.segmenter" and names <= allowed


def publish_segmenter(
    source: str | os.PathLike[str], dest: str | os.PathLike[str], extra: dict[str, Any]
) -> None:
    """Copy a trained segmenter to ``dest`` (``--save-segmenter``) with ``extra`` metadata, atomically.

    The folder appears complete or not at all; an existing ``dest`` is replaced (the caller checked
    ``--overwrite`` before any work).
    """
    model, meta = load_segmenter(source)
    with atomic_folder(dest) as tmp:
        save_segmenter(tmp, model, {**meta, **extra})
