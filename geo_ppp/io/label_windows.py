"""Label windows for the land-cover prior, read from label rasters with torchgeo.

Label rasters (any CRS, one coding per source) are indexed by a torchgeo ``RasterDataset``
(:func:`label_dataset`) and windows are drawn by a ``RandomGeoSampler``
(:func:`sample_label_windows`). A window of ``window_m`` metres is read at the raster's own
resolution, remapped to the legend, and pooled to ``size`` x ``size`` cells by majority (the paper
samples 256 m at 1 m and downsamples x4 by nearest; majority keeps thin classes more faithfully).
Windows with more than ``max_nodata`` nodata are rejected.

Held-out windows: the ground is cut into square blocks of ``HOLDOUT_BLOCK_M`` metres and one block in
``HOLDOUT_EVERY`` (a fixed lattice in CRS coordinates, so every run and every machine agree) is kept
out of training. Training windows never touch a held-out block; held-out windows lie inside one.
``geo-ppp prior-check`` compares a prior's samples with its held-out windows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from geo_ppp.errors import ConfigError
from geo_ppp.geo.legend import Legend

__all__ = [
    "HOLDOUT_BLOCK_M",
    "HOLDOUT_EVERY",
    "HOLDOUT_RULE",
    "SPLITS",
    "holdout_block",
    "label_dataset",
    "pool_majority",
    "sample_label_windows",
]

#: Side of the held-out blocks, in CRS units (metres).
HOLDOUT_BLOCK_M = 512.0
#: One block in this many is held out.
HOLDOUT_EVERY = 5
#: The rule, as recorded in a prior's metadata.
HOLDOUT_RULE = "(floor(x / block_m) + 2 * floor(y / block_m)) % every == 0"
#: Which windows :func:`sample_label_windows` keeps.
SPLITS = ("all", "train", "holdout")


def holdout_block(x: float, y: float, block_m: float = HOLDOUT_BLOCK_M, every: int = HOLDOUT_EVERY) -> bool:
    """Whether the point (x, y) lies in a held-out block (a fixed lattice: ``(bx + 2 by) % every == 0``)."""
    bx, by = int(np.floor(x / block_m)), int(np.floor(y / block_m))
    return (bx + 2 * by) % every == 0


def _window_split(query: tuple[slice, ...]) -> str:
    """``train``, ``holdout`` or ``edge`` (straddles both) for a sampler query (x slice, y slice, ...)."""
    xs, ys = query[0], query[1]
    corners = [holdout_block(x, y) for x in (xs.start, xs.stop - 1e-6) for y in (ys.start, ys.stop - 1e-6)]
    if not any(corners):
        return "train"
    if all(corners):
        bx = {int(np.floor(x / HOLDOUT_BLOCK_M)) for x in (xs.start, xs.stop - 1e-6)}
        by = {int(np.floor(y / HOLDOUT_BLOCK_M)) for y in (ys.start, ys.stop - 1e-6)}
        if len(bx) == 1 and len(by) == 1:
            return "holdout"
    return "edge"


log = logging.getLogger(__name__)


def label_dataset(paths: Sequence[str | os.PathLike[str]]):  # -> torchgeo RasterDataset
    """A torchgeo ``RasterDataset`` over label GeoTIFFs (files or folders of ``*.tif``) of one CRS."""
    from torchgeo.datasets import RasterDataset

    class LabelRasters(RasterDataset):
        filename_glob = "*.tif"
        is_image = False

    files: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files.extend(str(f) for f in sorted(path.glob("*.tif")))
        elif path.is_file():
            files.append(str(path))
        else:
            raise ConfigError(f"label raster {path} does not exist")
    if not files:
        raise ConfigError(f"no label GeoTIFFs found in {[str(p) for p in paths]}")
    return LabelRasters(files)


def pool_majority(index: np.ndarray, k: int, size: int) -> np.ndarray:
    """Majority-pool an (H, W) channel-index map (-1 = nodata) to (size, size); nodata wins ties."""
    t = torch.from_numpy(index)
    onehot = torch.stack([(t == c).float() for c in range(-1, k)])  # (k+1, H, W), channel 0 = nodata
    pooled = F.adaptive_avg_pool2d(onehot[None], size)[0]
    return (pooled.argmax(0) - 1).numpy()


def sample_label_windows(
    dataset,
    legend: Legend,
    count: int,
    *,
    window_m: float = 256.0,
    size: int = 64,
    max_nodata: float = 0.02,
    seed: int = 0,
    max_draws: int | None = None,
    source_nodata: int | None = None,
    split: str = "all",
) -> np.ndarray:
    """Draw ``count`` label windows (N, size, size) of channel indices from a torchgeo GeoDataset.

    Args:
        dataset: a torchgeo GeoDataset whose samples carry a ``mask`` of label codes.
        legend: maps the codes to channels (through its ``remap``).
        count: windows wanted.
        window_m: window side in CRS units (metres).
        size: output cells per side.
        max_nodata: reject windows with a larger nodata fraction.
        seed: seeds the sampler.
        max_draws: give up after this many draws (default ``50 * count``).
        source_nodata: an extra code to treat as nodata.
        split: ``all`` windows, only ``train`` windows (touching no held-out block), or only
            ``holdout`` windows (inside one held-out block).

    Returns:
        uint8-able int64 array of channel indices; fewer than ``count`` windows if the data ran out.
    """
    from torchgeo.samplers import RandomGeoSampler, Units

    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {SPLITS}")
    gen = torch.Generator().manual_seed(seed)
    draws = max_draws or (50 if split != "holdout" else 250) * count
    sampler = RandomGeoSampler(dataset, size=window_m, length=draws, units=Units.CRS, generator=gen)
    out: list[np.ndarray] = []
    tried = 0
    for query in sampler:
        tried += 1
        if split != "all" and _window_split(query) != split:
            continue
        mask = dataset[query]["mask"].numpy().astype(np.int64)
        index = legend.to_index(mask, extra_nodata=source_nodata)
        if (index < 0).mean() > max_nodata:
            continue
        pooled = pool_majority(index, legend.num_classes, size)
        if (pooled < 0).mean() > max_nodata:
            continue
        out.append(np.where(pooled < 0, np.bincount(pooled[pooled >= 0].ravel()).argmax(), pooled))
        if len(out) >= count:
            break
    log.info("kept %d of %d label windows drawn", len(out), tried)
    if not out:
        where = "" if split == "all" else f" in the {split} split"
        raise ConfigError(
            f"no label window{where} had enough valid pixels (<= {max_nodata:.0%} nodata) in {tried} draws; "
            "check the rasters' nodata and the window size"
        )
    return np.stack(out)
