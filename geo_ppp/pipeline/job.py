"""The job value of a region: what a worker needs to run its tiles, what a run writes, and the settings.

:class:`RegionJob` is small, frozen and picklable, so the Dask scheduler can ship it anywhere;
:class:`RunSettings` carries every setting from the CLI (or a job spec) to the tiles in one frozen
value; :func:`output_paths` and :func:`check_products_distinct` name and check every product of a
run, and :func:`resolved_config` is what is saved beside the map.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from geo_ppp.errors import ConfigError
from geo_ppp.geo.legend import Legend
from geo_ppp.io.imagery import ImageSpec
from geo_ppp.io.weak_labels import WeakSpec
from geo_ppp.landcover.appearance import APPEARANCE_VERSION, AppearanceConfig
from geo_ppp.landcover.infer import InferConfig
from geo_ppp.landcover.segmenter import SEGMENTER_VERSION
from geo_ppp.outputs import OutputError, check_distinct
from geo_ppp.pipeline.tiling import Tile, TileGrid

__all__ = [
    "PRODUCT_LABELS",
    "Progress",
    "RegionJob",
    "RegionResult",
    "RunObserver",
    "RunSettings",
    "as_observer",
    "check_products_distinct",
    "default_workdir",
    "stage_tiles",
    "output_paths",
    "resolved_config",
]

#: ``progress(done, total, tile, status)``, status one of ran / skipped / resumed
Progress = Callable[[int, int, Tile, str], None]


class RunObserver:
    """What a run reports, in order: each region planned, each tile done, each region published.

    ``progress=`` of :func:`geo_ppp.pipeline.segment` and :func:`geo_ppp.pipeline.jobs.run_job` takes
    one of these (override what you need) or a plain :data:`Progress` callable (tiles only). Every
    region is planned, with its tile count, before the first tile runs.
    """

    def planned(self, job: RegionJob, name: str | None = None) -> None:
        """A region was checked and planned (``name``: its name in a batch job)."""

    def tile(self, done: int, total: int, tile: Tile, status: str) -> None:
        """A tile finished: ``done`` of ``total`` (over every region), ``ran``/``skipped``/``resumed``."""

    def stage(self, name: str, done: int, total: int) -> None:
        """A region-level method's stage moved, ``done`` of ``total``.

        Stages: ``calibrate`` (0 then 1: the region appearance model), ``teacher`` tiles
        (plug-and-play on the sample a ``distill`` segmenter learns from) and ``train`` steps (``qr``
        and ``distill``). The ``--progress jsonl`` schema: ``docs/progress-jsonl.md``.
        """

    def published(self, result: RegionResult, name: str | None = None) -> None:
        """A region's map and products were written."""

    def close(self) -> None:
        """The run ended, done or not (called by whoever made the observer, not by the pipeline)."""


class _TileCallback(RunObserver):
    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def tile(self, done: int, total: int, tile: Tile, status: str) -> None:
        self.progress(done, total, tile, status)


def stage_tiles(observer: RunObserver, name: str = "teacher") -> Progress:
    """A :data:`Progress` reporting tiles of a method's stage (the teacher's) as ``observer.stage``."""

    def on_tile(done: int, total: int, tile: Tile, status: str) -> None:
        observer.stage(name, done, total)

    return on_tile


def as_observer(progress: RunObserver | Progress | None) -> RunObserver:
    """A :class:`RunObserver` for ``progress`` (a callable gets the tile events; None gets nothing)."""
    if isinstance(progress, RunObserver):
        return progress
    if progress is None:
        return RunObserver()
    return _TileCallback(progress)


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
        method: ``pnp`` (plug-and-play per tile), ``qr`` or ``distill`` (a segmenter trained on the
            region), or ``segmenter`` (a saved segmenter, ``segmenter``).
        train_steps: training steps of a region-trained segmenter.
        distill_tiles: tiles a region-trained segmenter learns from (None: the default sample).
        segmenter: a saved segmenter's folder (``method="segmenter"``).
        segmenter_digest: the SHA-1 of its weights (a retrained segmenter is another run).
        calibrate: fit the region appearance model before the tiles (plug-and-play and distill's
            teacher use it; :mod:`geo_ppp.pipeline.calibrate`).
        appearance: the fitted model's file, set by the calibration stage (None: no model, either
            before the stage or because the region could not be calibrated).
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
    method: str = "pnp"
    train_steps: int = 1000
    distill_tiles: int | None = None
    segmenter: str | None = None
    segmenter_digest: str | None = None
    calibrate: bool = False
    appearance: str | None = None

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
            # (plug-and-play work dirs made before --method existed stay resumable)
            **({"method": self.method, **self.method_settings()} if self.method != "pnp" else {}),
            # (work dirs made before the calibration existed, or without it, stay resumable)
            **({"calibrate": self.calibration_settings()} if self.calibrate else {}),
        }

    def digest(self) -> str:
        """A short SHA-1 of :meth:`fingerprint` (task keys, and what a trained segmenter belongs to)."""
        text = json.dumps(self.fingerprint(), sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def calibration_settings(self) -> dict[str, Any]:
        """The region calibration's settings (its seed is the run's)."""
        return {"version": APPEARANCE_VERSION, **AppearanceConfig(seed=self.seed).to_dict()}

    def method_settings(self) -> dict[str, Any]:
        """The settings of a region-level method (empty for plug-and-play)."""
        if self.method in ("qr", "distill"):
            return {"train_steps": self.train_steps, "distill_tiles": self.distill_tiles,
                    "segmenter_version": SEGMENTER_VERSION}  # fmt: skip
        if self.method == "segmenter":
            return {"segmenter": self.segmenter, "segmenter_digest": self.segmenter_digest}
        return {}


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


@dataclass(frozen=True)
class RunSettings:
    """How a region is segmented: every setting between the inputs and the outputs, in one frozen value.

    The CLI flags of ``geo-ppp segment``, the keyword arguments of :func:`geo_ppp.pipeline.segment`
    and the ``[settings]`` of a job spec all become one of these; :func:`geo_ppp.pipeline.plan` turns
    it into a :class:`RegionJob`. See :func:`geo_ppp.pipeline.segment` for each field.
    """

    prior: str | None = None
    cooccurrence: str | None = None
    config: InferConfig | None = None
    steps: int | None = None
    preset: str = "tuned"
    tile_size: int = 256
    overlap: int = 32
    batch_size: int = 8
    seed: int = 0
    bands: tuple[int, ...] | None = None
    aoi: str | None = None
    label_attribute: str | None = None
    device: str = "cpu"
    method: str = "pnp"
    train_steps: int = 1000
    distill_tiles: int | None = None
    segmenter: str | None = None
    calibrate: bool = True

    def __post_init__(self) -> None:
        for name in ("prior", "cooccurrence", "aoi", "segmenter"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(int(b) for b in self.bands) or None)
        object.__setattr__(self, "device", str(self.device))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= 2**32 - 1:
            raise ConfigError(f"seed must be a whole number in 0..{2**32 - 1}, got {self.seed!r}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The settings' names."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> RunSettings:
        """A copy with ``changes``; an unknown name is a :class:`~geo_ppp.errors.ConfigError`."""
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown}; the settings are {sorted(self.field_names())}")
        return dataclasses.replace(self, **changes)


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
        removed: the work dir is removed after the run (the default one); a kept one is the run's
            too (its tiles, teacher, segmenter and manifest are rewritten or cleared): either way no
            product may lie inside it.
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
    folders = {prefix + "the work dir": workdir}
    check_distinct(files, folders, roots)
    return files, folders, roots


def default_workdir(out: str | os.PathLike[str]) -> Path:
    """The work dir of a run that names none: ``OUT.work`` beside the map (removed after success)."""
    out = Path(out)
    return out.with_name(out.name + ".work")


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


#: the calibration stage's record in the work dir (what it fitted, or why it could not)
CALIBRATION_RECORD = "appearance.json"
#: the fitted region appearance model in the work dir
CALIBRATION_MODEL = "appearance.safetensors"


def calibration_record(job: RegionJob) -> dict[str, Any] | None:
    """What the calibration stage recorded for ``job`` (None when the run does not calibrate)."""
    if not job.calibrate:
        return None
    try:
        record = json.loads((Path(job.workdir) / CALIBRATION_RECORD).read_text())
    except (OSError, ValueError):
        return {"status": "not run"}
    record.pop("digest", None)
    return record


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
        "method": job.method,
        **job.method_settings(),
        "calibration": calibration_record(job),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
