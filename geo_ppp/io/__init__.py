"""The one package that opens data files: imagery, weak labels, vectors, maps, styles, pictures.

Everything else in geo_ppp takes arrays, tensors and small values (a :class:`~geo_ppp.geo.Grid`, a
:class:`~geo_ppp.geo.Legend`, a window); only these modules import rasterio's readers and writers,
geopandas, pyogrio, matplotlib or torchgeo's datasets (``tests/test_layering.py`` checks it). The
small JSON configurations are read by their own loaders (``load_legend``, ``load_cooccurrence``,
``load_prior``) and the pipeline's work dir by its tile store.

Modules: ``rasters`` (checked reads, the COG writer), ``imagery`` (regions of many files on one
working grid), ``scan`` (damage found at plan time), ``weak_labels``, ``vectors`` (vector labels,
AOIs), ``polygons`` (class polygons written), ``styles`` (QGIS ``.qml``, GDAL category names),
``quicklook``, ``pictures`` (PNGs, sample grids) and ``label_windows`` (label windows for the prior).
The vector and picture helpers are imported on first use (geopandas and matplotlib are slow to import).
"""

from __future__ import annotations

import importlib
from typing import Any

from geo_ppp.geo.grid import Grid
from geo_ppp.io.rasters import (
    read_class_raster,
    read_image,
    read_labels_on_grid,
    read_map_legend,
    write_class_map,
)
from geo_ppp.io.styles import aux_xml_path, qml_path, write_category_names, write_qml

_LAZY = {
    "colorize": "geo_ppp.io.quicklook",
    "write_quicklook": "geo_ppp.io.quicklook",
    "aoi_mask": "geo_ppp.io.vectors",
    "rasterize_labels": "geo_ppp.io.vectors",
    "read_aoi": "geo_ppp.io.vectors",
    "read_vector_labels": "geo_ppp.io.vectors",
    "write_polygons": "geo_ppp.io.polygons",
}

__all__ = [
    "Grid",
    "aoi_mask",
    "aux_xml_path",
    "colorize",
    "qml_path",
    "rasterize_labels",
    "read_aoi",
    "read_class_raster",
    "read_map_legend",
    "read_image",
    "read_labels_on_grid",
    "read_vector_labels",
    "write_category_names",
    "write_class_map",
    "write_polygons",
    "write_qml",
    "write_quicklook",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geo_ppp.io' has no attribute {name!r}")
