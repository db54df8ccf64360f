"""The geospatial pipeline: tile a region, infer each tile, mosaic a seamless georeferenced map.

Example:
    >>> from geo_ppp.pipeline import segment
    >>> result = segment("naip.tif", "nlcd.tif", "chesapeake", "landcover.tif")  # doctest: +SKIP
"""

from geo_ppp.pipeline.run import RegionJob, RegionResult, TileInferrer, plan, run_batch, segment
from geo_ppp.pipeline.tiling import Tile, TileGrid, feather_weights, tile_seed

__all__ = [
    "RegionJob",
    "RegionResult",
    "Tile",
    "TileGrid",
    "TileInferrer",
    "feather_weights",
    "plan",
    "run_batch",
    "segment",
    "tile_seed",
]
