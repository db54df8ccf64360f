"""Quicklooks: one PNG with the image, the weak labels and the resulting map side by side.

Drawn on a bare matplotlib :class:`~matplotlib.figure.Figure` with the Agg canvas, so no display is
needed and no pyplot state (current figure, backend) is touched. Class colours are drawn exactly
(nearest-neighbour resampling), so a class's legend RGB appears as such in the PNG.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from geo_ppp.core.atomic import atomic_path
from geo_ppp.errors import ShapeError
from geo_ppp.geo.legend import Legend, load_legend

__all__ = ["colorize", "write_quicklook"]

_WHITE = (255, 255, 255)
_PANEL_INCHES = 4.0


def colorize(codes: np.ndarray, legend: Legend | str, nodata: int | None = None) -> np.ndarray:
    """Colour class codes with a legend's colours; nodata is white.

    Args:
        codes: (H, W) integer codes of the legend (codes in its ``remap`` take their target's colour).
        legend: a :class:`Legend` or the name of a shipped one (e.g. ``"nlcd"`` for weak labels).
        nodata: another code to show as nodata (e.g. a raster's own nodata), besides the legend's.

    Returns:
        (H, W, 3) uint8 RGB.

    Raises:
        ShapeError: ``codes`` is not 2-D.
        ConfigError: codes that are neither classes, nodata nor remapped in the legend (named).
    """
    legend = load_legend(legend)
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ShapeError(f"class codes must be a 2-D (H, W) array, got shape {codes.shape}")
    index = legend.to_index(codes, extra_nodata=nodata)  # -1 for nodata
    palette = np.array([*legend.colors, _WHITE], dtype=np.uint8)  # index -1 picks the last row
    return palette[index]


def _check_rgb(name: str, rgb: np.ndarray, shape: tuple[int, int] | None) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ShapeError(f"{name} must be an (H, W, 3) RGB array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ShapeError(f"{name} must be uint8 RGB (0-255), got dtype {arr.dtype}; scale and cast it first")
    if shape is not None and arr.shape[:2] != shape:
        raise ShapeError(
            f"{name} is {arr.shape[:2]} but the map is {shape}; decimate all panels to the same size"
        )
    return arr


def write_quicklook(
    out_png: str | os.PathLike[str],
    image_rgb: np.ndarray,
    weak_rgb: np.ndarray | None,
    map_codes: np.ndarray,
    legend: Legend | str,
    *,
    title: str | None = None,
    weak_title: str = "weak labels",
    map_title: str = "result",
    image_title: str = "image",
    dpi: int = 150,
) -> Path:
    """Write a PNG with the image, the weak labels and the map side by side, and the map's legend.

    Arrays are drawn as given (pixel for pixel, nearest neighbour): decimate large rasters before.
    The legend below the panels lists the classes present in the map (all classes when none is).

    Args:
        out_png: the PNG to write; replaced atomically if it exists.
        image_rgb: (H, W, 3) uint8 image.
        weak_rgb: (H, W, 3) uint8 weak labels, already coloured (e.g. ``colorize(nlcd, "nlcd")``);
            None leaves the panel out.
        map_codes: (H, W) legend codes of the result; nodata is drawn white.
        legend: the map's legend (a :class:`Legend` or a shipped legend's name).
        title: a title above the panels.
        weak_title: the weak-label panel's title.
        map_title: the map panel's title.
        image_title: the image panel's title.
        dpi: resolution; each panel is 4 inches wide (600 pixels at 150 dpi).

    Returns:
        ``out_png`` as a Path.

    Raises:
        ShapeError: arrays of the wrong shape, dtype or size.
        ConfigError: map codes unknown to the legend.
    """
    legend = load_legend(legend)
    out_png = Path(out_png)
    map_codes = np.asarray(map_codes)
    if map_codes.ndim != 2 or map_codes.size == 0:
        raise ShapeError(f"map_codes must be a non-empty 2-D (H, W) array, got shape {map_codes.shape}")
    shape = (int(map_codes.shape[0]), int(map_codes.shape[1]))
    panels = [(image_title, _check_rgb("image_rgb", image_rgb, shape))]
    if weak_rgb is not None:
        panels.append((weak_title, _check_rgb("weak_rgb", weak_rgb, shape)))
    panels.append((map_title, colorize(map_codes, legend)))

    index = legend.to_index(map_codes)
    present = [k for k in range(legend.num_classes) if (index == k).any()] or list(range(legend.num_classes))
    handles = [
        Patch(facecolor=np.asarray(legend.colors[k]) / 255.0, edgecolor="black", linewidth=0.5,
              label=legend.names[k])
        for k in present
    ]

    height_in = _PANEL_INCHES * shape[0] / shape[1]
    legend_rows = -(-len(handles) // 4)
    fig = Figure(
        figsize=(_PANEL_INCHES * len(panels), height_in + 0.35 * legend_rows + (0.6 if title else 0.35)),
        dpi=dpi,
        layout="constrained",
        facecolor="white",
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, rgb) in zip(axes, panels, strict=True):
        ax.imshow(rgb, interpolation="nearest", resample=False)
        ax.set_title(name)
        ax.set_axis_off()
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), 4),
        frameon=False,
        title=f"{map_title} ({legend.name})",
    )
    if title:
        fig.suptitle(title)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
    return out_png
