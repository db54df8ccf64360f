"""Segment one image window from files (the single-window path; regions go through ``geo_ppp.pipeline``).

Reads the imagery and the weak labels (reprojected onto the image grid), runs
:func:`~geo_ppp.landcover.infer.infer_windows` with the shipped (or a given) prior and
co-occurrence matrix, and writes uint8 legend codes on the image's grid with nodata, plus the
resolved configuration as ``OUT.json``. Every input is checked before any work, and nothing is
written unless the whole run succeeds.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from geo_ppp.core.weights import Prior, load_prior
from geo_ppp.errors import ConfigError, InputError
from geo_ppp.geo.grid import Grid, pixel_size
from geo_ppp.geo.legend import Legend, load_legend
from geo_ppp.io import read_image, read_labels_on_grid, write_class_map
from geo_ppp.landcover.infer import PRESET_NAMES, PRESETS, InferConfig, WindowResult, infer_windows
from geo_ppp.landcover.prior import check_prior_legend
from geo_ppp.landcover.weak import Cooccurrence, load_cooccurrence
from geo_ppp.outputs import check_outputs, write_json

__all__ = ["DEFAULT_PRIORS", "SegmentResult", "default_infer_config", "segment_window", "sidecar_path"]

log = logging.getLogger(__name__)

#: legend -> the shipped prior used by default
DEFAULT_PRIORS = {"chesapeake": "landcover-chesapeake"}
WINDOW = 256


@dataclass
class SegmentResult:
    """What :func:`segment` returns.

    Attributes:
        codes: (H, W) uint8 legend codes on the image grid (nodata where the image has none).
        probabilities: (K, H, W) float32 class probabilities.
        grid: the image grid.
        config: the resolved configuration (as saved beside the output).
        out: the written map, if any.
    """

    codes: np.ndarray
    probabilities: np.ndarray
    grid: Grid
    config: dict[str, Any]
    out: Path | None = None


def sidecar_path(out: str | os.PathLike[str]) -> Path:
    """Where the resolved configuration of ``out`` is saved (``OUT.json``)."""
    out = Path(out)
    return out.with_name(out.name + ".json")


def default_infer_config(prior: Prior | None, preset: str = "tuned") -> InferConfig:
    """Inference settings: the prior's tuned ones, or a named preset.

    ``tuned`` is the prior's ``meta["infer"]`` (else the generic defaults); ``paper`` is the
    paper's schedule (:data:`~geo_ppp.landcover.infer.PRESETS`) on top of it.

    Raises:
        ConfigError: an unknown preset.
    """
    tuned = InferConfig()
    if prior is not None and isinstance(prior.meta.get("infer"), dict):
        tuned = InferConfig.from_dict(prior.meta["infer"])
    if preset == "tuned":
        return tuned
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; use one of {list(PRESET_NAMES)}")
    return InferConfig.from_dict({**tuned.to_dict(), **PRESETS[preset]})


def segment_window(
    image: str | os.PathLike[str],
    weak_labels: str | os.PathLike[str],
    legend: str | os.PathLike[str] | Legend = "chesapeake",
    out: str | os.PathLike[str] | None = None,
    *,
    prior: str | os.PathLike[str] | Prior | None = None,
    cooccurrence: str | os.PathLike[str] | Cooccurrence | None = None,
    config: InferConfig | None = None,
    steps: int | None = None,
    seed: int = 0,
    bands: tuple[int, ...] | None = None,
    device: torch.device | str = "cpu",
    overwrite: bool = False,
    command: str = "",
) -> SegmentResult:
    """Segment an image of at most one window (256 x 256 pixels at the prior's 4x resolution).

    Args:
        image: GeoTIFF/VRT imagery (R, G, B[, NIR]).
        weak_labels: NLCD-coded raster, any CRS and resolution.
        legend: target legend name or JSON.
        out: output GeoTIFF (``None``: return the result only).
        prior: prior name or folder (default: the legend's shipped prior).
        cooccurrence: matrix name or JSON (default: the legend's shipped one).
        config: inference settings (default: the prior's tuned ones).
        steps: override the plug-and-play steps.
        seed: seeds the inference; same seed, same map.
        bands: 1-based image bands to use, in order.
        device: ``cpu`` or ``cuda``.
        overwrite: replace an existing output.
        command: the command line, recorded in the sidecar.
    """
    legend = load_legend(legend)
    outputs = check_outputs([out, sidecar_path(out)], overwrite) if out is not None else []
    if prior is None:
        if legend.name not in DEFAULT_PRIORS:
            raise InputError(
                f"no shipped prior for legend {legend.name!r}; train one with `geo-ppp train-prior --dataset "
                "landcover` and pass --prior"
            )
        prior = DEFAULT_PRIORS[legend.name]
    prior_obj = prior if isinstance(prior, Prior) else load_prior(prior)
    check_prior_legend(prior_obj, legend)
    cooc = load_cooccurrence(cooccurrence if cooccurrence is not None else legend.name)
    cooc.check_legend(legend)
    config = config or default_infer_config(prior_obj)
    if steps is not None:
        config = config.with_pnp(steps=steps)

    data, valid, grid = read_image(image, bands)
    res = pixel_size(grid) * grid.crs.linear_units_factor[1]
    prior_res = float(prior_obj.meta.get("resolution_m", 4.0))
    factor = max(1, round(prior_res / res))
    window = int(prior_obj.meta.get("image_size", 64)) * factor
    if grid.height > window or grid.width > window:
        raise InputError(
            f"image is {grid.width} x {grid.height} pixels, more than one {window} x {window} window; "
            "segment larger images with the tiled pipeline (`geo_ppp.pipeline.segment`, `geo-ppp segment`)"
        )
    if not valid.any():
        raise InputError(f"image {image} holds no valid pixel (all nodata)")
    weak, weak_nodata = read_labels_on_grid(weak_labels, grid)

    h, w = grid.height, grid.width
    pad = (0, window - w, 0, window - h)
    img_t = F.pad(torch.from_numpy(data)[None], pad, mode="replicate")
    valid_t = F.pad(torch.from_numpy(valid)[None, None].float(), pad)
    weak_t = F.pad(torch.from_numpy(weak)[None], pad, mode="replicate")
    prior_obj = prior_obj.to(device)
    result: WindowResult = infer_windows(
        img_t,
        weak_t,
        valid_t,
        cooc,
        prior_obj,
        config,
        seeds=[seed],
        resolution_m=res,
        weak_nodata=weak_nodata,
        factor=factor,
        device=device,
    )
    probs = result.probabilities[0, :, :h, :w].float().cpu().numpy()
    index = probs.argmax(0)
    index[~valid] = -1
    codes = legend.to_codes(index)
    resolved = {
        "image": str(image),
        "weak_labels": str(weak_labels),
        "legend": legend.to_dict(),
        "prior": str(prior) if not isinstance(prior, Prior) else prior.meta.get("name"),
        "prior_meta": {k: prior_obj.meta.get(k) for k in ("name", "legend", "resolution_m", "image_size")},
        "cooccurrence": {"name": str(cooccurrence or legend.name), "source_codes": list(cooc.source_codes)},
        "infer": config.to_dict(),
        "seed": seed,
        "bands": list(bands) if bands else None,
        "device": str(device),
        "image_resolution_m": res,
        "grid": grid.to_dict(),
        "command": command,
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    if out is not None:
        write_class_map(outputs[0], codes, grid, legend, tags={"GEO_PPP_SEED": str(seed)})
        write_json(outputs[1], resolved)
        log.info("wrote %s and %s", outputs[0], outputs[1])
    return SegmentResult(codes, probs.astype(np.float32), grid, resolved, Path(out) if out else None)
