"""The geospatial pipeline: tile a region, infer each tile, mosaic a seamless georeferenced map.

Modules, each importing only those listed before it:

* ``tiling``, ``store``, ``mosaic``: the tile grid, the work dir's tile store, feathered blending;
* ``job``: the picklable job value (:class:`RegionJob`), the frozen :class:`RunSettings`, the outputs;
* ``worker``: per-process caches and :func:`run_batch` (what a Dask task runs);
* ``plan``: input and output checks, :func:`plan` and ``prepare_region``;
* ``distributed`` (Dask) and ``publish`` (the COG and its products);
* ``run``: :func:`segment`, plan -> run -> publish; ``jobs``: batch jobs of many regions;
  ``evaluate``: scoring maps against truth.

Example:
    >>> from geo_ppp.pipeline import segment
    >>> result = segment("naip.tif", "nlcd.tif", "chesapeake", "landcover.tif")  # doctest: +SKIP
"""

from geo_ppp.pipeline.job import RegionJob, RegionResult, RunSettings
from geo_ppp.pipeline.plan import plan
from geo_ppp.pipeline.run import segment
from geo_ppp.pipeline.tiling import Tile, TileGrid, feather_weights, tile_seed
from geo_ppp.pipeline.worker import TileInferrer, run_batch

__all__ = [
    "RegionJob",
    "RegionResult",
    "RunSettings",
    "Tile",
    "TileGrid",
    "TileInferrer",
    "feather_weights",
    "plan",
    "run_batch",
    "segment",
    "tile_seed",
]
