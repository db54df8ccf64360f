"""`--markdown PATH` for the benchmark scripts: what a script prints, written as a docs page part.

Each benchmark prints its tables as markdown. With `--markdown PATH` it also writes everything it
printed to stdout into PATH once it has finished without an error, headed by the exact command and
the date, so that the docs (docs/benchmarks/, included with pymdownx.snippets) show the numbers the
script printed and say how to get them again. Table rows stay tables; the other printed lines become
`text` blocks. Nothing is written when the script fails.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as _dt
import io
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_FAILED: list[bool] = []


def add_option(parser: argparse.ArgumentParser) -> None:
    """Add `--markdown PATH` to a benchmark's argument parser."""
    parser.add_argument(
        "--markdown",
        metavar="PATH",
        default=None,
        help="also write what this prints (tables, the command, the date) to PATH, for the docs",
    )


class _Tee(io.TextIOBase):
    def __init__(self, stream):
        self.stream = stream
        self.parts: list[str] = []

    def write(self, s: str) -> int:
        self.parts.append(s)
        return self.stream.write(s)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self):
        return self.stream.encoding


def command_line(argv: list[str] | None = None) -> str:
    """The command that ran, as typed from the repository root, without `--markdown PATH`."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    try:
        script_text = str(script.relative_to(ROOT))
    except ValueError:
        script_text = argv[0]
    rest: list[str] = []
    skip = False
    for a in argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--markdown":
            skip = True
            continue
        if a.startswith("--markdown="):
            continue
        rest.append(a)
    return shlex.join(["python", script_text, *rest])


def to_markdown(printed: str, command: str, path: str, when: str, commit: str) -> str:
    """The page part: a header naming the command and date, then table rows as tables, the rest as text."""
    rel = path
    try:
        rel = str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        pass
    out = [
        f"<!-- written by `{command} --markdown {rel}`; do not edit by hand, rerun it -->",
        "",
        f"Printed by `{command}` on {when}{commit} "
        f"(regenerate: `{command} --markdown {rel}`):",
        "",
    ]
    text: list[str] = []
    in_table = False

    def flush_text() -> None:
        while text and not text[-1].strip():
            text.pop()
        if text:
            out.extend(["```text", *text, "```", ""])
        text.clear()

    for raw in printed.replace("\r", "\n").splitlines():
        line = raw.rstrip()
        if line.lstrip().startswith("|"):
            if not in_table:
                flush_text()
                in_table = True
            out.append(line.strip())
            continue
        if in_table:
            out.append("")
            in_table = False
        if line or text:
            text.append(line)
    flush_text()
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"


def discard() -> None:
    """Write no `--markdown` file: call before exiting on a failure that is not an exception."""
    _FAILED.append(True)


def record(path: str | None) -> None:
    """Start recording stdout; write PATH at exit if the script ended without an uncaught error."""
    if not path:
        return
    tee = _Tee(sys.stdout)
    sys.stdout = tee
    previous_hook = sys.excepthook

    def hook(*exc_info) -> None:
        _FAILED.append(True)
        previous_hook(*exc_info)

    sys.excepthook = hook
    command = command_line()
    when = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        commit = f" at commit {sha}" if sha else ""
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "geo_ppp", "benchmarks"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
        if commit and dirty:
            commit += " (with uncommitted changes in geo_ppp/ or benchmarks/)"
    except (OSError, subprocess.CalledProcessError):
        commit = ""

    def write() -> None:
        sys.stdout.flush()
        if _FAILED:
            print(f"--markdown: not written ({path}): the run failed", file=sys.stderr)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(to_markdown("".join(tee.parts), command, path, when, commit))
        tmp.replace(target)
        print(f"--markdown: wrote {path}", file=sys.stderr)

    atexit.register(write)
