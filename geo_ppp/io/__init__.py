"""The one package that opens files: rasters, vectors, styles and pictures.

Everything else in geo_ppp takes arrays, tensors and small value objects (a :class:`Grid`, a
window); only these modules call ``rasterio.open``, ``geopandas.read_file`` or write map products.
"""

from geo_ppp.io.rasters import Grid, read_class_raster, read_image, read_labels_on_grid, write_class_map
from geo_ppp.io.styles import aux_xml_path, qml_path, write_category_names, write_qml

__all__ = [
    "Grid",
    "aux_xml_path",
    "qml_path",
    "read_class_raster",
    "read_image",
    "read_labels_on_grid",
    "write_category_names",
    "write_class_map",
    "write_qml",
]
