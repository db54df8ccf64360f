"""Style sidecars of class maps: the QGIS .qml and the GDAL category names in .aux.xml."""

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geo_ppp.errors import InputError
from geo_ppp.geo.grid import Grid
from geo_ppp.geo.legend import Legend, load_legend
from geo_ppp.io import qml_path, write_category_names, write_class_map, write_qml
from geo_ppp.io.styles import aux_xml_path
from geo_ppp.outputs import OutputError


@pytest.fixture
def legend() -> Legend:
    return load_legend("chesapeake")


def _hex(rgb):
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def test_sidecar_paths():
    assert qml_path("out/map.tif") == Path("out/map.qml")
    assert qml_path(Path("/a/b.c/map.tiff")) == Path("/a/b.c/map.qml")
    assert aux_xml_path("out/map.tif") == Path("out/map.tif.aux.xml")


def test_qml_holds_each_class_code_colour_and_name(tmp_path, legend):
    out = write_qml(tmp_path / "map.qml", legend)
    assert out == tmp_path / "map.qml"
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE qgis")
    root = ET.fromstring(text)
    assert root.tag == "qgis" and root.get("version", "").startswith("3.")
    renderer = root.find("pipe/rasterrenderer")
    assert renderer is not None
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = renderer.findall("colorPalette/paletteEntry")
    got = [(int(e.get("value")), e.get("color"), e.get("label"), e.get("alpha")) for e in entries]
    want = [
        (c, _hex(rgb), n, "255") for c, n, rgb in zip(legend.codes, legend.names, legend.colors, strict=True)
    ]
    assert got == want
    # nodata drawn transparent, codes never interpolated
    pixel = renderer.find("rasterTransparency/singleValuePixelList/pixelListEntry")
    assert (
        pixel.get("min") == pixel.get("max") == str(legend.nodata)
        and pixel.get("percentTransparent") == "100"
    )
    resampling = root.find("pipe/provider/resampling")
    assert (
        resampling.get("zoomedInResamplingMethod")
        == resampling.get("zoomedOutResamplingMethod")
        == "nearestNeighbour"
    )
    # no temporary file left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.qml"]


def test_qml_band_nodata_and_names_needing_escapes(tmp_path):
    legend = Legend("odd", (3, 7), ('a & b <"c">', "wäter"), ((1, 2, 3), (250, 251, 252)), nodata=255)
    root = ET.parse(write_qml(tmp_path / "s.qml", legend, band=2, nodata=9)).getroot()
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("band") == "2"
    assert [e.get("label") for e in renderer.iter("paletteEntry")] == ['a & b <"c">', "wäter"]
    assert [e.get("color") for e in renderer.iter("paletteEntry")] == ["#010203", "#fafbfc"]
    assert renderer.find(".//pixelListEntry").get("min") == "9"
    # default nodata: the legend's
    default = ET.parse(write_qml(tmp_path / "d.qml", legend)).getroot()
    assert default.find(".//pixelListEntry").get("min") == "255"


@pytest.mark.parametrize("kwargs", [{"band": 0}, {"band": "1"}, {"nodata": 256}, {"nodata": -1}])
def test_qml_refuses_bad_band_or_nodata(tmp_path, legend, kwargs):
    with pytest.raises(InputError):
        write_qml(tmp_path / "s.qml", legend, **kwargs)
    assert not (tmp_path / "s.qml").exists()


def test_qml_replaces_an_existing_style(tmp_path, legend):
    path = tmp_path / "map.qml"
    path.write_text("old")
    write_qml(path, legend)
    assert ET.parse(path).getroot().tag == "qgis"


def test_missing_folder_is_a_clear_oserror(tmp_path, legend):
    missing = tmp_path / "nope"
    with pytest.raises(OutputError, match="does not exist") as info:
        write_qml(missing / "map.qml", legend)
    assert isinstance(info.value, OSError)
    with pytest.raises(OutputError, match="does not exist"):
        write_category_names(missing / "map.tif", legend)
    assert not missing.exists()


def _categories(aux: Path) -> list[str]:
    band = next(b for b in ET.parse(aux).getroot().findall("PAMRasterBand") if b.get("band") == "1")
    return [c.text or "" for c in band.findall("CategoryNames/Category")]


def test_category_names_xml(tmp_path, legend):
    aux = write_category_names(tmp_path / "map.tif", legend)
    assert aux == tmp_path / "map.tif.aux.xml"
    assert _categories(aux) == ["", "water", "tree canopy", "low vegetation", "impervious/built"]
    # codes that are not classes get empty names, up to the largest class code
    sparse = Legend("sparse", (2, 5), ("x", "y"), ((0, 0, 0), (1, 1, 1)), nodata=0)
    assert _categories(write_category_names(tmp_path / "s.tif", sparse)) == ["", "", "x", "", "", "y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif.aux.xml", "s.tif.aux.xml"]


def test_category_names_merge_keeps_other_content(tmp_path, legend):
    aux = tmp_path / "map.tif.aux.xml"
    aux.write_text(
        "<PAMDataset>\n"
        '  <Metadata><MDI key="RUN">keep-me</MDI></Metadata>\n'
        '  <PAMRasterBand band="1">\n'
        "    <CategoryNames><Category>stale</Category></CategoryNames>\n"
        '    <Metadata><MDI key="STATISTICS_MAXIMUM">4</MDI></Metadata>\n'
        "  </PAMRasterBand>\n"
        '  <PAMRasterBand band="2"><Description>second</Description></PAMRasterBand>\n'
        "</PAMDataset>\n"
    )
    write_category_names(tmp_path / "map.tif", legend)
    root = ET.parse(aux).getroot()
    assert root.find("Metadata/MDI").text == "keep-me"
    band1 = [b for b in root.findall("PAMRasterBand") if b.get("band") == "1"]
    assert len(band1) == 1
    assert band1[0].find("Metadata/MDI").text == "4"
    assert len(band1[0].findall("CategoryNames")) == 1
    assert _categories(aux) == ["", "water", "tree canopy", "low vegetation", "impervious/built"]
    assert root.find("PAMRasterBand[@band='2']/Description").text == "second"
    # writing twice gives the same file
    before = aux.read_text()
    write_category_names(tmp_path / "map.tif", legend)
    assert aux.read_text() == before


def test_category_names_add_band1_to_a_sidecar_without_it(tmp_path, legend):
    aux = tmp_path / "map.tif.aux.xml"
    aux.write_text(
        '<PAMDataset><PAMRasterBand band="2"><Description>b2</Description></PAMRasterBand></PAMDataset>'
    )
    write_category_names(tmp_path / "map.tif", legend)
    bands = ET.parse(aux).getroot().findall("PAMRasterBand")
    assert [b.get("band") for b in bands] == ["1", "2"]
    assert _categories(aux)[1:] == list(legend.names)


@pytest.mark.parametrize("content", ["not xml <", "<Other/>"])
def test_category_names_refuse_a_foreign_sidecar(tmp_path, legend, content):
    aux = tmp_path / "map.tif.aux.xml"
    aux.write_text(content)
    with pytest.raises(InputError, match="aux.xml"):
        write_category_names(tmp_path / "map.tif", legend)
    assert aux.read_text() == content


def test_category_names_round_trip_through_gdal(tmp_path, legend):
    grid = Grid(rasterio.crs.CRS.from_epsg(26917), Affine(1.0, 0.0, 535399.0, 0.0, -1.0, 4170486.0), 8, 8)
    codes = np.tile(np.arange(5, dtype=np.uint8), 13)[:64].reshape(8, 8)
    tif = write_class_map(tmp_path / "map.tif", codes, grid, legend)
    write_category_names(tif, legend)
    want = ["", *legend.names]
    gdalinfo = shutil.which("gdalinfo")
    if gdalinfo is None:
        assert _categories(aux_xml_path(tif)) == want
        pytest.skip("gdalinfo is not installed; checked the XML only")
    info = json.loads(
        subprocess.run([gdalinfo, "-json", str(tif)], capture_output=True, text=True, check=True).stdout
    )
    band = info["bands"][0]
    assert band["categories"] == want
    assert band["colorInterpretation"] == "Palette" and band["noDataValue"] == legend.nodata
    # 3 bits per pixel: QGIS lists 8 colour-table entries, not 256
    assert band["colorTable"]["count"] == 8 and band["metadata"]["IMAGE_STRUCTURE"]["NBITS"] == "3"
    # the raster attribute table (QGIS >= 3.30 builds its legend from it): the classes only
    rat = info.get("rat") or band["rat"]
    assert [r["f"] for r in rat["row"]] == [
        [c, n, *rgb, 255] for c, n, rgb in zip(legend.codes, legend.names, legend.colors, strict=True)
    ]
    # the colour table the map already carried is untouched by the sidecar
    with rasterio.open(tif) as ds:
        cmap = ds.colormap(1)
    assert [cmap[c][:3] for c in legend.codes] == list(legend.colors)
