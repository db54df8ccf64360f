"""Concurrent runs, with real processes: a second run onto the same outputs or work dir stops at once,
naming the first; a killed run's stale lock is taken over; a file that appears meanwhile is kept."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geo_ppp.outputs import OutputError, RunLock
from tests.conftest import NAIP, NLCD


def _segment(prior: Path, *args: str, wait: bool = True):
    cmd = [sys.executable, "-m", "geo_ppp.cli", "-q", "segment", str(NAIP), "--weak-labels", str(NLCD),
           "--prior", str(prior), "--tile-size", "128", "--overlap", "16", *args]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _snapshot(folder: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir" for p in folder.rglob("*")}


@pytest.mark.parametrize("shared", ["out", "workdir"])
def test_a_live_run_holding_the_outputs_stops_a_second_one(tmp_path: Path, tiny_lc_prior: Path,
                                                           shared: str) -> None:
    # this test process plays the first run: it holds the lock, as `segment` does while it works
    first_out = tmp_path / "first.tif"
    locked = [first_out] if shared == "out" else [tmp_path / "work"]
    with RunLock(locked, command="geo-ppp segment first-run"):
        before = _snapshot(tmp_path)
        args = ["--out", str(first_out)] if shared == "out" else ["--out", str(tmp_path / "b.tif"),
                                                                   "--workdir", str(tmp_path / "work")]
        t0 = time.perf_counter()
        res = _segment(tiny_lc_prior, *args, "--seed", "9")
        assert res.returncode == 1, res.stdout + res.stderr
        assert f"another geo-ppp run (process {os.getpid()}" in res.stderr
        assert "geo-ppp segment first-run" in res.stderr
        assert "Traceback" not in res.stderr
        assert _snapshot(tmp_path) == before  # nothing written, nothing removed
        assert time.perf_counter() - t0 < 120  # it stopped at once, it did not run the tiles first


def test_a_killed_runs_stale_lock_is_taken_over(tmp_path: Path, tiny_lc_prior: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # that process has exited: its lock is stale
    out = tmp_path / "map.tif"
    lock = RunLock.lock_file(out)
    import socket

    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "then", "command": "killed"}))
    res = _segment(tiny_lc_prior, "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    assert out.exists() and not lock.exists()
    assert f"took over the lock on {out} of process {pid}" in res.stderr and "killed" in res.stderr  # said so


def test_two_real_runs_onto_one_output_and_a_file_that_appears_meanwhile(tmp_path: Path,
                                                                         tiny_lc_prior: Path) -> None:
    out, probs = tmp_path / "map.tif", tmp_path / "p.tif"
    first = _segment(tiny_lc_prior, "--out", str(out), "--probabilities", str(probs), "--steps", "60",
                     wait=False)
    lock = RunLock.lock_file(out)
    deadline = time.time() + 120
    while not lock.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert lock.exists(), "the first run never took its lock"
    # a second geo-ppp run onto the same output stops at once, naming the first
    second = _segment(tiny_lc_prior, "--out", str(out), "--seed", "3")
    assert second.returncode == 1, second.stderr
    assert f"process {first.pid}" in second.stderr
    assert first.poll() is None, "the first run ended before the second was refused: give it more steps"
    # another program writes one of the first run's outputs meanwhile: it is kept, nothing is published
    probs.write_bytes(b"made by another program meanwhile")
    assert first.wait(timeout=300) == 1
    output = first.stdout.read()
    assert "appeared while this run was working" in output and "Traceback" not in output
    assert probs.read_bytes() == b"made by another program meanwhile"
    assert not out.exists() and not lock.exists()


def test_lock_contract(tmp_path: Path) -> None:
    target = tmp_path / "x.tif"
    with RunLock([target], "one") as held:
        assert RunLock.lock_file(target).exists()
        with pytest.raises(OutputError, match="another geo-ppp run"):
            RunLock([target], "two").__enter__()
        assert held.held
    assert not RunLock.lock_file(target).exists()
    RunLock([target]).__enter__().release()  # free again


def test_a_rerun_removes_the_scratch_files_a_killed_publish_left(tmp_path: Path, tiny_lc_prior: Path) -> None:
    out = tmp_path / "map.tif"
    stale = [tmp_path / ".map.k2j3ab_9.tmp.tif", tmp_path / "..map.tif.scratch.a8b7cd12.tmp.tif",
             tmp_path / ".map.tif.x1y2zz00.tmp.json"]
    # another output's temporaries (maybe another live run's) are not this run's
    others = [tmp_path / ".other.k2j3ab_9.tmp.tif", tmp_path / "notes.tmp.tif",
              tmp_path / ".map.v2.k2j3ab_9.tmp.tif"]
    for p in stale + others:
        p.write_bytes(b"x" * 1000)
    res = _segment(tiny_lc_prior, "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in others)  # not this run's outputs: left alone


def test_a_rerun_completes_a_publish_that_was_stopped_after_the_map(tmp_path: Path,
                                                                    tiny_lc_prior: Path) -> None:
    out, work = tmp_path / "map.tif", tmp_path / "work"
    assert _segment(tiny_lc_prior, "--out", str(out), "--workdir", str(work)).returncode == 0
    map_bytes = out.read_bytes()
    # as if killed after the map's rename: its configuration (written last) and style are missing
    (tmp_path / "map.tif.json").unlink()
    (tmp_path / "map.qml").unlink()
    res = _segment(tiny_lc_prior, "--out", str(out), "--workdir", str(work))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "map.tif.json").exists() and (tmp_path / "map.qml").exists()
    assert out.read_bytes() == map_bytes
    # another run's work dir (other seed) does not license replacing the map
    (tmp_path / "map.tif.json").unlink()
    before = _snapshot(tmp_path)
    res = _segment(tiny_lc_prior, "--out", str(out), "--workdir", str(work), "--seed", "5")
    assert res.returncode == 1 and "already exists" in res.stderr
    assert _snapshot(tmp_path) == before
