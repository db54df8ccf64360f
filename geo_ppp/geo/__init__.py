"""Pure geospatial values: the raster grid and the class legend. No file is opened here.

``geo`` sits between the generic core and ``io``: ``io`` reads and writes files in terms of these
values, and ``landcover`` and ``pipeline`` pass them around.
"""

from geo_ppp.geo.grid import Grid, grid_for, pixel_of, pixel_size, window_grid
from geo_ppp.geo.legend import Legend, load_legend

__all__ = ["Grid", "Legend", "grid_for", "load_legend", "pixel_of", "pixel_size", "window_grid"]
