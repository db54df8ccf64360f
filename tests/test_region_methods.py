"""Region-level methods: --method qr and distill, --save-segmenter / --segmenter, training resume."""

from __future__ import annotations

import json
import os
import pickle
import shutil
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
from geo_ppp.pipeline.job import RunObserver
from tests.conftest import NAIP, NLCD, TRUTH, sample_tile

EXE = str(Path(sys.executable).with_name("geo-ppp"))


def _two_class_crops(gen: torch.Generator, batch: int, crop: int):
    """Bright pixels are class 1, dark ones class 0; the 'weak labels' say so only as a 70/30 prior."""
    image = torch.zeros(batch, 4, crop, crop)
    bright = torch.rand(batch, 1, crop, crop, generator=gen) > 0.5
    image[:, :3] = torch.where(bright, 200.0, 40.0)
    image[:, 3] = 100.0
    target = torch.stack([torch.where(bright[:, 0], 0.3, 0.7), torch.where(bright[:, 0], 0.7, 0.3)], 1)
    return image, target, torch.ones(batch, 1, crop, crop), None


def _rerun_resumes_everything(images, weak, out: Path, work: Path, first: np.ndarray, **kw) -> None:
    """The same run again on its work dir: no tile runs, no training, the same map."""
    trained = (work / "segmenter" / "model.safetensors").stat().st_mtime_ns
    res = segment(images, weak, out=out, overwrite=True, **kw)  # kw holds workdir=work
    assert res.stats["resumed"] == res.stats["tiles"]
    assert (work / "segmenter" / "model.safetensors").stat().st_mtime_ns == trained
    with rasterio.open(out) as ds:
        assert np.array_equal(ds.read(1), first)


@pytest.mark.parametrize("loss", ["qr", "distill"])
def test_a_segmenter_learns_from_soft_targets_and_is_deterministic(tmp_path: Path, loss: str):
    config = SegmenterConfig(in_channels=5, classes=2, width=8, dilations=(1, 1), steps=150, crop=16, batch_size=8,
                             loss=loss)
    mean, std = torch.tensor([0.5, 0.5, 0.5, 0.4, 0.0]), torch.tensor([0.3, 0.3, 0.3, 0.1, 0.5])
    a = train_segmenter(_two_class_crops, config, mean, std, seed=3)
    b = train_segmenter(_two_class_crops, config, mean, std, seed=3)
    image, target, _, _ = _two_class_crops(torch.Generator().manual_seed(99), 4, 32)
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
    _rerun_resumes_everything(images, weak, tmp_path / "a.tif", work, first, **kw)
    # a plug-and-play run refuses this work dir's qr tiles instead of mixing them in
    with pytest.raises(InputError, match="method"):
        segment(images, weak, out=tmp_path / "b.tif", prior=tiny_lc_prior, workdir=work, seed=5)


def test_method_qr_bad_input_through_the_cli(tmp_path: Path, tiny_lc_prior):
    base = [EXE, "segment", str(NAIP), "--weak-labels", str(NLCD), "--prior", str(tiny_lc_prior), "--progress", "none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cases = [
        (["--method", "crf"], "Invalid value for '--method'"),
        (["--method", "qr", "--train-steps", "0"], "--train-steps must be >= 1"),
    ]
    for extra, message in cases:
        out = tmp_path / "m.tif"
        res = subprocess.run([*base, "--out", str(out), *extra], capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode != 0 and message in res.stderr and "Traceback" not in res.stderr, (extra, res.stderr)
        assert list(tmp_path.iterdir()) == []  # nothing written
    assert TRUTH.exists()


class _Stop(Exception):
    pass


def test_training_resumes_from_its_checkpoint_to_the_same_weights(tmp_path: Path):
    config = SegmenterConfig(in_channels=5, classes=2, width=8, dilations=(1, 1), steps=50, crop=16, batch_size=4,
                             loss="distill")
    mean, std = torch.tensor([0.5, 0.5, 0.5, 0.4, 0.0]), torch.tensor([0.3, 0.3, 0.3, 0.1, 0.5])
    whole = train_segmenter(_two_class_crops, config, mean, std, seed=1)
    ckpt = tmp_path / "state.pt"

    def stop_at_35(step: int, steps: int) -> None:
        if step == 35:
            raise _Stop

    with pytest.raises(_Stop):
        train_segmenter(_two_class_crops, config, mean, std, seed=1, checkpoint=ckpt, checkpoint_every=10,
                        progress=stop_at_35)
    assert ckpt.exists()
    seen: list[int] = []
    resumed = train_segmenter(_two_class_crops, config, mean, std, seed=1, checkpoint=ckpt, checkpoint_every=10,
                              progress=lambda step, steps: seen.append(step))
    assert seen[0] == 30 and seen[-1] == 50  # it went on from the last checkpoint, not from 0
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # a checkpoint of another training (other seed) is refused, not silently mixed in
    with pytest.raises(InputError, match="another training"):
        train_segmenter(_two_class_crops, config, mean, std, seed=2, checkpoint=ckpt)


def test_distill_maps_a_region_saves_its_segmenter_and_the_segmenter_maps_another(
    tmp_path: Path, tiny_lc_prior
):
    images = [str(sample_tile("naip", i)) for i in (6, 7)]
    weak = [str(sample_tile("nlcd", i)) for i in (6, 7)]
    work = tmp_path / "work"
    stages: list[tuple[str, int, int]] = []

    class Watch(RunObserver):
        def stage(self, name: str, done: int, total: int) -> None:
            stages.append((name, done, total))

    kw = {"prior": tiny_lc_prior, "method": "distill", "train_steps": 30, "distill_tiles": 1, "seed": 5,
          "steps": 2, "workdir": work}
    res = segment(images, weak, out=tmp_path / "a.tif", save_segmenter=tmp_path / "seg", progress=Watch(), **kw)
    config = json.loads((tmp_path / "a.tif.json").read_text())
    assert config["method"] == "distill" and config["train_steps"] == 30 and config["distill_tiles"] == 1
    assert res.stats["ran"] == res.stats["tiles"] == 2
    assert res.outputs["segmenter"] == tmp_path / "seg"  # named with the products (summary, jsonl outputs)
    # one teacher tile (plug-and-play), then 30 training steps, then both tiles mapped by the segmenter
    assert len(list((work / "teacher" / "tiles").glob("*.npy"))) == 1
    assert ("teacher", 1, 1) in stages and ("train", 30, 30) in stages
    assert stages.index(("teacher", 1, 1)) < stages.index(("train", 30, 30))
    assert not (work / "segmenter.train").exists()  # the training cache is gone once the segmenter is saved
    saved, meta = load_segmenter(tmp_path / "seg")
    assert meta["codes"] == [1, 2, 3, 4] and meta["bands"] == [1, 2, 3, 4] and meta["method"] == "distill"
    assert meta["resolution_m"] == 1.0 and len(meta["standardisation"]["mean"]) == 5
    assert "map" in meta and "command" in meta  # what made it (the API records an empty command line)
    assert meta["data"]["image"] == [str(Path(p).resolve()) for p in images]
    with rasterio.open(tmp_path / "a.tif") as ds:
        first = ds.read(1)
    assert (first > 0).sum() == 2 * 256 * 256

    # the same run on its work dir: nothing runs or trains again, the map is the same
    _rerun_resumes_everything(images, weak, tmp_path / "a.tif", work, first, **kw)

    # the saved segmenter maps the same region without plug-and-play: the same map as the distill run
    res = segment(images, weak, out=tmp_path / "b.tif", segmenter=tmp_path / "seg", seed=5)
    with rasterio.open(tmp_path / "b.tif") as ds:
        assert np.array_equal(ds.read(1), first)
    assert json.loads((tmp_path / "b.tif.json").read_text())["method"] == "segmenter"
    # ... and another region (one forward pass per tile)
    other = segment([str(sample_tile("naip", 4))], [str(sample_tile("nlcd", 4))], out=tmp_path / "c.tif",
                    segmenter=tmp_path / "seg")
    assert other.stats["ran"] == other.stats["tiles"]
    probs = saved.probabilities(torch.rand(1, 4, 64, 64) * 255)
    assert torch.allclose(probs.sum(1), torch.ones(1, 64, 64))


def test_segmenter_and_distill_bad_input_through_the_cli(tmp_path: Path, tiny_lc_prior):
    seg = tmp_path / "inputs" / "seg"
    save_segmenter(seg, Segmenter(SegmenterConfig(width=4, dilations=(1,))),
                   {"legend": "chesapeake", "codes": [1, 2, 3, 4], "bands": [1, 2, 3, 4], "resolution_m": 1.0})
    pickled = tmp_path / "inputs" / "pickled"
    shutil.copytree(seg, pickled)
    (pickled / "model.safetensors").write_bytes(pickle.dumps({"pixel_in.weight": torch.zeros(1)}))
    corrupt = tmp_path / "inputs" / "corrupt"
    shutil.copytree(seg, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 100)
    existing = tmp_path / "inputs" / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    base = [EXE, "segment", str(NAIP), "--weak-labels", str(NLCD), "--prior", str(tiny_lc_prior), "--progress", "none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cases = [
        (["--segmenter", str(seg), "--legend", "enviroatlas"], "maps the legend 'chesapeake'"),
        (["--segmenter", str(seg), "--bands", "1,2,3"], "trained on 4-band imagery"),
        (["--segmenter", str(pickled)], "cannot be loaded"),
        (["--segmenter", str(corrupt)], "cannot be loaded"),
        (["--segmenter", str(tmp_path / "inputs")], "not a geo_ppp segmenter"),
        (["--segmenter", str(seg), "--method", "distill"], "give one of them"),
        (["--method", "distill", "--distill-tiles", "0"], "--distill-tiles must be >= 1"),
        (["--method", "distill", "--distill-tiles", "2"], "more than the region's 1 tile"),
        (["--distill-tiles", "2"], "add --method distill"),
        (["--save-segmenter", str(tmp_path / "new")], "add --method distill"),
        (["--method", "distill", "--save-segmenter", str(existing)], "already exists"),
    ]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = sorted(p.name for p in (tmp_path / "inputs").rglob("*"))
    for extra, message in cases:
        res = subprocess.run([*base, "--out", str(out_dir / "m.tif"), *extra], capture_output=True, text=True,
                             env=env, timeout=300)
        assert res.returncode != 0 and message in res.stderr and "Traceback" not in res.stderr, (extra, res.stderr)
        assert list(out_dir.iterdir()) == [] and not (tmp_path / "new").exists()  # nothing written
    assert sorted(p.name for p in (tmp_path / "inputs").rglob("*")) == before
    assert (existing / "keep.txt").read_text() == "mine"


def test_export_onnx_matches_torch_on_real_imagery_and_carries_deepness_metadata(tmp_path: Path):
    import onnxruntime as ort

    torch.manual_seed(0)
    model = Segmenter(SegmenterConfig(width=8, dilations=(1, 2)), torch.tensor([0.4, 0.4, 0.3, 0.5, 0.2]),
                      torch.tensor([0.1, 0.1, 0.1, 0.2, 0.3]))
    meta = {"legend": "chesapeake", "codes": [1, 2, 3, 4], "bands": [1, 2, 3, 4], "resolution_m": 1.0,
            "class_names": ["water", "tree canopy", "low vegetation", "impervious/built"]}
    save_segmenter(tmp_path / "seg", model, meta)
    out = tmp_path / "seg.onnx"
    res = subprocess.run([EXE, "export-onnx", str(tmp_path / "seg"), str(out), "--tile-size", "128"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    props = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    assert props["model_type"] == "Segmentor" and props["resolution"] == 100.0 and props["tile_size"] == 128
    assert props["class_names"] == {"0": "water", "1": "tree canopy", "2": "low vegetation", "3": "impervious/built"}
    # Deepness feeds pixels / 255, standardised with these: the graph gets the pixels back in 0-255
    std, mean = np.array(props["standardization_std"]), np.array(props["standardization_mean"])
    with rasterio.open(NAIP) as ds:
        pixels = ds.read(window=((0, 128), (0, 128))).astype(np.float32)  # real NAIP, (4, 128, 128)
    fed = ((pixels / 255.0 - mean[:, None, None]) / std[:, None, None])[None].astype(np.float32)
    got = session.run(None, {"image": fed})[0]
    want = load_segmenter(tmp_path / "seg")[0].probabilities(torch.from_numpy(pixels)[None]).numpy()
    assert got.shape == (1, 4, 128, 128) and np.abs(got - want).max() < 1e-4
    # bad input: an existing file without --overwrite, a folder that is not a segmenter, a non-.onnx name
    before = out.read_bytes()
    for args, message in (([str(tmp_path / "seg"), str(out)], "already exists"),
                          ([str(tmp_path), str(tmp_path / "x.onnx")], "not a geo_ppp segmenter"),
                          ([str(tmp_path / "seg"), str(tmp_path / "x.pt")], "must end in .onnx")):
        res = subprocess.run([EXE, "export-onnx", *args], capture_output=True, text=True, timeout=300)
        assert res.returncode != 0 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert out.read_bytes() == before and not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.pt").exists()


def test_a_segmenter_of_another_run_is_never_reused(tmp_path: Path, tiny_lc_prior):
    images, weak = [str(sample_tile("naip", 6))], [str(sample_tile("nlcd", 6))]
    work = tmp_path / "work"
    kw = {"prior": tiny_lc_prior, "method": "distill", "distill_tiles": 1, "steps": 1, "workdir": work}
    segment(images, weak, out=tmp_path / "a.tif", train_steps=10, **kw)
    first = (work / "segmenter" / "model.safetensors").read_bytes()
    # other training settings on the same work dir: its tiles are refused (as for any other run) ...
    with pytest.raises(InputError, match="different run"):
        segment(images, weak, out=tmp_path / "b.tif", train_steps=12, **kw)
    # ... and --no-resume clears the teacher's tiles and the segmenter with them: trained again
    segment(images, weak, out=tmp_path / "b.tif", train_steps=12, resume=False, **kw)
    assert (work / "segmenter" / "model.safetensors").read_bytes() != first
    # a segmenter left by another run whose map tiles were never written (killed after training) is
    # not taken for this run's: it carries the digest of the run that trained it
    shutil.rmtree(work / "tiles")
    (work / "tiles").mkdir()
    segment(images, weak, out=tmp_path / "c.tif", train_steps=10, **kw)
    assert (work / "segmenter" / "model.safetensors").read_bytes() == first  # seeded: the first run's again


def test_save_segmenter_never_lands_on_another_output_or_a_foreign_folder(tmp_path: Path, tiny_lc_prior):
    base = [EXE, "segment", str(NAIP), "--weak-labels", str(NLCD), "--prior", str(tiny_lc_prior), "--progress",
            "none", "--method", "distill", "--overwrite"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    out = tmp_path / "run" / "m.tif"
    out.parent.mkdir()
    cases = [
        (["--out", str(out), "--save-segmenter", str(out)], "overlaps --out"),
        (["--out", str(out), "--save-segmenter", str(out.parent)], "overlaps --out"),
        (["--out", str(out), "--workdir", str(tmp_path / "w"), "--save-segmenter", str(tmp_path / "w" / "seg")],
         "overlaps the work dir"),
        (["--out", str(out), "--save-segmenter", str(mine)], "holds something else than a saved segmenter"),
    ]
    for extra, message in cases:
        res = subprocess.run([*base, *extra], capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode != 0 and message in res.stderr and "Traceback" not in res.stderr, (extra, res.stderr)
        assert list(out.parent.iterdir()) == [] and not (tmp_path / "w").exists()
    assert (mine / "notes.txt").read_text() == "mine"
    res = subprocess.run([EXE, "export-onnx", str(mine), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "is a folder" in res.stderr


def test_a_region_too_small_to_learn_from_says_so(tmp_path: Path, tiny_lc_prior):
    with rasterio.open(NAIP) as ds:
        left, bottom = ds.bounds.left, ds.bounds.bottom
    aoi = f"{left},{bottom},{left + 6},{bottom + 6}"  # 36 valid pixels in the one tile
    with pytest.raises(InputError, match="1024 valid image pixels.*--method pnp"):
        segment([str(NAIP)], [str(NLCD)], out=tmp_path / "m.tif", prior=tiny_lc_prior, method="distill",
                steps=1, train_steps=5, aoi=aoi)
    assert not (tmp_path / "m.tif").exists()
