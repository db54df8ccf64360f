"""The one package that opens files: rasters, vectors, styles and pictures.

Everything else in geo_ppp takes arrays, tensors and small value objects (a :class:`Grid`, a
window); only these modules call ``rasterio.open``, ``geopandas.read_file`` or write map products.
"""

from geo_ppp.io.quicklook import colorize, write_quicklook
from geo_ppp.io.rasters import Grid, read_class_raster, read_image, read_labels_on_grid, write_class_map
from geo_ppp.io.styles import aux_xml_path, qml_path, write_category_names, write_qml
from geo_ppp.io.vectors import aoi_mask, rasterize_labels, read_aoi, read_vector_labels, write_polygons

__all__ = [
    "Grid",
    "aoi_mask",
    "aux_xml_path",
    "colorize",
    "qml_path",
    "rasterize_labels",
    "read_aoi",
    "read_class_raster",
    "read_image",
    "read_labels_on_grid",
    "read_vector_labels",
    "write_category_names",
    "write_class_map",
    "write_polygons",
    "write_qml",
    "write_quicklook",
]
