"""The CLI end to end on a tiny model, and its handling of bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from geo_ppp.cli import main


@pytest.fixture(scope="module")
def tiny_prior_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("prior") / "tiny"
    res = CliRunner().invoke(main, ["train-prior", "--out", str(out), "--steps", "4", "--base-channels", "8"])
    assert res.exit_code == 0, res.output
    return out


def _gen(args):
    return CliRunner().invoke(main, ["generate", *args])


def test_train_prior_writes_safetensors_and_config(tiny_prior_dir):
    cfg = json.loads((tiny_prior_dir / "config.json").read_text())
    assert cfg["unet"]["base_channels"] == 8
    assert "train-prior" in cfg["meta"]["command"]
    assert (tiny_prior_dir / "model.safetensors").stat().st_size > 1000
    res = CliRunner().invoke(main, ["train-prior", "--out", str(tiny_prior_dir), "--steps", "4"])
    assert res.exit_code != 0 and "--overwrite" in res.output


def test_generate_end_to_end(tiny_prior_dir, tmp_path):
    args = ["--prior", str(tiny_prior_dir), "--constraint", "class=3", "--constraint", "symmetric:2"]
    args += ["--num", "5", "--seed", "0", "--steps", "3"]
    out = tmp_path / "grid.png"
    res = _gen([*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    x = np.load(tmp_path / "grid.npy")
    assert x.shape == (5, 1, 16, 16) and x.dtype == np.float32
    assert np.isfinite(x).all()
    record = json.loads((tmp_path / "grid.json").read_text())
    assert record["constraints"] == ["class=3", "symmetric:2"] and record["pnp"]["steps"] == 3
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # same seed, same samples
    res = _gen([*args, "--out", str(tmp_path / "again.png")])
    assert res.exit_code == 0
    assert np.array_equal(np.load(tmp_path / "again.npy"), x)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_generate_unconditional_samplers(tiny_prior_dir, tmp_path, sampler):
    res = _gen(
        [
            "--prior",
            str(tiny_prior_dir),
            "--sampler",
            sampler,
            "--steps",
            "4",
            "--num",
            "3",
            "--out",
            str(tmp_path / "u.png"),
        ]
    )
    assert res.exit_code == 0, res.output
    x = np.load(tmp_path / "u.npy")
    assert x.shape == (3, 1, 16, 16) and np.abs(x).max() <= 1.0 + 1e-6


def test_refuses_to_overwrite(tiny_prior_dir, tmp_path):
    out = tmp_path / "g.png"
    out.write_bytes(b"precious")
    res = _gen(["--prior", str(tiny_prior_dir), "--steps", "2", "--num", "2", "--out", str(out)])
    assert res.exit_code != 0 and "--overwrite" in res.output
    assert out.read_bytes() == b"precious" and not (tmp_path / "g.npy").exists()
    res = _gen(
        ["--prior", str(tiny_prior_dir), "--steps", "2", "--num", "2", "--out", str(out), "--overwrite"]
    )
    assert res.exit_code == 0 and out.read_bytes() != b"precious"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--constraint", "roundness"], ["unknown constraint 'roundness'", "symmetric"]),
        (["--constraint", "class=x"], ["class must be an integer"]),
        (["--set", "optimizer=sgd"], ["optimizer='sgd'", "adam"]),
        (["--set", "stepz=3"], ["unknown PnPConfig key", "steps"]),
        (["--sampler", "ddim", "--constraint", "symmetric"], ["--sampler pnp"]),
    ],
)
def test_bad_options_fail_cleanly(tiny_prior_dir, tmp_path, args, words):
    res = _gen(
        [
            "--prior",
            str(tiny_prior_dir),
            "--steps",
            "2",
            "--num",
            "2",
            "--out",
            str(tmp_path / "g.png"),
            *args,
        ]
    )
    assert res.exit_code != 0
    for w in words:
        assert w in res.output, res.output
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_bad_weights_fail_cleanly(tiny_prior_dir, tmp_path):
    import shutil

    pickled = tmp_path / "pickled.pt"
    torch.save({"a": torch.zeros(1)}, pickled)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_prior_dir, corrupt, ignore=shutil.ignore_patterns(".train"))
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 20)
    outdir = tmp_path / "out"
    outdir.mkdir()
    for prior, words in [
        (pickled, ["refuses to unpickle", "safetensors"]),
        (corrupt, ["not a valid safetensors"]),
        (tmp_path / "missing", ["no prior at", "shipped"]),
    ]:
        res = _gen(["--prior", str(prior), "--steps", "2", "--num", "2", "--out", str(outdir / "g.png")])
        assert res.exit_code == 1
        for w in words:
            assert w in res.output, res.output
        assert list(outdir.iterdir()) == []


def test_console_script_runs():
    """The installed entry point exists and exits non-zero with a message on a bad command."""
    out = subprocess.run(
        [sys.executable, "-m", "geo_ppp.cli", "generate", "--out", "/nonexistent/x.png"],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "does not exist" in out.stderr
