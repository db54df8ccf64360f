"""The batch job spec: a TOML file listing regions, parsed and validated whole (:func:`load_job`).

A job spec (paths relative to the spec's folder)::

    [job]
    scheduler = "local:2"          # optional: local, local:N or tcp://HOST:8786 (--scheduler wins)
    workdir = "work"               # tiles of region NAME go to work/NAME

    [defaults]                     # optional: settings shared by every region
    legend = "chesapeake"
    steps = 30                     # or preset = "paper"

    [[region]]
    name = "patch0"
    image = "../sample_tiles/naip/patch0.tif"      # or a list of files
    weak_labels = "../sample_tiles/nlcd/patch0.tif"
    out = "out/patch0.tif"

Unknown keys and missing required keys are named with their line, missing files with their key
and line. Running a spec is :mod:`geo_ppp.pipeline.jobs`.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geo_ppp.errors import ConfigError, InputError
from geo_ppp.outputs import OutputError, check_distinct
from geo_ppp.pipeline.job import RunSettings, check_products_distinct, output_paths

__all__ = ["JobSpec", "RegionSpec", "SETTING_KEYS", "load_job"]

JOB_KEYS = {"scheduler", "workdir", "overwrite", "resume"}
#: a region's settings: the legend and every :class:`RunSettings` field a spec may set (not the AOI,
#: a per-region key, nor a whole inference config)
SETTING_KEYS = {"legend"} | set(RunSettings.field_names()) - {"aoi", "config"}
REGION_KEYS = {
    "name",
    "image",
    "weak_labels",
    "out",
    "aoi",
    "probabilities",
    "vector",
    "quicklook",
} | SETTING_KEYS
REQUIRED = ("name", "image", "weak_labels", "out")
PATH_KEYS = ("image", "weak_labels")
TYPES: dict[str, type | tuple[type, ...]] = {
    "steps": int,
    "tile_size": int,
    "overlap": int,
    "batch_size": int,
    "seed": int,
    "bands": list,
    "train_steps": int,
    "method": str,
    "distill_tiles": int,
    "segmenter": str,
    "calibrate": bool,
    "overwrite": bool,
    "resume": bool,
}


@dataclass(frozen=True)
class RegionSpec:
    """One region of a job: inputs and outputs (absolute paths) and its settings."""

    name: str
    image: tuple[str, ...]
    weak_labels: tuple[str, ...]
    out: str
    aoi: str | None = None
    probabilities: str | None = None
    vector: str | None = None
    quicklook: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobSpec:
    """A validated job spec."""

    path: str
    regions: tuple[RegionSpec, ...]
    workdir: str
    scheduler: str | None = None
    overwrite: bool = False
    resume: bool = True


def _line(text: str, key: str, section: str | None = None, index: int = 0) -> int | None:
    """1-based line of ``key = ...`` inside the ``index``-th ``[section]``/``[[section]]`` (or top level)."""
    lines = text.splitlines()
    start, seen = 0, -1
    if section is not None:
        header = re.compile(rf"^\s*\[\[?\s*{re.escape(section)}\s*\]\]?\s*(#.*)?$")
        for i, ln in enumerate(lines):
            if header.match(ln):
                seen += 1
                if seen == index:
                    start = i + 1
                    break
        else:
            return None
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for i in range(start, len(lines)):
        if section is not None and i > start - 1 and re.match(r"^\s*\[", lines[i]):
            break
        if section is None and re.match(r"^\s*\[", lines[i]):
            break
        if pattern.match(lines[i]):
            return i + 1
    if section is not None:
        return start  # the header's line when the key is absent
    return None


def _where(path: Path, text: str, key: str, section: str | None = None, index: int = 0) -> str:
    line = _line(text, key, section, index)
    return f"{path}:{line}" if line else str(path)


def _check_keys(
    table: dict[str, Any], allowed: set[str], path: Path, text: str, section: str | None, index: int = 0
) -> None:
    for key in table:
        if key not in allowed:
            where = _where(path, text, key, section, index)
            raise ConfigError(
                f"{where}: unknown key {key!r}"
                + (f" in [{section}]" if section else "")
                + f"; valid keys are {sorted(allowed)}"
            )
        want = TYPES.get(key)
        if want is not None and not isinstance(table[key], want):
            raise ConfigError(
                f"{_where(path, text, key, section, index)}: {key} must be "
                f"{getattr(want, '__name__', want)}, not {table[key]!r}"
            )


def _paths(value: Any, base: Path) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    return tuple(str((base / str(v)).resolve()) if not os.path.isabs(str(v)) else str(v) for v in items)


def load_job(path: str | os.PathLike[str]) -> JobSpec:
    """Read and validate a job spec (TOML).

    Raises:
        ConfigError: not TOML, unknown keys, wrong types, missing keys, duplicate names or outputs
            (the message names the key and the line).
        InputError: input files that do not exist (named with their key and line).
    """
    path = Path(path)
    if path.is_dir():
        specs = sorted(p.name for p in path.glob("*.toml"))
        hint = f" (it holds {', '.join(specs)})" if specs else ""
        raise InputError(f"job spec {path} is a folder{hint}; pass the TOML file itself")
    if not path.is_file():
        raise InputError(f"job spec {path} does not exist")
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    base = path.parent.resolve()
    _check_keys(data, {"job", "defaults", "region"}, path, text, None)
    job = data.get("job", {})
    defaults = data.get("defaults", {})
    if not isinstance(job, dict) or not isinstance(defaults, dict):
        raise ConfigError(f"{path}: [job] and [defaults] must be tables")
    _check_keys(job, JOB_KEYS, path, text, "job")
    _check_keys(defaults, SETTING_KEYS, path, text, "defaults")
    regions_raw = data.get("region", [])
    if not isinstance(regions_raw, list) or not regions_raw:
        raise ConfigError(
            f"{path}: no [[region]] entries; add at least one region with image, weak_labels, out"
        )
    regions = []
    names: set[str] = set()
    outs: dict[str, str] = {}
    for i, raw in enumerate(regions_raw):
        _check_keys(raw, REGION_KEYS, path, text, "region", i)
        for key in REQUIRED:
            if key not in raw:
                raise ConfigError(
                    f"{_where(path, text, key, 'region', i)}: region {raw.get('name', i + 1)!r} misses the "
                    f"required key {key!r}"
                )
        name = str(raw["name"])
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigError(
                f"{_where(path, text, 'name', 'region', i)}: region name {name!r} must be a plain "
                "file name (letters, digits, _ . -)"
            )
        if name in names:
            raise ConfigError(
                f"{_where(path, text, 'name', 'region', i)}: region name {name!r} is used twice"
            )
        names.add(name)
        for key in PATH_KEYS:
            for p in _paths(raw[key], base):
                if not Path(p).exists():
                    raise InputError(
                        f"{_where(path, text, key, 'region', i)}: {key} of region {name!r}: "
                        f"{p} does not exist"
                    )
        aoi = raw.get("aoi")
        if aoi is not None and not re.fullmatch(r"[-0-9.eE,\s]+(@.+)?", str(aoi)):
            aoi = _paths(aoi, base)[0]
            if not Path(aoi).exists():
                raise InputError(
                    f"{_where(path, text, 'aoi', 'region', i)}: aoi of region {name!r}: {aoi} does not exist"
                )
        out = _paths(raw["out"], base)[0]
        if out in outs:
            raise ConfigError(
                f"{_where(path, text, 'out', 'region', i)}: regions {outs[out]!r} and {name!r} "
                f"write the same {out}"
            )
        outs[out] = name
        settings = {**defaults, **{k: v for k, v in raw.items() if k in SETTING_KEYS}}
        if isinstance(settings.get("segmenter"), str):  # a saved segmenter: relative to the spec, like inputs
            settings["segmenter"] = _paths(settings["segmenter"], base)[0]
        optional = {k: _paths(raw[k], base)[0] for k in ("probabilities", "vector", "quicklook") if k in raw}
        regions.append(
            RegionSpec(
                name,
                _paths(raw["image"], base),
                _paths(raw["weak_labels"], base),
                out,
                aoi,
                settings=settings,
                **optional,
            )
        )
    workdir = _paths(job.get("workdir", f"{path.stem}.work"), base)[0]
    # every output of every region, sidecars and work dirs included, against every other
    files: dict[str, Path] = {}
    folders: dict[str, Path] = {}
    roots: dict[str, Path] = {}
    try:
        for region in regions:  # a product inside any region's work dir (its own or another's) too
            products = output_paths(region.out, region.probabilities, region.vector, region.quicklook)
            f, d, r = check_products_distinct(
                products, Path(workdir) / region.name, removed=False, prefix=f"region {region.name!r}: "
            )
            files.update(f)
            folders.update(d)
            roots.update(r)
        check_distinct(files, folders, roots)
    except OutputError as err:
        raise OutputError(f"{path}: {err}") from None
    return JobSpec(
        str(path),
        tuple(regions),
        workdir,
        job.get("scheduler"),
        bool(job.get("overwrite", False)),
        bool(job.get("resume", True)),
    )
