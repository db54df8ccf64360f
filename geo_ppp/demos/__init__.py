"""Demonstrations: the land-cover demo on the real sample tiles, and the digits demo.

The sample data is found in one place, :func:`sample_tiles`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from geo_ppp.errors import InputError

__all__ = ["SAMPLE_TILES_ENV", "sample_patches", "sample_tiles"]

#: an environment variable naming a sample_tiles folder (for installs outside a repository clone)
SAMPLE_TILES_ENV = "GEO_PPP_SAMPLE_TILES"


def sample_tiles(data: str | os.PathLike[str] | None = None) -> Path:
    """The sample_tiles folder (``naip/``, ``nlcd/``, ``truth/``) the demo segments.

    ``data`` if given, else ``$GEO_PPP_SAMPLE_TILES``, else the ``sample_tiles/`` of the repository
    clone this package is installed from (``pip install -e .``, as ``make demo`` does).

    Raises:
        InputError: the folder does not exist, or no sample_tiles folder is known (with the fix).
    """
    if data is None:
        data = os.environ.get(SAMPLE_TILES_ENV) or None
    if data is None:
        import geo_ppp

        clone = Path(geo_ppp.__file__).resolve().parents[1] / "sample_tiles"
        if not clone.is_dir():
            raise InputError(
                "no sample_tiles folder found: this geo_ppp is not installed from a repository clone; pass "
                f"--data pointing at a sample_tiles/ folder (naip/, nlcd/, truth/) or set ${SAMPLE_TILES_ENV}"
            )
        return clone
    folder = Path(data)
    if not folder.is_dir():
        raise InputError(
            f"--data {folder} is not a folder; give a sample_tiles/ folder (naip/, nlcd/, truth/)"
        )
    return folder


def sample_patches(
    legend: Any, data: str | os.PathLike[str] | None = None
) -> list[tuple[Any, Any, Any, Any]]:
    """The eight sample patches in memory: (image, validity, weak codes, truth class indices) each.

    The weak codes are read on the image's grid; the truth is mapped to ``legend``'s class indices
    (nodata -1). For benchmarks and tests that score maps patch by patch.
    """
    from geo_ppp.io import read_class_raster, read_image, read_labels_on_grid

    root = sample_tiles(data)
    out = []
    for i in range(8):
        img, valid, grid = read_image(root / "naip" / f"patch{i}.tif")
        weak, _ = read_labels_on_grid(root / "nlcd" / f"patch{i}.tif", grid)
        truth, nodata, _ = read_class_raster(root / "truth" / f"patch{i}.tif")
        out.append((img, valid, weak, legend.to_index(truth, nodata)))
    return out
