"""train-prior and its kin can be trusted: reproducible, resumable as promised, outputs whole or absent.

Issue 24 (round three): the same command and seed give the same bytes in any process; a run killed
at a checkpoint and resumed ends with the uninterrupted run's weights; a checkpoint is never
continued under other data or settings, nor published under a step count it did not reach; every
product is checked and locked before any work and appears whole; a failed run leaves nothing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from geo_ppp.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--windows", "16", "--batch-size", "8", "--base-channels", "8"]


def write_labels(folder: Path, tiles: int = 4, px: int = 512, res: float = 2.0, codes=(1, 2, 3, 5)) -> Path:
    """``tiles`` label GeoTIFFs of 16-pixel blocks of chesapeake codes, side by side (1 km each)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(tiles):
        rng = np.random.default_rng(k)
        blocks = rng.choice(codes, size=(px // 16, px // 16))
        data = np.repeat(np.repeat(blocks, 16, 0), 16, 1).astype("uint8")
        x0, y0 = 500000 + (k % 2) * px * res, 4200000 - (k // 2) * px * res
        profile = {"driver": "GTiff", "width": px, "height": px, "count": 1, "dtype": "uint8",
                   "crs": "EPSG:26917", "transform": from_origin(x0, y0, res, res), "nodata": 15}
        with rasterio.open(folder / f"t{k}.tif", "w", **profile) as dst:
            dst.write(data[None])
    return folder


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> Path:
    return write_labels(tmp_path_factory.mktemp("labels") / "tiles")


def _cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --- reproducible -----------------------------------------------------------------------------


def test_same_command_and_seed_give_the_same_bytes_in_any_process(labels, tmp_path):
    """Several label files used to give other windows per process (torchgeo drew the file from the global RNG)."""
    outs = []
    for hashseed in ("1", "2"):
        out = tmp_path / f"p{hashseed}"
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        cmd = [sys.executable, "-m", "geo_ppp.cli", "train-prior", "--dataset", "landcover", "--labels", str(labels),
               "--labels", f"{labels / 't0.tif'},{labels / 't3.tif'}@0.5", *TINY, "--steps", "3", "--out", str(out)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        outs.append(out)
    assert (outs[0] / "model.safetensors").read_bytes() == (outs[1] / "model.safetensors").read_bytes()
    data = [json.loads((o / "config.json").read_text())["meta"]["data"] for o in outs]
    assert data[0] == data[1]


# --- resumable as promised --------------------------------------------------------------------

_SLOW_RUN = """
import sys, time
from geo_ppp.landcover import prior, prior_data
prior.LANDCOVER_TRAIN["checkpoint_every"] = 4
inner = prior_data.augmented_batches
def slow(*a, **k):
    source = inner(*a, **k)
    def draw(gen, n):
        time.sleep(float(sys.argv[1]))  # time to kill it; the batches are the same
        return source(gen, n)
    return draw
prior.augmented_batches = slow
from geo_ppp.cli import main
main(sys.argv[2:])
"""


def _train(out: Path, labels: Path, delay: float, steps: int = 12):
    args = ["train-prior", "--dataset", "landcover", "--labels", str(labels), *TINY, "--steps", str(steps),
            "--out", str(out)]
    return subprocess.Popen([sys.executable, "-c", _SLOW_RUN, str(delay), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # three training processes, ~40 s on two shared cores
def test_a_run_killed_at_a_checkpoint_and_resumed_equals_an_uninterrupted_one(labels, tmp_path):
    whole = _train(tmp_path / "whole", labels, 0.0)
    assert whole.wait(300) == 0, whole.stderr.read()[-2000:]
    killed = tmp_path / "killed"
    run = _train(killed, labels, 0.3)
    ckpt = killed / ".train" / "checkpoint.safetensors"
    deadline = time.time() + 240
    while not ckpt.exists() and run.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert ckpt.exists(), run.stderr.read()[-2000:] if run.poll() is not None else "no checkpoint in time"
    run.send_signal(signal.SIGKILL)
    run.wait(60)
    meta = json.loads((killed / "config.json").read_text())["meta"]
    assert meta["trained_steps"] < 12  # it was stopped part-way, and published the prior so far
    resumed = _train(killed, labels, 0.0)  # the same command again; the dead run's lock is stale
    assert resumed.wait(300) == 0, resumed.stderr.read()[-2000:]
    assert (killed / "model.safetensors").read_bytes() == (tmp_path / "whole" / "model.safetensors").read_bytes()
    assert json.loads((killed / "config.json").read_text())["meta"]["trained_steps"] == 12


def test_steps_below_the_checkpoint_are_refused_not_mislabelled(labels, tmp_path):
    out = tmp_path / "p"
    assert _cli("train-prior", "--dataset", "landcover", "--labels", labels, *TINY, "--steps", "4",
                "--out", out).exit_code == 0
    config = json.loads((out / "config.json").read_text())
    config["meta"]["trained_steps"] = 2  # as a stopped run would leave it: resumable without --overwrite
    (out / "config.json").write_text(json.dumps(config))
    before = (out / "model.safetensors").read_bytes()
    res = _cli("train-prior", "--dataset", "landcover", "--labels", labels, *TINY, "--steps", "3", "--out", out)
    assert res.exit_code != 0
    assert "at step 4, past --steps 3; pass --steps 4 or more" in res.output
    assert (out / "model.safetensors").read_bytes() == before


SMALL = ["train-prior", "--dataset", "landcover", "--windows", "8", "--batch-size", "4"]


def _stopped_at(out: Path, step: int) -> None:
    """Make the published prior look like a stopped run's (resumable without --overwrite)."""
    config = json.loads((out / "config.json").read_text())
    config["meta"]["trained_steps"] = step
    (out / "config.json").write_text(json.dumps(config))


def test_a_checkpoint_of_other_settings_is_refused_in_one_line(labels, tmp_path):
    out = tmp_path / "p"
    assert _cli(*SMALL, "--labels", labels, "--base-channels", "8", "--steps", "2", "--out", out).exit_code == 0
    _stopped_at(out, 1)
    res = _cli(*SMALL, "--labels", labels, "--base-channels", "16", "--steps", "4", "--out", out)
    assert res.exit_code != 0
    assert "was trained with --base-channels 8 (this run: 16)" in res.output
    assert "--overwrite / --no-resume" in res.output
    assert len(res.output.strip().splitlines()) == 1 and "Missing key" not in res.output
    other = write_labels(tmp_path / "other", tiles=2)
    res = _cli(*SMALL, "--labels", other, "--base-channels", "8", "--steps", "4", "--out", out)
    assert res.exit_code != 0 and "--labels/--windows" in res.output


def test_overwrite_with_other_labels_trains_afresh_on_them(labels, tmp_path):
    out = tmp_path / "p"
    assert _cli(*SMALL, "--labels", labels, "--base-channels", "8", "--steps", "2", "--out", out).exit_code == 0
    other = write_labels(tmp_path / "other", tiles=2)
    res = _cli(*SMALL, "--labels", other, "--base-channels", "8", "--steps", "2", "--out", out, "--overwrite")
    assert res.exit_code == 0, res.output
    fresh = _cli(*SMALL, "--labels", other, "--base-channels", "8", "--steps", "2", "--out", tmp_path / "fresh")
    assert fresh.exit_code == 0, fresh.output
    # the old checkpoint was not continued and published under the new data's name
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "fresh" / "model.safetensors").read_bytes()
    assert json.loads((out / "config.json").read_text())["meta"]["data"][0]["paths"] == [str(other)]


# --- outputs: checked and locked before any work, whole or absent ------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--steps", "0"],
        ["--crop", "0"],
        ["--crop", "12"],  # not a multiple of 8
        ["--base-channels", "0"],
        ["--batch-size", "0"],
        ["--windows", "0"],
        ["--windows", "999999999999"],  # more than memory holds
        ["--seed", "-1"],
        ["--labels", "missing.tif"],
    ],
)
def test_a_refused_train_prior_leaves_no_folder(labels, tmp_path, args):
    out = tmp_path / "out" / "p"
    given = ["--labels", str(labels)] if "--labels" not in args else []
    res = _cli("train-prior", "--dataset", "landcover", *given, "--windows", "16", "--batch-size", "8", *args,
               "--out", out)
    assert res.exit_code != 0
    assert "bug in geo_ppp" not in res.output and "Traceback" not in res.output
    assert not out.exists() and not out.parent.exists()


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path):
    import torch

    from geo_ppp.core import NoiseSchedule, TrainConfig, UNetConfig, UNetDenoiser
    from geo_ppp.core.training import train_and_publish

    def failing(gen, n):
        if failing.calls == 2:
            raise RuntimeError("the data went away")
        failing.calls += 1
        return torch.zeros(n, 1, 8, 8)

    failing.calls = 0
    out = tmp_path / "p"
    net = UNetDenoiser(UNetConfig(base_channels=8, channel_mult=(1, 2)))
    with pytest.raises(RuntimeError, match="went away"):
        train_and_publish(net, NoiseSchedule.create(), failing, TrainConfig(steps=5, batch_size=2),
                          out, lambda s, losses: {}, out / ".train", progress=False)
    assert not out.exists() and _files(tmp_path) == []


def test_a_published_prior_and_its_checkpoint_come_from_one_run(labels, tmp_path):
    out = tmp_path / "p"
    res = _cli("train-prior", "--dataset", "landcover", "--labels", labels, *TINY, "--steps", "3", "--out", out)
    assert res.exit_code == 0, res.output
    assert str(out / "model.safetensors") in res.output and "checkpoint" in res.output  # named in the summary
    assert _files(out) == [".train", ".train/checkpoint.safetensors", "config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["p"]  # no temporary or lock left beside it


def _hold_lock(path: Path) -> Path:
    lock = path.with_name(f".{path.name}.geo_ppp.lock")
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now",
                                "command": "geo-ppp the-first-run"}))
    return lock


@pytest.mark.parametrize(
    "command, out",
    [
        (["train-prior", "--steps", "1", "--base-channels", "8"], "p"),
        (["train-classifier", "--epochs", "1"], "c"),
        (["generate", "--num", "1", "--steps", "1"], "g.png"),
        (["prior-check", "digits", "--num", "1"], "chk"),
        (["digits-demo", "--num", "1"], "demo"),
    ],
)
def test_a_second_run_onto_the_same_output_stops_at_once_naming_the_first(tmp_path, command, out):
    target = tmp_path / out
    _hold_lock(target)
    start = time.time()
    res = _cli(*command, "--out", target)
    assert res.exit_code != 0
    assert "another geo-ppp run" in res.output and "the-first-run" in res.output, res.output
    assert time.time() - start < 20
    assert not target.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["train-prior", "--steps", "1"],
        ["train-classifier", "--epochs", "1"],
        ["prior-check", "digits", "--num", "1"],
        ["digits-demo", "--num", "1"],
    ],
)
def test_out_that_is_a_file_is_named_as_such(tmp_path, command):
    afile = tmp_path / "afile"
    afile.write_text("x")
    res = _cli(*command, "--out", afile)
    assert res.exit_code != 0
    assert "is a file" in res.output and "disk full" not in res.output, res.output
    assert afile.read_text() == "x"
