"""Run the ``geo-ppp`` executable for QGIS: find it, give it a clean environment, follow its progress.

Pure Python (no QGIS import), so it is tested on its own. QGIS's Python cannot host torch, and
mixing QGIS's numpy and GDAL with geo_ppp's is fragile: the plugin runs geo_ppp in its own process,
with ``--progress jsonl``, and reads one JSON object per line from its stderr.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: the environment variable naming the executable
EXE_ENV = "GEO_PPP_EXE"
#: variables QGIS sets for its own Python, GDAL and PROJ that must not reach geo_ppp's
LEAKY_ENV = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "VIRTUAL_ENV",
    "GDAL_DATA",
    "GDAL_DRIVER_PATH",
    "GDAL_PAM_PROXY_DIR",
    "PROJ_LIB",
    "PROJ_DATA",
    "PROJ_NETWORK",
    "QGIS_PREFIX_PATH",
    "QGIS_PLUGINPATH",
    "LD_LIBRARY_PATH",
    "DYLD_LIBRARY_PATH",
    "SSL_CERT_FILE",
)


class GeoPPPNotFound(RuntimeError):
    """No geo-ppp executable could be found."""


class GeoPPPFailed(RuntimeError):
    """geo-ppp stopped with an error; the message is what geo-ppp printed."""


class Cancelled(RuntimeError):
    """The user cancelled the run (the work dir is kept: the same run resumes)."""


def find_executable(setting: str | None = None, environ: dict[str, str] | None = None) -> str:
    """The geo-ppp executable: the plugin setting, else ``$GEO_PPP_EXE``, else ``geo-ppp`` on PATH.

    Raises:
        GeoPPPNotFound: none of them names an executable file (the message says how to set one).
    """
    environ = os.environ if environ is None else environ
    for source, value in (("the plugin setting", setting), (f"${EXE_ENV}", environ.get(EXE_ENV))):
        if value:
            if os.path.isfile(value) and os.access(value, os.X_OK):
                return value
            raise GeoPPPNotFound(f"{source} names {value!r}, which is not an executable file")
    found = shutil.which("geo-ppp", path=environ.get("PATH"))
    if found:
        return found
    raise GeoPPPNotFound(
        "the geo-ppp executable was not found: set it under Settings > Options > Processing > Providers > "
        f"geo_ppp, or set ${EXE_ENV} (e.g. /path/to/geo_ppp/.venv/bin/geo-ppp), or put geo-ppp on PATH"
    )


def clean_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` without QGIS's Python, GDAL and PROJ settings (geo_ppp brings its own)."""
    env = dict(os.environ if environ is None else environ)
    for key in LEAKY_ENV:
        env.pop(key, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class RunReport:
    """What a run reported: the plan's total, tiles done, outputs, error and messages (warnings)."""

    total: int = 0
    done: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def feed(self, line: str) -> dict[str, Any] | None:
        """Take one stderr line; returns the event if it was one (else keeps it as a message)."""
        text = line.rstrip("\n")
        if not text.strip():
            return None
        try:
            event = json.loads(text)
        except json.JSONDecodeError:
            event = None
        if not isinstance(event, dict) or "event" not in event:
            self.messages.append(text)
            return None
        kind = event["event"]
        if kind == "plan":
            self.total = int(event.get("total", self.total))
        elif kind == "tile":
            self.done = int(event.get("done", self.done + 1))
            self.total = int(event.get("total", self.total))
            status = str(event.get("status", "ran"))
            self.statuses[status] = self.statuses.get(status, 0) + 1
        elif kind == "outputs":
            self.outputs.update({k: str(v) for k, v in event.get("outputs", {}).items()})
            self.stats = dict(event.get("stats", {}))
        elif kind in ("error", "aborted"):  # the last line of a failed or stopped run
            self.errors.append(str(event.get("message", "")).strip() or f"geo-ppp {kind}")
        elif kind == "log" and str(event.get("level")) in ("warning", "error", "critical"):
            self.messages.append(str(event.get("message", "")))
        return event

    @property
    def percent(self) -> float:
        """Tiles done, in percent of the plan."""
        return 100.0 * self.done / self.total if self.total else 0.0

    def error(self) -> str:
        """geo-ppp's own error message (its ``error`` event, or ``Error: ...`` lines), else its last lines."""
        old_style = [m.split("Error:", 1)[1].strip() for m in self.messages if m.startswith("Error:")]
        errors = self.errors + old_style
        if errors:
            return "\n".join(errors)
        return "\n".join(self.messages[-10:]) or "geo-ppp stopped without a message"


def segment_command(
    exe: str,
    images: Sequence[str],
    weak_labels: Sequence[str],
    out: str,
    *,
    label_attribute: str | None = None,
    legend: str = "chesapeake",
    aoi: str | None = None,
    steps: int | None = None,
    tile_size: int = 256,
    seed: int = 0,
    device: str = "auto",
    method: str = "pnp",
    segmenter: str | None = None,
    probabilities: str | None = None,
    vector: str | None = None,
    quicklook: str | None = None,
    overwrite: bool = True,
) -> list[str]:
    """The ``geo-ppp segment`` command line for the QGIS algorithm's parameters."""
    cmd = [exe, "segment", *images]
    for weak in weak_labels:
        cmd += ["--weak-labels", weak]
    cmd += ["--out", out, "--legend", legend, "--tile-size", str(tile_size), "--seed", str(seed)]
    cmd += ["--device", device, "--progress", "jsonl"]
    for flag, value in (
        ("--label-attribute", label_attribute),
        ("--aoi", aoi),
        ("--steps", None if steps is None else str(steps)),
        ("--method", None if method == "pnp" else method),
        ("--segmenter", segmenter),
        ("--probabilities", probabilities),
        ("--vector", vector),
        ("--quicklook", quicklook),
    ):
        if value:
            cmd += [flag, value]
    if overwrite:  # QGIS asked the user already when the output file exists
        cmd.append("--overwrite")
    return cmd


def run(
    cmd: Sequence[str],
    *,
    on_event: Callable[[dict[str, Any], RunReport], None] | None = None,
    on_message: Callable[[str], None] | None = None,
    is_cancelled: Callable[[], bool] = lambda: False,
    env: dict[str, str] | None = None,
    poll_s: float = 0.1,
    stop_timeout_s: float = 10.0,
) -> tuple[RunReport, str]:
    """Run ``cmd``, following its JSON-lines progress on stderr, until it ends or is cancelled.

    Args:
        cmd: the command (from :func:`segment_command`, or any geo-ppp command).
        on_event: called with each JSON event and the report so far.
        on_message: called with each non-JSON stderr line (warnings, errors).
        is_cancelled: polled every ``poll_s``; when it turns true the process is stopped (SIGTERM,
            then SIGKILL after ``stop_timeout_s``) and :class:`Cancelled` is raised.
        env: the environment (default: :func:`clean_environment`).
        poll_s: how often the cancel flag is polled, in seconds.
        stop_timeout_s: how long a cancelled process gets to stop before it is killed.

    Returns:
        The report and the process's stdout.

    Raises:
        GeoPPPFailed: a non-zero exit; the message is geo-ppp's.
        Cancelled: the run was cancelled.
    """
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=clean_environment() if env is None else env,
        # a cancel stops geo-ppp and every process it started (Dask workers): its own process group
        start_new_session=os.name == "posix",
    )
    lines: queue.Queue[str | None] = queue.Queue()
    out_chunks: list[str] = []

    def pump_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    def pump_out() -> None:
        assert proc.stdout is not None
        out_chunks.append(proc.stdout.read())

    threads = [threading.Thread(target=pump_err, daemon=True), threading.Thread(target=pump_out, daemon=True)]
    for t in threads:
        t.start()
    report = RunReport()
    finished = False
    while not finished:
        if is_cancelled():
            _stop(proc, stop_timeout_s)
            raise Cancelled("cancelled; the work dir is kept, so running the same again resumes it")
        try:
            line = lines.get(timeout=poll_s)
        except queue.Empty:
            continue
        if line is None:
            finished = True
            continue
        event = report.feed(line)
        if event is not None and on_event is not None:
            on_event(event, report)
        elif event is None and line.strip() and on_message is not None:
            on_message(line.rstrip("\n"))
    code = proc.wait()
    for t in threads:
        t.join(timeout=5)
    if code != 0:
        raise GeoPPPFailed(report.error())
    return report, "".join(out_chunks)


def _stop(proc: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers (Windows: terminate the process)."""
    if os.name != "posix":
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
