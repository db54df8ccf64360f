"""Outputs that would land on each other are refused before any work, through the CLI."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from geo_ppp.cli import main
from geo_ppp.errors import GeoPPPError
from geo_ppp.outputs import OutputError, check_distinct
from tests.conftest import NAIP, NLCD


def _snapshot(folder: Path) -> dict[Path, str]:
    return {
        p: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir" for p in folder.rglob("*")
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--out", "a.tif", "--probabilities", "a.tif"],
            "--probabilities a.tif and --out a.tif are the same file",
        ),
        (["--out", "a.tif", "--quicklook", "a.tif"], "--quicklook a.tif: this output is written as a PNG"),
        (["--out", "a.tif", "--probabilities", "./sub/../a.tif"], "--probabilities a.tif and --out a.tif"),
        (["--out", "sub/../a.tif", "--probabilities", "a.tif"], "are the same file"),
        # a product onto a sidecar cannot get that far: its name already says the wrong format
        (["--out", "a.tif", "--probabilities", "a.qml"], "--probabilities a.qml: this output is written as"),
        (["--out", "a.tif", "--vector", "a.tif.json"], "--vector a.tif.json: this output is written as"),
        (["--out", "a.tif", "--quicklook", "a.tif.work/q.png"], "inside the work dir"),
        (
            ["--out", "a.tif", "--workdir", "w", "--probabilities", "w/tiles/p.tif"],
            "lies inside the work dir w",
        ),
        # a kept work dir is the run's too (tiles, teacher, segmenter cleared by --no-resume)
        (
            ["--out", "a.tif", "--workdir", "w", "--vector", "w/v.gpkg"],
            "--vector v.gpkg lies inside the work dir",
        ),
        (["--out", "a.tif", "--workdir", "a.tif"], "--out a.tif is also the work dir"),
    ],
)
def test_colliding_outputs_are_refused_and_nothing_changes(
    tmp_path: Path, monkeypatch, args, message
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.tif").write_bytes(b"an older map the user keeps")
    (tmp_path / "sub").mkdir()
    before = _snapshot(tmp_path)
    res = CliRunner().invoke(main, ["segment", str(NAIP), "--weak-labels", str(NLCD), "--overwrite", *args])
    assert res.exit_code == 1, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    assert _snapshot(tmp_path) == before


def test_a_symlink_onto_the_map_is_the_same_file(tmp_path: Path) -> None:
    (tmp_path / "a.tif").write_bytes(b"x")
    (tmp_path / "link.tif").symlink_to(tmp_path / "a.tif")
    with pytest.raises(OutputError, match="same file"):
        check_distinct({"--out": tmp_path / "a.tif", "--probabilities": tmp_path / "link.tif"})
    check_distinct({"--out": tmp_path / "a.tif", "--probabilities": tmp_path / "b.tif"})  # distinct: fine
    assert issubclass(OutputError, GeoPPPError)


def _job(tmp_path: Path, region_b: str) -> Path:
    text = textwrap.dedent(f"""\
        [job]
        workdir = "work"

        [[region]]
        name = "a"
        image = "{NAIP}"
        weak_labels = "{NLCD}"
        out = "out/a.tif"
        probabilities = "out/a_p.tif"

        [[region]]
        name = "b"
        image = "{NAIP}"
        weak_labels = "{NLCD}"
        {region_b}
        """)
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "region_b, message",
    [
        ('out = "out/a_p.tif"', "region 'b': --out a_p.tif and region 'a': --probabilities a_p.tif"),
        (
            'out = "out/b.tif"\nprobabilities = "out/a.tif"',
            "region 'b': --probabilities a.tif and region 'a': --out",
        ),
        ('out = "out/b.tif"\nvector = "work/a/tiles/v.gpkg"', "inside region 'a': the work dir"),
        # a product in another region's work dir, or in its own, outside tiles/ (issue 24)
        (
            'out = "out/b.tif"\nvector = "work/a/v.gpkg"',
            "--vector v.gpkg lies inside region 'a': the work dir",
        ),
        (
            'out = "out/b.tif"\nquicklook = "work/b/q.png"',
            "--quicklook q.png lies inside region 'b': the work dir",
        ),
        ('out = "work/a/b.tif"', "region 'b': --out b.tif lies inside region 'a': the work dir"),
    ],
)
@pytest.mark.parametrize("check", [True, False])
def test_job_outputs_collide_across_regions(tmp_path: Path, region_b: str, message: str, check: bool) -> None:
    spec = _job(tmp_path, region_b)
    before = _snapshot(tmp_path)
    res = CliRunner().invoke(main, ["run", str(spec), *(["--check"] if check else [])])
    assert res.exit_code == 1, res.output
    assert "outputs collide" in res.output and message in res.output
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "out.png"], "--out out.png: this output is written as a Cloud Optimized GeoTIFF"),
        (["--out", "a.tif", "--vector", "x.shp"], "--vector x.shp: this output is written as a GeoPackage"),
        (["--out", "a.tif", "--probabilities", "p.jpg"], "must end in .tif or .tiff (e.g. p.tif)"),
        (["--out", "a.tif", "--quicklook", "q.tif"], "written as a PNG"),
    ],
)
def test_output_names_must_say_their_format(tmp_path: Path, monkeypatch, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["segment", str(NAIP), "--weak-labels", str(NLCD), *args])
    assert res.exit_code == 1, res.output
    assert message in res.output
    assert not list(tmp_path.iterdir())
