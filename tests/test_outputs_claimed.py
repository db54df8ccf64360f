"""Every output is checked and locked before any work (issue 24): the saved segmenter, long names,
TSP and co-occurrence outputs; inputs that are not what their name says; damaged segmenter configs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from geo_ppp.cli import main
from geo_ppp.landcover.segmenter import Segmenter, SegmenterConfig, save_segmenter
from geo_ppp.outputs import RunLock, claim_outputs
from tests.conftest import NAIP, NLCD


def _snapshot(folder: Path) -> dict[Path, str]:
    return {
        p: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir" for p in folder.rglob("*")
    }


def _segment(tmp_path: Path, prior: Path, *args: str):
    return CliRunner().invoke(
        main,
        ["segment", str(NAIP), "--weak-labels", str(NLCD), "--prior", str(prior), "--progress", "none",
         "--out", str(tmp_path / "m.tif"), *args],
    )  # fmt: skip


def test_an_unwritable_save_segmenter_stops_the_run_before_any_work(
    tmp_path: Path, tiny_lc_prior, monkeypatch
):
    (tmp_path / "a_file").write_text("not a folder")
    locked = tmp_path / "readonly"
    locked.mkdir()
    real_access = os.access
    # as root every folder is writable: make this one read-only as a user would see it
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != locked and real_access(p, mode, **kw))
    before = _snapshot(tmp_path)
    for folder in (tmp_path / "a_file" / "seg", locked / "seg"):
        res = _segment(tmp_path, tiny_lc_prior, "--method", "qr", "--save-segmenter", str(folder))
        assert res.exit_code == 1, res.output
        assert f"--save-segmenter {folder} cannot be written" in res.output and "Traceback" not in res.output
        assert _snapshot(tmp_path) == before  # no map, no work dir: the rerun is not refused later


def test_a_save_segmenter_another_run_holds_stops_the_second_run(tmp_path: Path, tiny_lc_prior):
    seg = tmp_path / "seg"
    with RunLock([seg], command="geo-ppp segment first-run"):
        before = _snapshot(tmp_path)
        res = _segment(tmp_path, tiny_lc_prior, "--method", "distill", "--save-segmenter", str(seg))
        assert res.exit_code == 1, res.output
        assert f"process {os.getpid()}" in res.output and "first-run" in res.output and str(seg) in res.output
        assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "flag, extra, limit",
    [
        ("--out", ".tif", 229),
        ("--vector", ".gpkg", 241),
        ("--save-segmenter", "", 241),
        ("--workdir", "", 241),
    ],
)
def test_an_output_name_too_long_for_its_lock_is_named_with_the_limit(
    tmp_path: Path, tiny_lc_prior, flag, extra, limit
):
    name = "n" * (limit + 1 - len(extra)) + extra  # one character too many
    args = [flag, str(tmp_path / name)] + (["--method", "distill"] if flag == "--save-segmenter" else [])
    if flag == "--out":
        res = CliRunner().invoke(main, ["segment", str(NAIP), "--weak-labels", str(NLCD), "--prior",
                                        str(tiny_lc_prior), *args])  # fmt: skip
    else:
        res = _segment(tmp_path, tiny_lc_prior, *args)
    assert res.exit_code == 1, res.output
    assert f"the name {name} is {limit + 1} characters" in res.output
    assert f"choose a shorter {flag} (at most {limit} characters)" in res.output
    assert "permission" not in res.output.lower() and not list(tmp_path.iterdir())


def test_tsp_and_cooccurrence_outputs_are_locked_and_their_names_checked(tmp_path: Path):
    inst = tmp_path / "inst.txt"
    inst.write_text(" ".join(f"{x:.3f}" for x in np.random.default_rng(0).random(16)) + "\n")
    out = tmp_path / "tours.txt"
    commands = [
        ["tsp", "solve", str(inst), "--no-prior", "--out"],
        ["tsp", "render", str(inst), "--out"],
        ["cooccurrence", "--truth", str(inst), "--weak", str(inst), "--legend", "chesapeake", "--out"],
    ]
    for cmd, target in zip(commands, (out, tmp_path / "grid.png", tmp_path / "c.json"), strict=True):
        with RunLock([target], command="geo-ppp first-run"):
            res = CliRunner().invoke(main, [*cmd, str(target)])
        assert res.exit_code == 1 and "first-run" in res.output and not target.exists(), res.output
        long = tmp_path / ("t" * 240 + target.suffix)
        res = CliRunner().invoke(main, [*cmd, str(long)])
        assert res.exit_code == 1 and "the lock's 14: choose a shorter --out" in res.output, res.output
    res = CliRunner().invoke(main, ["tsp", "solve", str(inst), "--no-prior", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.exists() and not list(tmp_path.glob(".*lock"))  # written, named, and the lock is gone


def test_claim_outputs_refuses_before_the_block_runs(tmp_path: Path):
    (tmp_path / "a.txt").write_text("kept")
    with (
        pytest.raises(FileExistsError, match="already exists"),
        claim_outputs({"--out": tmp_path / "a.txt"}, False),
    ):
        raise AssertionError("the block must not run")
    assert not list(tmp_path.glob(".*lock"))


def test_a_jpeg_named_tif_is_one_line_naming_its_driver(tmp_path: Path):
    from PIL import Image

    fake = tmp_path / "image.tif"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(fake, format="JPEG")
    res = CliRunner().invoke(
        main, ["segment", str(fake), "--weak-labels", str(NLCD), "--out", str(tmp_path / "m.tif")]
    )
    assert res.exit_code == 1
    assert f"image {fake} is named .tif but is a JPEG file, not a GeoTIFF" in res.output
    assert "Warning" not in res.output and len(res.output.strip().splitlines()) == 1, res.output


def _saved(tmp_path: Path) -> Path:
    seg = tmp_path / "seg"
    save_segmenter(
        seg,
        Segmenter(SegmenterConfig(width=4, dilations=(1,))),
        {"legend": "chesapeake", "codes": [1, 2, 3, 4], "bands": [1, 2, 3, 4], "resolution_m": 1.0},
    )
    return seg


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: r["config"].update(width=8), "its config.json does not match model.safetensors ("),
        (lambda r: r.pop("meta"), "its config.json has no legend and no codes in its 'meta'"),
    ],
)
def test_a_damaged_segmenter_config_is_one_line_with_its_fix(tmp_path: Path, damage, message):
    seg = _saved(tmp_path)
    record = json.loads((seg / "config.json").read_text())
    damage(record)
    (seg / "config.json").write_text(json.dumps(record))
    res = CliRunner().invoke(main, ["segment", str(NAIP), "--weak-labels", str(NLCD), "--segmenter", str(seg),
                                    "--out", str(tmp_path / "m.tif")])  # fmt: skip
    assert res.exit_code == 1
    assert message in res.output and "re-save it with --save-segmenter" in res.output
    assert "--legend None" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    shutil.rmtree(seg)
    assert not (tmp_path / "m.tif").exists()


def test_an_output_in_a_folder_still_to_be_made_is_locked_too(tmp_path: Path):
    seg = tmp_path / "new" / "deeper" / "seg"  # --save-segmenter new/deeper/seg: the run makes new/ itself
    other = seg.parent / "other"
    with RunLock([seg, other], command="first-run", make_folders=[seg, other]):
        with pytest.raises(OSError, match="first-run"):
            RunLock([seg], make_folders=[seg]).__enter__()
        RunLock([seg.parent / "third"], make_folders=[seg.parent / "third"]).__enter__().release()
    assert not list(tmp_path.iterdir())  # released, and the folders made for the locks are gone


@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_stop_signal_ends_a_command_cleanly_with_its_locks_released(tmp_path: Path, signame, code):
    import signal

    import click

    from geo_ppp.cli.options import handle_errors, progress_option

    @click.command()
    @progress_option
    @handle_errors
    def work(progress_mode: str) -> None:
        with RunLock([tmp_path / "m.tif"], command="work"):
            os.kill(os.getpid(), getattr(signal, signame))
            raise AssertionError("the signal stops the command before this line")

    handler = signal.getsignal(signal.SIGTERM)
    res = CliRunner().invoke(work, [])
    assert res.exit_code == code and f"Aborted: stopped by {signame}" in res.output, res.output
    assert not list(tmp_path.iterdir())  # the lock is gone
    res = CliRunner().invoke(work, ["--progress", "jsonl"])
    assert res.exit_code == code
    assert json.loads(res.stderr) == {"event": "aborted", "message": json.loads(res.stderr)["message"],
                                      "exit_code": code}  # fmt: skip
    assert signal.getsignal(signal.SIGTERM) is handler  # the command's handler is gone with it


def test_a_job_region_with_a_name_too_long_is_named_under_check(tmp_path: Path):
    name = "r" * 230 + ".tif"
    (tmp_path / "job.toml").write_text(
        f'[[region]]\nname = "a"\nimage = "{NAIP}"\nweak_labels = "{NLCD}"\nout = "{name}"\n'
    )
    res = CliRunner().invoke(main, ["run", str(tmp_path / "job.toml"), "--check"])
    assert res.exit_code == 1 and f"region 'a': the name {name} is 234 characters" in res.output, res.output
    assert list(tmp_path.iterdir()) == [tmp_path / "job.toml"]


def test_an_os_error_for_a_long_name_or_a_read_only_disk_is_not_blamed_on_permissions():
    import errno

    from geo_ppp.cli.options import _describe

    message, code, event = _describe(OSError(errno.ENAMETOOLONG, "File name too long", "m" * 260))
    assert "name is too long" in message and "choose shorter output names" in message and code == 1
    assert "permission" not in message
    message, _, _ = _describe(OSError(errno.EROFS, "Read-only file system", "/mnt/m.tif"))
    assert "read-only" in message and "permission" not in message and event == "error"


def test_a_publish_stopped_after_the_segmenter_is_completed_by_the_rerun(
    tmp_path: Path, tiny_lc_prior, monkeypatch
):
    import geo_ppp.pipeline.run as run_module
    from geo_ppp.pipeline import segment

    real_publish = run_module.publish

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    kw = {"prior": tiny_lc_prior, "method": "qr", "train_steps": 2, "distill_tiles": 1, "tile_size": 128,
          "calibrate": False, "save_segmenter": tmp_path / "seg"}  # fmt: skip
    monkeypatch.setattr(run_module, "publish", full_disk)
    with pytest.raises(OSError):
        segment([str(NAIP)], [str(NLCD)], out=tmp_path / "m.tif", **kw)
    assert (tmp_path / "seg" / "model.safetensors").exists() and not (tmp_path / "m.tif.json").exists()
    monkeypatch.setattr(run_module, "publish", real_publish)
    res = segment([str(NAIP)], [str(NLCD)], out=tmp_path / "m.tif", **kw)  # no --overwrite needed: its own
    assert res.outputs["segmenter"] == tmp_path / "seg" and (tmp_path / "m.tif.json").exists()
    with pytest.raises(FileExistsError, match="--save-segmenter .* already exists"):  # a finished run's: kept
        segment([str(NAIP)], [str(NLCD)], out=tmp_path / "other.tif", **kw)


@pytest.mark.parametrize("args", [["--steps", "-3"], ["--device", "cuda:7"]])
def test_a_refused_demo_leaves_no_folder_behind(tmp_path: Path, args: list[str]):
    out = tmp_path / "new" / "demo"
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--progress", "none", *args])
    assert res.exit_code != 0, res.output
    assert "bug in geo_ppp" not in res.output and "Traceback" not in res.output
    assert not (tmp_path / "new").exists(), sorted(p.name for p in tmp_path.rglob("*"))


def test_a_demo_out_that_is_a_file_is_refused_untouched(tmp_path: Path):
    out = tmp_path / "demo"
    out.write_text("keep me")
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--progress", "none"])
    assert res.exit_code != 0 and "is a file" in res.output, res.output
    assert out.read_text() == "keep me"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--seed", "-1"], "--seed"),
        (["--seed", str(2**40)], "--seed"),
        (["--tile-size", "1000000"], "needs about"),
        (["--tile-size", "131072", "--batch-size", "1"], "needs about"),
    ],
)
def test_segment_seeds_and_tile_memory_are_checked_before_any_work(tmp_path: Path, tiny_lc_prior, args, said):
    res = _segment(tmp_path, tiny_lc_prior, *args)
    assert res.exit_code != 0 and said in res.output, res.output
    assert "bug in geo_ppp" not in res.output and "Traceback" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_seed_out_of_range_is_refused_by_the_library_too():
    from geo_ppp.errors import ConfigError
    from geo_ppp.pipeline.job import RunSettings

    for bad in (-1, 2**32, 1.5, True):
        with pytest.raises(ConfigError, match="seed must be"):
            RunSettings(seed=bad)


def test_running_out_of_memory_is_said_as_such_not_as_a_bug():
    from geo_ppp.cli.options import _describe

    message, code, event = _describe(MemoryError("Unable to allocate 14.6 TiB"))
    assert "ran out of memory" in message and "--batch-size" in message and "bug" not in message
    assert code == 1 and event == "error"
