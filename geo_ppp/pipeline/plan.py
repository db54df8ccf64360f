"""Planning a region: check every input and output before any work, and build its job.

:func:`plan` turns inputs and a :class:`~geo_ppp.pipeline.job.RunSettings` into a
:class:`~geo_ppp.pipeline.job.RegionJob` (the prior, the legend, the co-occurrence matrix, the
imagery, the weak labels and the tile grid all checked, each error with its fix);
:func:`prepare_region` adds the outputs: it checks and locks them, plans the job and sets up the
work dir, and returns a :class:`PreparedRegion`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geo_ppp.core.memory import MEMORY_SHARE, available_memory
from geo_ppp.core.weights import Prior
from geo_ppp.errors import ConfigError, InputError, OutputExistsError
from geo_ppp.geo.legend import Legend, load_legend
from geo_ppp.io.imagery import ImageSpec, open_region
from geo_ppp.io.scan import scan_image_files
from geo_ppp.io.weak_labels import open_weak_labels
from geo_ppp.landcover.infer import InferConfig, default_infer_config
from geo_ppp.landcover.prior import DEFAULT_PRIORS, check_prior_legend
from geo_ppp.outputs import RunLock, check_name_lengths, check_outputs
from geo_ppp.pipeline.job import (
    RegionJob,
    RunSettings,
    check_products_distinct,
    default_workdir,
    output_paths,
)
from geo_ppp.pipeline.region import (
    METHODS,
    TRAIN_TILES,
    check_segmenter_bands,
    check_segmenter_fits,
    clear_method_state,
    file_digest,
)
from geo_ppp.pipeline.store import TileStore
from geo_ppp.pipeline.tiling import TileGrid
from geo_ppp.pipeline.worker import cached_cooccurrence, cached_prior, cells_per_pixel

__all__ = ["PreparedRegion", "plan", "prepare_region"]

log = logging.getLogger(__name__)

#: image pixels per prior cell the shipped land-cover priors were tuned with (4 m cells, 1 m pixels)
PIXELS_PER_CELL = 4
#: a resampling factor beyond this (either way) gets a warning
LARGE_FACTOR = 2.0


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


#: bytes of memory per pixel of each tile in a batch at inference (measured: ~450 with the shipped
#: prior on the CPU, tile 1024 against 256 at batch 1; rounded up)
TILE_BYTES_PER_PIXEL = 600


def _check_batch_memory(tile_size: int, batch: int) -> None:
    """Refuse a tile size and batch whose inference would not fit in half the available memory."""
    budget = MEMORY_SHARE * available_memory()
    need = batch * tile_size * tile_size * TILE_BYTES_PER_PIXEL
    if need <= budget:
        return
    most_batch = int(budget // (tile_size * tile_size * TILE_BYTES_PER_PIXEL))
    most_tile = int((budget / (batch * TILE_BYTES_PER_PIXEL)) ** 0.5)
    fix = f"--batch-size {most_batch}" if most_batch >= 1 else f"a --tile-size below {max(most_tile, 32)}"
    raise ConfigError(
        f"--tile-size {tile_size} with {batch} tile(s) per batch needs about {need / 2**30:.1f} GiB "
        f"(~{TILE_BYTES_PER_PIXEL} bytes per tile pixel), more than half of the "
        f"{available_memory() / 2**30:.1f} GiB available; use {fix} (the default is --tile-size 256)"
    )


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


def _check_method(s: RunSettings) -> str:
    """The job's method: ``--method``, or ``segmenter`` for ``--segmenter DIR``."""
    if s.method not in METHODS:
        raise InputError(f"unknown --method {s.method!r}; use one of {', '.join(METHODS)}")
    if s.train_steps < 1:
        raise InputError(f"--train-steps must be >= 1, got {s.train_steps}")
    if s.distill_tiles is not None:
        if s.method not in ("qr", "distill"):
            raise InputError("--distill-tiles is for --method distill or qr; add --method distill")
        if s.distill_tiles < 1:
            raise InputError(f"--distill-tiles must be >= 1, got {s.distill_tiles}")
    if s.segmenter is not None:
        if s.method != "pnp":
            raise InputError(
                f"--segmenter applies a trained segmenter; it cannot be combined with --method {s.method} "
                "(which trains one): give one of them"
            )
        return "segmenter"
    return s.method


def plan(
    image: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    weak_labels: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    legend: str | os.PathLike[str] | Legend = "chesapeake",
    *,
    workdir: str | os.PathLike[str],
    settings: RunSettings | None = None,
    **changes: Any,
) -> RegionJob:
    """Check every input and build the :class:`RegionJob` of a region (no tile is run).

    Args:
        image: the imagery (see :func:`geo_ppp.pipeline.segment`).
        weak_labels: the weak labels.
        legend: the target legend.
        workdir: where the job's tiles go.
        settings: the run's settings (default: :class:`RunSettings`'s defaults).
        changes: settings to change, by name (``prior=..., steps=2``).

    Raises:
        InputError: a bad input, with its fix.
        ConfigError: an unknown setting.
    """
    s = (settings or RunSettings()).replace(**changes)
    legend = load_legend(legend)
    method = _check_method(s)
    segmenter, digest, prior_obj = None, None, None
    if method == "segmenter":  # a saved segmenter: no prior, its own resolution
        segmenter = str(Path(s.segmenter).resolve())
        seg_meta = check_segmenter_fits(segmenter, legend)
        digest = file_digest(Path(segmenter) / "model.safetensors")
        prior_name, config = "", s.config or InferConfig()
        work_res = float(seg_meta.get("resolution_m", 1.0))
    else:
        prior_name = _resolve_prior(legend, s.prior)
        prior_obj = cached_prior(prior_name, "cpu")
        check_prior_legend(prior_obj, legend)
        try:
            config = s.config or default_infer_config(prior_obj, s.preset)
        except ConfigError as err:
            raise InputError(f"--preset: {err}") from None
        if s.steps is not None:
            config = config.with_pnp(steps=s.steps)
        work_res = float(prior_obj.meta.get("resolution_m", 4.0)) / PIXELS_PER_CELL
    cooc_name = str(s.cooccurrence) if s.cooccurrence is not None else legend.name
    if Path(cooc_name).exists():
        cooc_name = str(Path(cooc_name).resolve())
    cooc = cached_cooccurrence(cooc_name)
    cooc.check_legend(legend)
    if s.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {s.batch_size}")

    images = [image] if isinstance(image, (str, os.PathLike)) else list(image)
    aoi_geom = None
    aoi_bounds = None
    if s.aoi is not None:
        from geo_ppp.io.vectors import read_aoi

        crs = open_region(images[:1]).grid.crs
        aoi_geom = read_aoi(s.aoi, crs)
        aoi_bounds = tuple(aoi_geom.bounds)
    spec = open_region(images, bands=s.bands, work_resolution_m=work_res, aoi_bounds=aoi_bounds)
    scan_image_files(spec)  # damaged blocks and NaNs stop the run now, not when their tile comes
    ratio = spec.resolution_m / spec.work_resolution_m
    if spec.resampled:
        msg = (
            f"the imagery is at {spec.resolution_m:.2f} m; it is resampled to the "
            f"{'segmenter' if prior_obj is None else 'prior'}'s "
            f"{spec.work_resolution_m:.2f} m "
            "for inference and the map is returned on the imagery's grid"
        )
        if ratio > LARGE_FACTOR or ratio < 1 / LARGE_FACTOR:
            log.warning("%s (factor %.1f: expect coarser detail or a slower run)", msg, max(ratio, 1 / ratio))
        else:
            log.info(msg)
    if prior_obj is not None:
        _check_tile_size(prior_obj, s.tile_size, cells_per_pixel(prior_obj, spec.work_resolution_m))
    else:
        check_segmenter_bands(segmenter, seg_meta, len(spec.bands))
    tiles = TileGrid(spec.work.height, spec.work.width, s.tile_size, s.overlap, _sparse_footprints(spec))
    _check_batch_memory(s.tile_size, min(s.batch_size, len(tiles)))
    if s.distill_tiles is not None and s.distill_tiles > len(tiles):
        raise InputError(
            f"--distill-tiles {s.distill_tiles} is more than the region's {len(tiles)} tile(s); give at most "
            f"{len(tiles)}, or leave it out to sample {min(TRAIN_TILES, len(tiles))}"
        )
    weak = open_weak_labels(
        [weak_labels] if isinstance(weak_labels, (str, os.PathLike)) else list(weak_labels),
        spec.work,
        attribute=s.label_attribute,
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
        seed=s.seed,
        batch_size=s.batch_size,
        workdir=str(workdir),
        device=s.device,
        aoi_wkt=aoi_geom.wkt if aoi_geom is not None else None,
        method=method,
        train_steps=s.train_steps,
        distill_tiles=s.distill_tiles if method in ("qr", "distill") else None,
        segmenter=segmenter,
        segmenter_digest=digest,
        # the calibration feeds plug-and-play (and distill's teacher); a segmenter never sees it
        calibrate=s.calibrate and method in ("pnp", "distill"),
    )


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
    save_segmenter: Path | None = None

    def release(self) -> None:
        """Give up the run's locks (outputs and work dir)."""
        if self.lock is not None:
            self.lock.release()

    def setup(self) -> None:
        """Set up the work dir (refuses one that holds another run's tiles unless ``resume`` is off)."""
        TileStore(self.job.workdir, self.job.fingerprint(), resume=self.resume)
        if not self.resume:  # a region-level method's teacher tiles and segmenter go with the tiles
            clear_method_state(self.job.workdir)


def prepare_region(
    image: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    weak_labels: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    legend: str | os.PathLike[str] | Legend,
    out: str | os.PathLike[str],
    *,
    settings: RunSettings | None = None,
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
    save_segmenter: str | os.PathLike[str] | None = None,
) -> PreparedRegion:
    """Check outputs and inputs, plan the job and set up its work dir (see :func:`segment`).

    ``before_workdir(job)``, if given, runs between planning and setting up the work dir (a check
    that must fail before anything is written, such as reaching the Dask scheduler). With
    ``setup_workdir=False`` nothing is written at all; call :meth:`PreparedRegion.setup` later.
    With ``lock`` (the default) the outputs and the work dir are locked against other runs until
    :meth:`PreparedRegion.release` (a second run stops at once, naming the first). ``save_segmenter``
    (a folder, checked by the caller) is locked with them.
    """
    paths = output_paths(out, probabilities, vector, quicklook)
    keep_workdir = workdir is not None
    workdir = Path(workdir) if workdir is not None else default_workdir(paths["map"])
    seg_out = Path(save_segmenter) if save_segmenter is not None else None
    named = {
        "--out": paths["map"],
        **{f"--{k}": paths[k] for k in ("probabilities", "vector", "quicklook") if k in paths},
    }
    if keep_workdir:
        named["--workdir"] = workdir
    if seg_out is not None:
        named["--save-segmenter"] = seg_out
    # a COG's scratch raster is ``..NAME.scratch.XXXXXXXX.tmp.tif``: 12 characters beyond its lock's
    check_name_lengths(named, {"--out": 12, "--probabilities": 12})
    check_products_distinct(paths, workdir, removed=not keep_workdir)
    locked = [*paths.values(), workdir, *([seg_out] if seg_out is not None else [])]
    makes = [workdir, *([seg_out] if seg_out is not None else [])]  # folders made with their parents
    if create_folders:
        makes += list(paths.values())
    # the products' folders first: the lock below makes the work dir's folder, which would otherwise
    # hide a missing --out folder (the run must refuse it, not create it)
    check_outputs([p for k, p in paths.items() if k != "aux"], True, create_folders)
    run_lock = RunLock(locked, command, makes).__enter__() if lock else None
    try:
        interrupted: OutputExistsError | None = None
        try:
            check_outputs([p for k, p in paths.items() if k != "aux"], overwrite, create_folders)
        except OutputExistsError as err:
            # a map without its configuration (written last) beside a work dir: a publish that was
            # stopped; this run may complete it if it is the same run (checked once planned)
            if not (
                paths["map"].exists()
                and not paths["config"].exists()
                and resume
                and (workdir / "manifest.json").exists()
            ):
                raise
            interrupted = err
        if lock:
            _remove_stale_scratch(paths.values())
        existed = frozenset(p for p in paths.values() if p.exists())
        job = plan(image, weak_labels, legend, workdir=workdir, settings=settings)
        if interrupted is not None:
            if not TileStore.holds_run(workdir, job.fingerprint()):
                raise interrupted
            log.warning(
                "%s has no %s: its publishing was stopped; this run is the same run (the work dir %s "
                "holds its tiles), so it publishes the map and its products again",
                paths["map"],
                paths["config"].name,
                workdir,
            )
            overwrite = True
        if before_workdir is not None:
            before_workdir(job)
        if seg_out is not None and seg_out.exists():
            existed |= {seg_out}
        prep = PreparedRegion(
            job, paths, keep_workdir, command, resume, overwrite, existed, run_lock, seg_out
        )
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
