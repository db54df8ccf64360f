"""Pictures: PNG files written atomically, and sample grids (``geo-ppp generate``'s outputs).

:func:`write_png` is the one PNG writer (prior-check sheets, sample grids); :func:`save_samples`
writes a batch of samples as a PNG grid, the raw ``.npy`` and the configuration that made them.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geo_ppp.core.atomic import atomic_path, write_json
from geo_ppp.errors import ConfigError
from geo_ppp.outputs import check_outputs

__all__ = ["grid_image", "save_samples", "write_png"]

log = logging.getLogger(__name__)


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write an (H, W) grey image in [0, 1] or an (H, W, 3) RGB image (uint8 or [0, 1]) as PNG."""
    from matplotlib import image as mpimg

    path = Path(path)
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or arr.size == 0:
        raise ConfigError(f"a PNG needs an (H, W) or (H, W, 3) image, got shape {arr.shape}")
    with atomic_path(path) as tmp:
        if arr.ndim == 2:
            mpimg.imsave(tmp, arr, cmap="gray", vmin=0.0, vmax=1.0, format="png")
        else:
            mpimg.imsave(tmp, arr, format="png")
    return path


def grid_image(x: torch.Tensor | np.ndarray, scale: int = 4, pad: int = 1) -> np.ndarray:
    """Tile a batch (N, C, H, W) in [-1, 1] into one image (rows, cols[, 3]) in [0, 1]."""
    arr = np.asarray(x, dtype=np.float32)
    n, c, h, w = arr.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    img = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c), dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, cols)
        y0, x0 = pad + r * (h + pad), pad + q * (w + pad)
        img[y0 : y0 + h, x0 : x0 + w] = ((arr[i].transpose(1, 2, 0) + 1) / 2).clip(0, 1)
    img = img.repeat(scale, 0).repeat(scale, 1)
    return img[..., 0] if c == 1 else img[..., :3]


def save_samples(
    x: torch.Tensor,
    out_png: str | os.PathLike[str],
    record: dict[str, Any],
    overwrite: bool = False,
    palette: Sequence[Sequence[int]] | None = None,
) -> list[Path]:
    """Write ``OUT.png`` (a grid), ``OUT.npy`` (the samples, N x C x H x W) and ``OUT.json``.

    With a ``palette`` (one RGB colour per channel, e.g. a legend's), the samples are class maps:
    the PNG shows each sample's argmax over channels in those colours, not its first channels.

    ``OUT.json`` holds ``record``: the resolved configuration that produced the samples. All
    outputs are checked before anything is written, and each is written atomically.

    Returns:
        The three paths.
    """
    png = Path(out_png)
    if png.suffix.lower() != ".png":
        raise ConfigError(f"--out must end in .png, got {png.name}")
    npy, js = png.with_suffix(".npy"), png.with_suffix(".json")
    check_outputs([png, npy, js], overwrite)
    if palette is not None:
        colors = np.asarray(palette, dtype=np.float32) / 255.0
        if colors.shape != (x.shape[1], 3):
            raise ConfigError(f"a palette of {x.shape[1]} RGB colours is needed, got shape {colors.shape}")
        classes = x.argmax(dim=1).numpy()
        rgb = torch.from_numpy(colors[classes].transpose(0, 3, 1, 2) * 2 - 1)
        grid = (grid_image(rgb) * 255).round().astype(np.uint8)  # exact legend colours
    else:
        grid = grid_image(x)
    with atomic_path(npy) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, x.numpy().astype(np.float32))
    write_png(png, grid)
    write_json(js, record)
    log.info("wrote %s, %s and %s", png, npy, js)
    return [png, npy, js]
