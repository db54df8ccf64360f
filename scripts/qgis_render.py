"""Render the demo's outputs with QGIS itself, headless, for the docs (run by scripts/figures.py).

Runs under the system Python that has PyQGIS (QGIS >= 3.22), not in .venv:

    QT_QPA_PLATFORM=offscreen GDAL_PAM_ENABLED=NO /usr/bin/python3 scripts/qgis_render.py \
        demo_out sample_tiles docs/assets

Opens `landcover.tif` as QGIS opens it (its `.qml` style loads by itself), the class polygons of
`landcover.gpkg` (their style is stored inside the GeoPackage) and the NAIP patch underneath, and
exports two layouts (map + legend, as QGIS's layout exporter draws them) to PNG:

- `qgis_map.png`: the NAIP image of one mixed patch beside the styled land-cover map;
- `qgis_polygons.png`: the styled class polygons over the same image;

and renders `qgis_overlay.png` (the styled map at 60 % opacity over NAIP patch 0) straight through
QgsMapSettings and QgsMapRendererParallelJob.

Prints one line per file written. Nothing here is drawn by hand: colours, names and legend are the
ones QGIS reads from the files.
"""

import sys
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsLayout,
    QgsLayoutExporter,
    QgsLayoutItemLabel,
    QgsLayoutItemLegend,
    QgsLayoutItemMap,
    QgsLayoutPoint,
    QgsLayoutSize,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsUnitTypes,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor, QFont

PATCH = "patch7"  # a mixed patch: a regrowing clearing inside NLCD forest, fields, canopy


def _map(lay, layers, extent, x: float, size: float) -> QgsLayoutItemMap:
    item = QgsLayoutItemMap(lay)
    item.attemptMove(QgsLayoutPoint(x, 15, QgsUnitTypes.LayoutMillimeters))
    item.attemptResize(QgsLayoutSize(size, size, QgsUnitTypes.LayoutMillimeters))
    item.setLayers(layers)
    item.setCrs(layers[0].crs())
    item.setExtent(extent)
    item.setFrameEnabled(True)
    lay.addLayoutItem(item)
    return item


def layout(project, panels, extent, title, legend_layers, out: Path) -> None:
    """Export one page: one map per list of layers in `panels` side by side, a title, a legend."""
    size, gap = 125.0, 5.0
    lay = QgsLayout(project)
    lay.initializeDefaults()
    width = gap + len(panels) * (size + gap)
    lay.pageCollection().page(0).setPageSize(QgsLayoutSize(width, size + 75, QgsUnitTypes.LayoutMillimeters))
    maps = [_map(lay, layers, extent, gap + i * (size + gap), size) for i, layers in enumerate(panels)]
    label = QgsLayoutItemLabel(lay)
    label.setText(title)
    label.setFont(QFont("DejaVu Sans", 12))
    label.attemptMove(QgsLayoutPoint(gap, 3, QgsUnitTypes.LayoutMillimeters))
    label.attemptResize(QgsLayoutSize(width - 2 * gap, 10, QgsUnitTypes.LayoutMillimeters))
    lay.addLayoutItem(label)
    legend = QgsLayoutItemLegend(lay)
    legend.setLinkedMap(maps[-1])
    legend.setAutoUpdateModel(False)
    root = legend.model().rootGroup()
    root.removeAllChildren()
    for layer in legend_layers:
        root.addLayer(layer)
    legend.setTitle("Legend (as QGIS reads it from the files)")
    legend.setColumnCount(2)
    legend.attemptMove(QgsLayoutPoint(gap, size + 18, QgsUnitTypes.LayoutMillimeters))
    lay.addLayoutItem(legend)
    settings = QgsLayoutExporter.ImageExportSettings()
    settings.dpi = 100
    result = QgsLayoutExporter(lay).exportToImage(str(out), settings)
    if result != QgsLayoutExporter.Success:
        raise SystemExit(f"QGIS could not export {out} (code {result})")
    print(f"wrote {out}")


def render(layers, extent, size_px: int, out: Path) -> None:
    """Render `layers` at `extent` straight through QgsMapSettings + QgsMapRendererParallelJob."""
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(layers[0].crs())
    settings.setExtent(extent)
    settings.setBackgroundColor(QColor(255, 255, 255))
    settings.setOutputSize(QSize(size_px, size_px))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    errors = [f"{err.layerID}: {err.message}" for err in job.errors()]
    if errors or not job.renderedImage().save(str(out), "PNG"):
        raise SystemExit(f"QGIS could not render {out}: {errors}")
    print(f"wrote {out}")


def main() -> None:
    """Render the two layouts: argv = demo output folder, sample tiles folder, destination."""
    demo, tiles, dest = (Path(a) for a in sys.argv[1:4])
    dest.mkdir(parents=True, exist_ok=True)
    app = QgsApplication([], False)
    app.initQgis()
    project = QgsProject.instance()
    naip = QgsRasterLayer(str(tiles / "naip" / f"{PATCH}.tif"), f"NAIP ({PATCH})")
    lc = QgsRasterLayer(str(demo / "landcover.tif"), "landcover.tif")
    polys = QgsVectorLayer(str(demo / "landcover.gpkg"), "landcover.gpkg", "ogr")
    for layer in (naip, lc, polys):
        if not layer.isValid():
            raise SystemExit(f"QGIS could not open {layer.source()}")
        project.addMapLayer(layer)
    if lc.renderer() is None or lc.renderer().type() != "paletted":
        raise SystemExit("landcover.tif did not open with its paletted .qml style")
    extent = QgsRectangle(naip.extent())
    extent.grow(8)
    layout(project, [[naip], [lc]], extent,
           f"geo-ppp demo in QGIS: NAIP ({PATCH}, left) and landcover.tif styled by its .qml (right)",
           [lc], dest / "qgis_map.png")
    polys.setOpacity(0.55)
    layout(project, [[polys, naip]], extent,
           f"landcover.gpkg (its stored style) over NAIP ({PATCH})",
           [polys], dest / "qgis_polygons.png")
    # patch 0 (a house, a dirt road, fields): the styled map at 60 % opacity over the image
    naip0 = QgsRasterLayer(str(tiles / "naip" / "patch0.tif"), "NAIP (patch0)")
    project.addMapLayer(naip0)
    lc.renderer().setOpacity(0.6)
    render([lc, naip0], naip0.extent(), 512, dest / "qgis_overlay.png")
    del naip, naip0, lc, polys, project  # QGIS 3.22 can crash in exitQgis() while layers are alive
    app.exitQgis()


if __name__ == "__main__":
    main()
