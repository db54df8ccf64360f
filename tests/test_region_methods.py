"""--method qr: a segmenter trained on the region from the weak labels alone (Rolf et al.'s QR)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geo_ppp.errors import ConfigError, InputError
from geo_ppp.landcover.segmenter import (
    Segmenter,
    SegmenterConfig,
    load_segmenter,
    save_segmenter,
    train_segmenter,
)
from geo_ppp.pipeline import segment
from tests.conftest import NAIP, NLCD, TRUTH, sample_tile

EXE = str(Path(sys.executable).with_name("geo-ppp"))


def _two_class_crops(gen: torch.Generator, batch: int, crop: int):
    """Bright pixels are class 1, dark ones class 0; the 'weak labels' say so only as a 70/30 prior."""
    image = torch.zeros(batch, 4, crop, crop)
    bright = torch.rand(batch, 1, crop, crop, generator=gen) > 0.5
    image[:, :3] = torch.where(bright, 200.0, 40.0)
    image[:, 3] = 100.0
    target = torch.stack([torch.where(bright[:, 0], 0.3, 0.7), torch.where(bright[:, 0], 0.7, 0.3)], 1)
    return image, target, torch.ones(batch, 1, crop, crop)


@pytest.mark.parametrize("loss", ["qr", "distill"])
def test_a_segmenter_learns_from_soft_targets_and_is_deterministic(tmp_path: Path, loss: str):
    config = SegmenterConfig(in_channels=5, classes=2, width=8, dilations=(1, 1), steps=60, crop=16, batch_size=8,
                             loss=loss)
    mean, std = torch.tensor([0.5, 0.5, 0.5, 0.4, 0.0]), torch.tensor([0.3, 0.3, 0.3, 0.1, 0.5])
    a = train_segmenter(_two_class_crops, config, mean, std, seed=3)
    b = train_segmenter(_two_class_crops, config, mean, std, seed=3)
    image, target, _ = _two_class_crops(torch.Generator().manual_seed(99), 4, 32)
    pa, pb = a.probabilities(image), b.probabilities(image)
    assert torch.equal(pa, pb)  # same seed, same weights, same maps
    truth = target.argmax(1)
    assert (pa.argmax(1) == truth).float().mean() > 0.95  # sharper than its 70/30 supervision, and right
    # saved and loaded without pickle: the same outputs
    save_segmenter(tmp_path / "seg", a, {"legend": "two"})
    loaded, meta = load_segmenter(tmp_path / "seg")
    assert meta == {"legend": "two"} and torch.allclose(loaded.probabilities(image), pa)


def test_bad_segmenters_and_settings_are_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown segmenter loss"):
        SegmenterConfig(loss="mse")
    with pytest.raises(InputError, match="not a geo_ppp segmenter"):
        load_segmenter(tmp_path)
    folder = tmp_path / "seg"
    save_segmenter(folder, Segmenter(SegmenterConfig(width=4, dilations=(1,))), {})
    (folder / "model.safetensors").write_bytes(pickle.dumps({"net.0.weight": torch.zeros(1)}))
    with pytest.raises(InputError, match="cannot be loaded"):
        load_segmenter(folder)  # a pickle is refused, never unpickled


def test_method_qr_maps_a_region_and_resumes_without_training_again(tmp_path: Path, tiny_lc_prior):
    images = [str(sample_tile("naip", i)) for i in (6, 7)]
    weak = [str(sample_tile("nlcd", i)) for i in (6, 7)]
    work = tmp_path / "work"
    kw = {"prior": tiny_lc_prior, "method": "qr", "train_steps": 40, "workdir": work, "seed": 5}
    res = segment(images, weak, out=tmp_path / "a.tif", **kw)
    config = json.loads((tmp_path / "a.tif.json").read_text())
    assert config["method"] == "qr" and config["train_steps"] == 40 and res.stats["ran"] == res.stats["tiles"]
    assert (work / "segmenter" / "model.safetensors").exists()
    with rasterio.open(tmp_path / "a.tif") as ds:
        first = ds.read(1)
    assert set(np.unique(first)) <= {0, 1, 2, 3, 4} and (first > 0).sum() == 2 * 256 * 256  # every image pixel
    # the same run again on its work dir: the tiles and the segmenter are reused, the map is identical
    trained = (work / "segmenter" / "model.safetensors").stat().st_mtime_ns
    res = segment(images, weak, out=tmp_path / "a.tif", overwrite=True, **kw)
    assert res.stats["resumed"] == res.stats["tiles"]
    assert (work / "segmenter" / "model.safetensors").stat().st_mtime_ns == trained
    with rasterio.open(tmp_path / "a.tif") as ds:
        assert np.array_equal(ds.read(1), first)
    # a plug-and-play run refuses this work dir's qr tiles instead of mixing them in
    with pytest.raises(InputError, match="method"):
        segment(images, weak, out=tmp_path / "b.tif", prior=tiny_lc_prior, workdir=work, seed=5)


def test_method_qr_bad_input_through_the_cli(tmp_path: Path, tiny_lc_prior):
    base = [EXE, "segment", str(NAIP), "--weak-labels", str(NLCD), "--prior", str(tiny_lc_prior), "--progress", "none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cases = [
        (["--method", "crf"], "Invalid value for '--method'"),
        (["--method", "qr", "--train-steps", "0"], "--train-steps must be >= 1"),
        (["--method", "qr", "--scheduler", "local:1"], "without --scheduler"),
    ]
    for extra, message in cases:
        out = tmp_path / "m.tif"
        res = subprocess.run([*base, "--out", str(out), *extra], capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode != 0 and message in res.stderr and "Traceback" not in res.stderr, (extra, res.stderr)
        assert list(tmp_path.iterdir()) == []  # nothing written
    assert TRUTH.exists()
