"""What a run shows while it works (--progress) and what it shows when the system fails under it."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geo_ppp.cli import main
from geo_ppp.pipeline import segment
from geo_ppp.pipeline.job import RunObserver
from tests.conftest import NAIP, NLCD, pixelwise, sample_tile

EXE = str(Path(sys.executable).with_name("geo-ppp"))


def _jsonl(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_jsonl_gives_the_plan_with_its_total_before_any_tile_then_tiles_then_outputs(
    tmp_path: Path, tiny_lc_prior
):
    out = tmp_path / "map.tif"
    res = subprocess.run(
        [EXE, "segment", str(NAIP), str(sample_tile("naip", 1)), "--weak-labels", str(NLCD), "--weak-labels",
         str(sample_tile("nlcd", 1)), "--out", str(out), "--prior", str(tiny_lc_prior), "--tile-size", "128",
         "--progress", "jsonl"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    events = _jsonl(res.stderr)
    assert [e["event"] for e in events][0] == "plan" and events[-1]["event"] == "outputs"
    total = events[0]["total"]
    tiles = [e for e in events if e["event"] == "tile"]
    assert total == events[0]["tiles"] == len(tiles) > 1
    assert [t["done"] for t in tiles] == list(range(1, total + 1)) and {t["total"] for t in tiles} == {total}
    assert events[-1]["outputs"]["map"] == str(out) and events[-1]["stats"]["ran"] == total
    assert "wrote" in res.stdout  # the human summary stays on stdout
    assert "tile/s" not in res.stderr  # no bar mixed into the stream


def test_an_observer_sees_every_region_planned_before_the_first_tile(tmp_path: Path, tiny_lc_prior):
    class Record(RunObserver):
        def __init__(self) -> None:
            self.log: list[tuple] = []

        def planned(self, job, name=None) -> None:
            self.log.append(("plan", len(job.tiles)))

        def tile(self, done, total, tile, status) -> None:
            self.log.append(("tile", done, total))

        def published(self, result, name=None) -> None:
            self.log.append(("out", result.out))

    rec = Record()
    segment(
        NAIP, NLCD, out=tmp_path / "m.tif", prior=tiny_lc_prior, tile_size=128, infer=pixelwise, progress=rec
    )
    assert rec.log[0] == ("plan", 9) and rec.log[-1] == ("out", tmp_path / "m.tif")
    assert [e[1] for e in rec.log[1:-1]] == list(range(1, 10))
    # a plain callable still gets the tiles
    calls = []
    segment(
        NAIP,
        NLCD,
        out=tmp_path / "n.tif",
        prior=tiny_lc_prior,
        tile_size=128,
        infer=pixelwise,
        progress=lambda done, total, tile, status: calls.append((done, total)),
    )
    assert calls == [(i, 9) for i in range(1, 10)]


@pytest.mark.parametrize("where", ["group", "command"])
def test_quiet_means_no_bar_wherever_it_is_given(tmp_path: Path, tiny_lc_prior, where: str):
    args = [
        "segment",
        str(NAIP),
        "--weak-labels",
        str(NLCD),
        "--out",
        str(tmp_path / "m.tif"),
        "--prior",
        str(tiny_lc_prior),
        "--steps",
        "1",
    ]
    args = ["-q", *args] if where == "group" else [*args, "-q"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "tile/s" not in res.output and "it/s" not in res.output and "0tile" not in res.output


def _segment_cmd(out: Path, prior: Path, probabilities: Path, *extra: str) -> list[str]:
    """``geo-ppp segment`` of the sample tile in 128 px tiles, as a subprocess command."""
    return [EXE, "segment", str(NAIP), "--weak-labels", str(NLCD), "--out", str(out), "--prior", str(prior),
            "--tile-size", "128", "--probabilities", str(probabilities), *extra]  # fmt: skip


def test_a_full_disk_is_a_clear_message_and_the_rerun_resumes(tmp_path: Path, tiny_lc_prior):
    """A real write failure (a file-size limit, EFBIG, like a full disk): no traceback, nothing half-written."""
    out = tmp_path / "map.tif"
    cmd = _segment_cmd(out, tiny_lc_prior, tmp_path / "p.tif", "--progress", "none")

    def limit() -> None:  # in the child: files may not grow past 64 KiB, and writing past it is an error
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, preexec_fn=limit, env=env)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1  # one line
    assert "could not be written" in res.stderr and "disk full" in res.stderr and "rerun" in res.stderr
    assert not out.exists() and not (tmp_path / "p.tif").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name or "scratch" in p.name]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    with rasterio.open(out) as ds:
        assert np.isin(ds.read(1), [0, 1, 2, 3, 4]).all()


def test_an_unexpected_error_is_one_line_that_says_it_is_a_bug(tmp_path: Path, monkeypatch):
    import geo_ppp.pipeline.evaluate as evaluate_module

    def broken(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr(evaluate_module, "evaluate_files", broken)
    res = CliRunner().invoke(
        main, ["evaluate", str(sample_tile("truth")), str(sample_tile("truth")), "--legend", "chesapeake"]
    )
    assert res.exit_code == 1 and res.exception is None or isinstance(res.exception, SystemExit)
    assert "unexpected KeyError" in res.output and "bug in geo_ppp" in res.output and "-vv" in res.output
    assert "Traceback" not in res.output


def test_a_full_disk_while_publishing_leaves_nothing_half_written_and_the_rerun_publishes(
    tmp_path: Path, tiny_lc_prior
):
    """All tiles done, then the publish fails on a write: one line, no temporary file, the rerun publishes."""
    out, work = tmp_path / "map.tif", tmp_path / "work"
    cmd = _segment_cmd(out, tiny_lc_prior, tmp_path / "p.tif", "--workdir", str(work), "--progress", "jsonl")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert subprocess.run(cmd, capture_output=True, timeout=600, env=env).returncode == 0
    for p in tmp_path.iterdir():
        if p != work:
            p.unlink()  # the tiles stay in the kept work dir: the next run only publishes

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, preexec_fn=limit, env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert [e["status"] for e in _jsonl(res.stderr) if e["event"] == "tile"] == [
        "resumed"
    ] * 9  # it got to publish
    assert "disk full" in res.stderr.splitlines()[-1] and "rerun" in res.stderr.splitlines()[-1]
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name or "scratch" in p.name or "lock" in p.name]
    assert not (tmp_path / "map.tif.json").exists()  # the config, written last, says the map is not complete
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "map.tif.json").exists() and (tmp_path / "p.tif").exists()


def _every_line_json(stderr: str) -> list[dict]:
    """The --progress jsonl contract: every stderr line is one JSON object with an ``event``."""
    events = []
    for line in stderr.splitlines():
        record = json.loads(line)  # fails on any plain line: a warning, a traceback, "Error: ..."
        assert isinstance(record, dict) and isinstance(record.get("event"), str), line
        events.append(record)
    return events


def test_the_jsonl_stream_of_a_run_that_warns_is_stopped_and_resumes_is_json_throughout(
    tmp_path: Path, tiny_lc_prior
):
    import socket

    out = tmp_path / "map.tif"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = {
        "pid": int(dead.stdout),
        "host": socket.gethostname(),
        "started": "then",
        "command": "killed run",
    }
    (tmp_path / ".map.tif.geo_ppp.lock").write_text(json.dumps(stale))  # a killed run's lock: a warning
    cmd = [
        EXE,
        "segment",
        str(NAIP),
        "--weak-labels",
        str(NLCD),
        "--out",
        str(out),
        "--prior",
        str(tiny_lc_prior),
        "--tile-size",
        "64",
        "--steps",
        "2",
        "--progress",
        "jsonl",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if json.loads(line)["event"] == "tile":
            proc.send_signal(signal.SIGTERM)  # what the QGIS plugin's Cancel sends
            break
    lines += proc.stderr.readlines()
    assert proc.wait(timeout=300) == 143
    events = _every_line_json("".join(lines))
    warned = [e for e in events if e["event"] == "log"]
    assert warned and warned[0]["level"] == "warning" and "took over the lock" in warned[0]["message"]
    assert "killed run" in warned[0]["message"]
    assert (
        events[-1]["event"] == "aborted"
        and events[-1]["exit_code"] == 143
        and "resume" in events[-1]["message"]
    )
    assert not out.exists() and not list(
        tmp_path.glob(".*.geo_ppp.lock")
    )  # nothing published, locks released
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # no half-written file

    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)  # the same run resumes
    assert res.returncode == 0, res.stderr[-2000:]
    events = _every_line_json(res.stderr)
    assert events[0]["event"] == "plan" and events[-1]["event"] == "outputs"
    assert events[-1]["stats"]["resumed"] >= 1 and any(e.get("status") == "resumed" for e in events)


@pytest.mark.parametrize(
    "args, message, code",
    [
        (["--out", "m.png"], "--out m.png: this output is written as a Cloud Optimized GeoTIFF", 1),
        (["--out", "m.tif", "--method", "nonsense"], "Invalid value for '--method'", 2),
        (["--out", "m.tif", "--bands", "1,x"], "is not a list of band numbers", 2),
    ],
)
def test_under_jsonl_an_error_is_the_last_json_line(tmp_path: Path, monkeypatch, args, message, code):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(
        main, ["segment", str(NAIP), "--weak-labels", str(NLCD), "--progress", "jsonl", *args]
    )
    assert res.exit_code == code
    events = _every_line_json(res.stderr)
    assert (
        events[-1]["event"] == "error"
        and message in events[-1]["message"]
        and events[-1]["exit_code"] == code
    )


def test_under_jsonl_python_warnings_and_log_records_are_json(capsys):
    import logging
    import warnings

    from geo_ppp.cli.options import json_logging

    with json_logging(True):
        warnings.warn("a library's warning", UserWarning, stacklevel=1)
        logging.getLogger("geo_ppp.test").warning("resampled by %d", 3)
    events = _every_line_json(capsys.readouterr().err)
    assert events == [
        {
            "event": "log",
            "level": "warning",
            "logger": "py.warnings",
            "message": "UserWarning: a library's warning",
        },
        {"event": "log", "level": "warning", "logger": "geo_ppp.test", "message": "resampled by 3"},
    ]


def test_under_jsonl_an_unknown_command_or_option_is_json_too():
    for args in (["segmnt", "--progress", "jsonl"], ["segment", "x.tif", "--progress=jsonl", "--bogus"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2
        events = _every_line_json(res.stderr)
        assert len(events) == 1 and events[0]["event"] == "error" and "No such" in events[0]["message"]
    res = CliRunner().invoke(main, ["segmnt"])  # without jsonl: click's usual usage message
    assert res.exit_code == 2 and "Error: No such command" in res.stderr
