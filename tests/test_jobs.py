"""Batch job specs (`geo-ppp run JOB.toml`): validation names the key and the line; runs on real tiles."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner

from geo_ppp.cli import main
from geo_ppp.errors import ConfigError, InputError
from geo_ppp.pipeline.job import RunObserver
from geo_ppp.pipeline.jobs import load_job, run_job
from tests.conftest import ROOT, sample_tile


def by_weak_code(image, valid, weak, seeds, timings):  # noqa: ANN001, ANN201
    """A pixel-wise stand-in for the model: forest codes -> tree, others -> low vegetation."""
    idx = torch.from_numpy(np.where(np.isin(weak, (41, 42, 43)), 1, 2))
    return torch.nn.functional.one_hot(idx, 4).permute(0, 3, 1, 2).float().numpy()


def _spec(tmp_path: Path, prior: Path, body: str = "", extra_region: str = "") -> Path:
    text = textwrap.dedent(f"""\
        [job]
        workdir = "work"

        [defaults]
        legend = "chesapeake"
        prior = "{prior}"
        tile_size = 128
        overlap = 16
        {body}

        [[region]]
        name = "a"
        image = "{sample_tile('naip', 0)}"
        weak_labels = "{sample_tile('nlcd', 0)}"
        out = "out/a.tif"

        [[region]]
        name = "b"
        image = ["{sample_tile('naip', 1)}", "{sample_tile('naip', 2)}"]
        weak_labels = ["{sample_tile('nlcd', 1)}", "{sample_tile('nlcd', 2)}"]
        out = "out/b.tif"
        {extra_region}
        """)
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


def test_a_job_runs_every_region_and_resumes(tmp_path: Path, tiny_lc_prior: Path) -> None:
    spec = _spec(tmp_path, tiny_lc_prior)
    results = run_job(spec, infer=by_weak_code, echo=lambda s: None)
    assert [r.out.name for r in results] == ["a.tif", "b.tif"]
    for r in results:
        with rasterio.open(r.out) as ds:
            assert set(np.unique(ds.read(1))) <= {0, 2, 3}
        assert r.outputs["qml"].exists() and r.outputs["config"].exists()
    first = {r.out: r.out.read_bytes() for r in results}
    # the work dirs were kept (the spec names one): a rerun recomputes nothing and writes the same maps
    again = run_job(spec, infer=by_weak_code, overwrite=True, echo=lambda s: None)
    assert all(r.stats["ran"] == 0 and r.stats["resumed"] > 0 for r in again)
    assert {r.out: r.out.read_bytes() for r in again} == first


@pytest.mark.parametrize(
    "body, extra, message",
    [
        ("tile = 3", "", "job.toml:9: unknown key 'tile' in [defaults]"),
        ("steps = 'many'", "", "job.toml:9: steps must be int"),
        ("", "colour = 'red'", "unknown key 'colour' in [region]"),
    ],
)
def test_spec_errors_name_the_key_and_the_line(tmp_path: Path, tiny_lc_prior: Path, body: str, extra: str,
                                               message: str):
    spec = _spec(tmp_path, tiny_lc_prior, body, extra)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_job(spec)


def test_missing_paths_and_keys_are_named_before_anything_runs(tmp_path: Path, tiny_lc_prior: Path) -> None:
    spec = _spec(tmp_path, tiny_lc_prior)
    text = spec.read_text().replace("patch1.tif\", \"", "patch1_missing.tif\", \"", 1)
    spec.write_text(text)
    line = next(i + 1 for i, ln in enumerate(text.splitlines()) if "patch1_missing" in ln)
    with pytest.raises(InputError, match=f"job.toml:{line}: image of region 'b': .*patch1_missing.tif does not exist"):
        load_job(spec)
    spec.write_text(_spec(tmp_path, tiny_lc_prior).read_text().replace('out = "out/b.tif"', ""))
    with pytest.raises(ConfigError, match="region 'b' misses the required key 'out'"):
        load_job(spec)
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_a_region_that_fails_planning_stops_the_job_before_any_output(tmp_path: Path,
                                                                      tiny_lc_prior: Path) -> None:
    """Region b's weak labels miss its image: region a must not have been written either."""
    spec = _spec(tmp_path, tiny_lc_prior)
    spec.write_text(spec.read_text().replace(
        f'weak_labels = ["{sample_tile("nlcd", 1)}", "{sample_tile("nlcd", 2)}"]',
        f'weak_labels = "{sample_tile("nlcd", 5)}"',
    ))
    res = CliRunner().invoke(main, ["run", str(spec)])
    assert res.exit_code == 1
    assert "region 'b'" in res.output and "do not overlap" in res.output
    assert not list((tmp_path / "out").glob("*.tif")) and not (tmp_path / "work").exists()


def test_check_plans_without_running(tmp_path: Path, tiny_lc_prior: Path) -> None:
    spec = _spec(tmp_path, tiny_lc_prior)
    res = CliRunner().invoke(main, ["run", str(spec), "--check"])
    assert res.exit_code == 0, res.output
    assert "region a: 9 tiles" in res.output and "2 region(s) valid" in res.output
    assert not list((tmp_path / "out").glob("*.tif")) and not (tmp_path / "work").exists()


def test_the_example_job_is_valid() -> None:
    spec = load_job(ROOT / "pipelines" / "sample_tiles.toml")
    assert [r.name for r in spec.regions] == ["patch0", "patch1", "patches2-3", "patch4-north"]
    assert spec.scheduler == "local:2"


def test_a_job_runs_region_level_methods_and_resolves_a_segmenter_beside_the_spec(
    tmp_path: Path, tiny_lc_prior: Path
) -> None:
    from geo_ppp.landcover.segmenter import Segmenter, SegmenterConfig, save_segmenter

    save_segmenter(tmp_path / "seg", Segmenter(SegmenterConfig(width=4, dilations=(1,))),
                   {"legend": "chesapeake", "codes": [1, 2, 3, 4], "bands": [1, 2, 3, 4], "resolution_m": 1.0})
    spec = _spec(tmp_path, tiny_lc_prior, 'method = "distill"\ntrain_steps = 20\nsteps = 1',
                 extra_region='method = "pnp"\nsegmenter = "seg"')
    stages: list[str] = []

    class Watch(RunObserver):
        def stage(self, name: str, done: int, total: int) -> None:
            stages.append(name)

    results = run_job(spec, echo=lambda s: None, progress=Watch())
    configs = [json.loads(r.outputs["config"].read_text()) for r in results]
    assert configs[0]["method"] == "distill" and configs[0]["train_steps"] == 20
    assert configs[1]["method"] == "segmenter" and configs[1]["segmenter"] == str((tmp_path / "seg").resolve())
    assert "teacher" in stages and "train" in stages
    assert all(r.stats["ran"] == r.stats["tiles"] for r in results)
