"""Styles beside a class map: a QGIS layer style (``.qml``) and GDAL category names (``.aux.xml``).

:func:`~geo_ppp.io.rasters.write_class_map` already stores a colour table in the GeoTIFF. These
sidecar files add what a colour table cannot hold, so that GIS clients show class names:

* ``OUT.qml`` beside ``OUT.tif``: a paletted-renderer style (code, colour, name per class) that
  QGIS loads automatically when it opens ``OUT.tif``. Written by :func:`write_qml`.
* ``OUT.tif.aux.xml``: GDAL PAM category names for band 1 (code ``i`` is named by entry ``i``),
  read by GDAL, ``gdalinfo`` and every client built on GDAL. Written by
  :func:`write_category_names`, merged into an existing file.

Both are written under a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from geo_ppp.core.atomic import atomic_path
from geo_ppp.errors import InputError
from geo_ppp.geo.legend import Legend
from geo_ppp.outputs import check_outputs

__all__ = ["aux_xml_path", "polygon_qml", "qml_path", "write_category_names", "write_qml"]

# The version string QGIS writes into the styles it saves; QGIS 3.x reads styles of any 3.x version.
_QGIS_VERSION = "3.22.16-Białowieża"


def qml_path(tif_path: str | os.PathLike[str]) -> Path:
    """The style file QGIS loads automatically for a raster: ``OUT.tif`` -> ``OUT.qml``.

    Args:
        tif_path: the raster.

    Returns:
        The path with its last suffix replaced by ``.qml`` (a name without suffix gets ``.qml`` added).
    """
    return Path(tif_path).with_suffix(".qml")


def aux_xml_path(tif_path: str | os.PathLike[str]) -> Path:
    """The GDAL PAM sidecar of a raster: ``OUT.tif`` -> ``OUT.tif.aux.xml``.

    Args:
        tif_path: the raster.

    Returns:
        The path with ``.aux.xml`` appended to its full name.
    """
    p = Path(tif_path)
    return p.with_name(p.name + ".aux.xml")


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


def _qml_tree(legend: Legend, band: int, nodata: int) -> ET.Element:
    root = ET.Element(
        "qgis",
        {
            "version": _QGIS_VERSION,
            "styleCategories": "AllStyleCategories",
            "hasScaleBasedVisibilityFlag": "0",
            "minScale": "1e+08",
            "maxScale": "0",
        },
    )
    flags = _sub(root, "flags")
    for tag, value in (("Identifiable", "1"), ("Removable", "1"), ("Searchable", "1"), ("Private", "0")):
        _sub(flags, tag, value)
    pipe = _sub(root, "pipe")
    provider = _sub(pipe, "provider")
    # class codes must never be interpolated: nearest neighbour when zooming in and out
    _sub(
        provider,
        "resampling",
        enabled="false",
        zoomedInResamplingMethod="nearestNeighbour",
        zoomedOutResamplingMethod="nearestNeighbour",
        maxOversampling="2",
    )
    renderer = _sub(
        pipe,
        "rasterrenderer",
        type="paletted",
        band=str(band),
        opacity="1",
        alphaBand="-1",
        nodataColor="",
    )
    transparency = _sub(renderer, "rasterTransparency")
    single = _sub(transparency, "singleValuePixelList")
    _sub(single, "pixelListEntry", min=str(nodata), max=str(nodata), percentTransparent="100")
    minmax = _sub(renderer, "minMaxOrigin")
    for tag, value in (
        ("limits", "None"),
        ("extent", "WholeRaster"),
        ("statAccuracy", "Estimated"),
        ("cumulativeCutLower", "0.02"),
        ("cumulativeCutUpper", "0.98"),
        ("stdDevFactor", "2"),
    ):
        _sub(minmax, tag, value)
    palette = _sub(renderer, "colorPalette")
    for code, name, rgb in zip(legend.codes, legend.names, legend.colors, strict=True):
        _sub(palette, "paletteEntry", value=str(code), color=_hex(rgb), label=name, alpha="255")
    _sub(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    _sub(
        pipe,
        "huesaturation",
        saturation="0",
        grayscaleMode="0",
        invertColors="0",
        colorizeOn="0",
        colorizeRed="255",
        colorizeGreen="128",
        colorizeBlue="128",
        colorizeStrength="100",
    )
    _sub(pipe, "rasterresampler", maxOversampling="2")
    _sub(pipe, "resamplingStage", "resamplingFilter")
    _sub(root, "blendMode", "0")
    return root


def polygon_qml(legend: Legend, attribute: str = "code") -> str:
    """A QGIS style (QML text) for class polygons: categorised on ``attribute`` in the legend's colours.

    Stored in a GeoPackage's ``layer_styles`` table (see :func:`geo_ppp.io.polygons.write_polygons`),
    it is the layer's default style in QGIS, whatever ``.qml`` lies beside the file.
    """
    root = ET.Element("qgis", {"version": _QGIS_VERSION, "styleCategories": "Symbology"})
    renderer = _sub(
        root,
        "renderer-v2",
        type="categorizedSymbol",
        attr=attribute,
        symbollevels="0",
        enableorderby="0",
        forceraster="0",
    )
    categories = _sub(renderer, "categories")
    symbols = _sub(renderer, "symbols")
    for i, (code, name, rgb) in enumerate(zip(legend.codes, legend.names, legend.colors, strict=True)):
        _sub(categories, "category", value=str(code), label=name, symbol=str(i), render="true")
        symbol = _sub(
            symbols, "symbol", type="fill", name=str(i), alpha="1", clip_to_extent="1", force_rhr="0"
        )
        layer = _sub(symbol, "layer", **{"class": "SimpleFill", "enabled": "1", "pass": "0", "locked": "0"})
        for key, value in (
            ("color", "{},{},{},255".format(*rgb)),
            ("style", "solid"),
            ("outline_style", "no"),
            ("outline_color", "0,0,0,0"),
            ("outline_width", "0"),
            ("joinstyle", "miter"),
        ):
            _sub(layer, "prop", k=key, v=value)
    ET.indent(root, space="  ")
    doctype = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
    return doctype + "\n" + ET.tostring(root, encoding="unicode")


def _check_folder(path: Path) -> None:
    # the sidecars are replaced like the map itself; only the folder must exist and be writable
    check_outputs([path], overwrite=True)


def write_qml(
    path: str | os.PathLike[str], legend: Legend, *, band: int = 1, nodata: int | None = None
) -> Path:
    """Write a QGIS layer style (``.qml``) that draws a class map with the legend's colours and names.

    The style is a paletted renderer (one entry per class: code, ``#rrggbb`` colour, name, opaque)
    with nearest-neighbour resampling and the nodata code fully transparent; QGIS 3.x reads it. Save
    it as :func:`qml_path` of the map so that QGIS applies it when it opens the map.

    Args:
        path: the ``.qml`` file to write (replaced if it exists).
        legend: the classes to draw.
        band: the 1-based band that holds the class codes.
        nodata: the code drawn transparent (default: the legend's nodata).

    Returns:
        The written path.

    Raises:
        InputError: ``band`` is not a positive integer or ``nodata`` is not a code 0-255.
        OutputError: the destination folder is missing or not writable (an ``OSError``).
    """
    path = Path(path)
    if isinstance(band, bool) or not isinstance(band, int) or band < 1:
        raise InputError(f"band must be a 1-based band number, got {band!r}")
    nodata = legend.nodata if nodata is None else nodata
    if isinstance(nodata, bool) or not isinstance(nodata, int) or not 0 <= nodata <= 255:
        raise InputError(f"nodata must be a code 0-255, got {nodata!r}")
    _check_folder(path)
    root = _qml_tree(legend, band, nodata)
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    text = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _category_names(legend: Legend) -> list[str]:
    names = [""] * (max(legend.codes) + 1)
    for code, name in zip(legend.codes, legend.names, strict=True):
        names[code] = name
    return names


def _attribute_table(legend: Legend) -> ET.Element:
    """A thematic GDAL raster attribute table: value, class name and colour of each class.

    QGIS >= 3.30 builds a class map's legend from it (only the classes, by name and colour).
    """
    rat = ET.Element("GDALRasterAttributeTable", tableType="thematic")
    # GDAL field types: 0 integer, 2 string; usages: 5 min-max (the value), 2 name, 6-9 red..alpha
    fields = [("Value", "0", "5"), ("Class_Name", "2", "2"), ("Red", "0", "6"), ("Green", "0", "7"),
              ("Blue", "0", "8"), ("Alpha", "0", "9")]  # fmt: skip
    for i, (name, kind, usage) in enumerate(fields):
        defn = _sub(rat, "FieldDefn", index=str(i))
        _sub(defn, "Name", name)
        _sub(defn, "Type", kind)
        _sub(defn, "Usage", usage)
    for i, (code, name, rgb) in enumerate(zip(legend.codes, legend.names, legend.colors, strict=True)):
        row = _sub(rat, "Row", index=str(i))
        for value in (code, name, *rgb, 255):
            _sub(row, "F", str(value))
    return rat


def write_category_names(tif_path: str | os.PathLike[str], legend: Legend) -> Path:
    """Write GDAL category names and a raster attribute table of band 1 into ``OUT.tif.aux.xml``.

    Entry ``i`` of the category names names code ``i``, from 0 to the largest class code; codes that
    are not classes (the nodata code among them) get an empty name. The attribute table lists the
    classes only (value, name, colour). An existing sidecar is merged: everything in it is kept except
    band 1's old category names and attribute table.

    Args:
        tif_path: the class map (need not exist yet; the sidecar is named after it).
        legend: the classes to name.

    Returns:
        The path of the written ``.aux.xml``.

    Raises:
        InputError: the existing sidecar is not a PAM XML document.
        OutputError: the destination folder is missing or not writable (an ``OSError``).
    """
    path = aux_xml_path(tif_path)
    _check_folder(path)
    if path.exists():
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as exc:
            raise InputError(f"{path} is not valid XML ({exc}); delete or fix it, then write again") from exc
        if root.tag != "PAMDataset":
            raise InputError(f"{path} holds <{root.tag}>, not a GDAL <PAMDataset>; delete it and write again")
    else:
        root = ET.Element("PAMDataset")
    band = next((el for el in root.findall("PAMRasterBand") if el.get("band") == "1"), None)
    if band is None:
        band = ET.Element("PAMRasterBand", band="1")
        others = root.findall("PAMRasterBand")
        # bands in order: before any other band's entry, else at the end
        index = list(root).index(others[0]) if others else len(root)
        root.insert(index, band)
    for old in band.findall("CategoryNames"):
        band.remove(old)
    categories = ET.Element("CategoryNames")
    for name in _category_names(legend):
        _sub(categories, "Category", name)
    band.insert(0, categories)
    for old in band.findall("GDALRasterAttributeTable"):
        band.remove(old)
    band.append(_attribute_table(legend))
    ET.indent(root, space="  ")
    with atomic_path(path) as tmp:
        tmp.write_text(ET.tostring(root, encoding="unicode") + "\n", encoding="utf-8")
    return path
