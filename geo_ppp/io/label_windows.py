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

from geo_ppp.errors import ConfigError, InputError
from geo_ppp.geo.legend import Legend

__all__ = [
    "HOLDOUT_BLOCK_M",
    "HOLDOUT_EVERY",
    "HOLDOUT_RULE",
    "SPLITS",
    "check_label_rasters",
    "holdout_block",
    "label_dataset",
    "label_files",
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


def label_files(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The label GeoTIFFs of ``paths`` (files, or folders of ``*.tif``), sorted within each folder."""
    files: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files.extend(str(f) for f in sorted(path.glob("*.tif")))
        elif path.is_file():
            files.append(str(path))
        else:
            raise InputError(f"label raster {path} does not exist; give existing GeoTIFFs or folders of them")
    if not files:
        raise InputError(
            f"no label GeoTIFFs (*.tif) found in {[str(p) for p in paths]}; "
            "give label rasters or folders of them"
        )
    return files


def check_label_rasters(
    paths: Sequence[str | os.PathLike[str]], legend: Legend | None = None, window_m: float = 256.0
) -> list[str]:
    """Check label rasters before any window is drawn; return their files.

    Each must be a readable single-band integer GeoTIFF in a projected CRS (metres), all of one CRS, at
    least ``window_m`` on each side, with some valid pixels, and (with a ``legend``) only codes the
    legend knows (read on a decimated grid: rare stray codes are still caught per window).

    Raises:
        InputError: naming the file, what is wrong with it and the fix.
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    files = label_files(paths)
    first_crs = None
    for f in files:
        try:
            src = rasterio.open(f)
        except (RasterioIOError, OSError) as err:
            size = os.path.getsize(f) if os.path.exists(f) else 0
            what = "an empty file" if size == 0 else "not a raster GDAL can read"
            raise InputError(
                f"label raster {f} is {what} ({str(err).splitlines()[0]}); give a GeoTIFF of label codes"
            ) from None
        with src:
            if src.count != 1:
                raise InputError(
                    f"label raster {f} has {src.count} bands; label rasters hold one band of class codes "
                    "(is it imagery? pass the band of codes alone, e.g. gdal_translate -b 1)"
                )
            if np.dtype(src.dtypes[0]).kind not in "iu":
                raise InputError(
                    f"label raster {f} holds {src.dtypes[0]} values; label rasters hold integer class codes "
                    "(convert it, e.g. gdal_translate -ot Byte)"
                )
            if src.crs is None:
                raise InputError(f"label raster {f} has no CRS; assign its projected CRS (metres) first")
            if src.crs.is_geographic:
                raise InputError(
                    f"label raster {f} is in a geographic CRS ({src.crs.to_string()}, degrees): reproject "
                    "first, to a projected CRS in metres, e.g. gdalwarp -t_srs EPSG:<UTM zone> -r near"
                )
            if first_crs is None:
                first_crs = (src.crs, f)
            elif src.crs != first_crs[0]:
                raise InputError(
                    f"label rasters of one source must share a CRS: {f} is in {src.crs.to_string()}, "
                    f"{first_crs[1]} in {first_crs[0].to_string()}; reproject them to one CRS, or give them "
                    "as separate --labels sources"
                )
            width_m, height_m = src.width * abs(src.res[0]), src.height * abs(src.res[1])
            if min(width_m, height_m) < window_m:
                raise InputError(
                    f"label raster {f} covers {width_m:g} x {height_m:g} m, smaller than one {window_m:g} m "
                    f"window; give label rasters at least {window_m:g} m on each side (about 1.5 km or more "
                    "leaves room for the held-out blocks)"
                )
            step = max(1, int(np.ceil(max(src.width, src.height) / 1024)))
            shape = (max(1, src.height // step), max(1, src.width // step))
            data = src.read(1, out_shape=shape, resampling=rasterio.enums.Resampling.nearest)
            nodata = src.nodata
        valid = data if nodata is None else data[data != nodata]
        if legend is not None:
            valid = valid[valid != legend.nodata]
        if valid.size == 0:
            raise InputError(
                f"label raster {f} holds only nodata "
                f"({legend.nodata if nodata is None and legend else nodata}); give rasters with labels"
            )
        if legend is not None:
            try:
                legend.to_index(valid.astype(np.int64), extra_nodata=None if nodata is None else int(nodata))
            except ConfigError as err:
                raise InputError(f"label raster {f}: {err}") from None
    return files


def label_dataset(paths: Sequence[str | os.PathLike[str]]):  # -> torchgeo RasterDataset
    """A torchgeo ``RasterDataset`` over label GeoTIFFs (files or folders of ``*.tif``) of one CRS."""
    from torchgeo.datasets import RasterDataset

    class LabelRasters(RasterDataset):
        filename_glob = "*.tif"
        is_image = False

    return LabelRasters(label_files(paths))


def _random_windows(dataset, window_m: float, draws: int, seed: int):  # -> Iterator[query]
    """``draws`` random ``window_m`` windows over the dataset's files, seeded by ``seed`` alone.

    torchgeo's ``RandomGeoSampler`` draws the window's place with the generator it is given but picks
    the file (weighted by area) from torch's global RNG, so the windows of several files changed from
    process to process. Here the file is picked with its own seeded generator; the place is drawn as
    torchgeo draws it (one file: the same windows as before).
    """
    from torchgeo.samplers.utils import get_random_bounding_box

    gen = torch.Generator().manual_seed(seed)
    pick = torch.Generator().manual_seed(seed + 0x5EED)
    res = dataset.res
    index = dataset.index
    tiles, areas = [], []
    for hit in range(len(index)):
        xmin, ymin, xmax, ymax = index.geometry.iloc[hit].bounds
        if xmax - xmin >= window_m and ymax - ymin >= window_m:
            tiles.append(((xmin, ymin, xmax, ymax), index.index[hit]))
            areas.append((xmax - xmin) * (ymax - ymin))
    if not tiles:
        raise InputError(
            f"no label raster is at least {window_m:g} m on each side; "
            "give label rasters larger than one window"
        )
    weights = torch.tensor(areas, dtype=torch.float64)
    for _ in range(draws):
        i = int(torch.multinomial(weights, 1, generator=pick)) if len(tiles) > 1 else 0
        bounds, interval = tiles[i]
        xs, ys = get_random_bounding_box(bounds, window_m, res, gen)
        yield xs, ys, slice(interval.left, interval.right)


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
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {SPLITS}")
    draws = max_draws or (50 if split != "holdout" else 250) * count
    out: list[np.ndarray] = []
    tried = other_split = 0
    for query in _random_windows(dataset, window_m, draws, seed):
        tried += 1
        if split != "all" and _window_split(query) != split:
            other_split += 1
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
    if not out and tried and other_split == tried:
        where = "touches a held-out block" if split == "train" else "lies inside one held-out block"
        raise InputError(
            f"every {window_m:g} m window drawn from these label rasters ({tried} draws) {where} (the "
            f"ground is cut into {HOLDOUT_BLOCK_M:g} m blocks and one in {HOLDOUT_EVERY} is kept out of "
            f"training for prior-check), so none is left for the {split} split; give bigger label rasters "
            "(about 1.5 km a side or more) or more of them"
        )
    if not out:
        where = "" if split == "all" else f" in the {split} split"
        raise InputError(
            f"no label window{where} had enough valid pixels (<= {max_nodata:.0%} nodata) in {tried} draws; "
            "check the rasters' nodata and the window size"
        )
    return np.stack(out)
