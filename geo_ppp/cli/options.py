"""What every command shares: error handling, the recorded command line, common options, verbosity.

Choice lists are read from the registries they name (samplers, schedules, presets, ...) when click
first needs them, so a new entry in a registry appears in the CLI without an edit here, and
``geo-ppp --help`` does not import torch.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

import click

from geo_ppp.errors import GeoPPPError

log = logging.getLogger("geo_ppp")

__all__ = [
    "ProgressCommand",
    "ProgressGroup",
    "RegistryChoice",
    "Terminated",
    "command_line",
    "device_option",
    "handle_errors",
    "overwrite_option",
    "resolve_device",
    "scheduler_option",
    "seed_option",
    "set_verbosity",
    "progress_option",
    "verbosity_options",
]


class RegistryChoice(click.Choice):
    """A ``click.Choice`` whose choices come from a registry, read on first use.

    Args:
        load: returns the valid names (e.g. ``lambda: SAMPLERS``), called once.
        extra: names accepted besides the registry's, listed first (e.g. ``pnp``, ``none``).
    """

    def __init__(self, load: Callable[[], Iterable[str]], extra: Iterable[str] = ()) -> None:
        self._load = load
        self._extra = tuple(extra)
        self._loaded: tuple[str, ...] | None = None
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        """The valid names."""
        if self._loaded is None:
            self._loaded = (*self._extra, *(n for n in self._load() if n not in self._extra))
        return self._loaded

    @choices.setter
    def choices(self, value: Any) -> None:  # click.Choice.__init__ assigns; the registry decides
        pass


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread so that every ``finally`` runs (locks released).

    A BaseException (like KeyboardInterrupt): no ``except Exception`` on the way swallows it.
    """

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = int(signum)


def _on_signal(signum: int, frame: Any) -> None:
    for s in STOP_SIGNALS:  # a second signal must not cut the clean-up short (SIGKILL still works)
        signal.signal(s, signal.SIG_IGN)
    raise Terminated(signum)


#: signals that stop a command cleanly (SIGHUP: the terminal was closed)
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


@contextlib.contextmanager
def _signals_as_exception() -> Any:
    """SIGTERM and SIGHUP raise :class:`Terminated` for the length of a command (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _on_signal) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def emit_json(record: dict[str, Any]) -> None:
    """One JSON object as one line on stderr (``--progress jsonl``)."""
    sys.stderr.write(json.dumps(record, default=str) + "\n")
    sys.stderr.flush()


class JsonLogHandler(logging.Handler):
    """Log records (and Python warnings) as ``{"event": "log", "level", "logger", "message"}`` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.name == "py.warnings":  # "path:line: Category: text\n  source": keep "Category: text"
                first = message.strip().splitlines()[0] if message.strip() else message
                message = first.split(": ", 1)[1] if ": " in first else first
            emit_json(
                {"event": "log", "level": record.levelname.lower(), "logger": record.name, "message": message}
            )
        except Exception:  # noqa: BLE001 - a log line must never stop a run
            self.handleError(record)


@contextlib.contextmanager
def json_logging(enabled: bool) -> Any:
    """While ``enabled``: every log record and Python warning goes to stderr as one JSON object."""
    if not enabled:
        yield
        return
    root = logging.getLogger()
    saved = root.handlers[:]
    handler = JsonLogHandler()
    root.handlers = [handler]
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.handlers = saved


def _progress_mode() -> str:
    ctx = click.get_current_context(silent=True)
    return str(ctx.params.get("progress_mode") or "") if ctx is not None else ""


def _fail(jsonl: bool, message: str, code: int, event: str = "error") -> None:
    """End the command: a JSON ``error``/``aborted`` line under ``--progress jsonl``, else ``Error: ...``."""
    if jsonl:
        emit_json({"event": event, "message": message, "exit_code": code})
        raise click.exceptions.Exit(code)
    if event == "aborted":
        click.echo(f"Aborted: {message}", err=True)
        raise click.exceptions.Exit(code)
    err = click.ClickException(message)
    err.exit_code = code
    raise err


#: exit statuses of a stopped command: 128 + the signal's number, as shells report them
EXIT_SIGINT, EXIT_SIGTERM = 130, 143


def _describe(err: BaseException) -> tuple[str, int, str]:
    """The one-line message, exit status and jsonl event of an error that ends a command."""
    if isinstance(err, (KeyboardInterrupt, Terminated, click.Abort)):
        if isinstance(err, Terminated):
            name, code = signal.Signals(err.signum).name, 128 + err.signum
        else:
            name, code = "Ctrl-C", EXIT_SIGINT
        return (
            f"stopped by {name}: the locks are released and nothing was left half-written; run the same "
            "command again to resume (a segment run keeps its finished tiles)",
            code,
            "aborted",
        )
    if isinstance(err, click.ClickException):
        return err.format_message(), err.exit_code, "error"
    if isinstance(err, GeoPPPError):
        return str(err), 1, "error"
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":  # torch's CUDA OOM too
        log.debug("out of memory", exc_info=True)
        return (
            f"ran out of memory ({str(err).splitlines()[0][:160] if str(err) else type(err).__name__}). "
            "Nothing was left half-written: ask for less at once (a smaller --batch-size, --tile-size or "
            "--num) or free memory, then rerun (a segment run resumes its finished tiles)",
            1,
            "error",
        )
    if isinstance(err, OSError):
        log.debug("operating-system error", exc_info=True)
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        if err.errno in (errno.ENAMETOOLONG, errno.EROFS):
            fix = (
                "a file or folder name is too long for the file system (255 characters, with the 14 of "
                "geo-ppp's lock files): choose shorter output names"
                if err.errno == errno.ENAMETOOLONG
                else "the file system is read-only: write the outputs elsewhere"
            )
            return f"{err.strerror}{where}: {fix}. Nothing was left half-written", 1, "error"
        return (
            f"a file could not be written or read: {err.strerror or err}{where}. Nothing was left "
            "half-written: free space (is the disk full?) or fix the permissions, then rerun (a segment "
            "run resumes its finished tiles)",
            1,
            "error",
        )
    log.debug("unexpected error", exc_info=True)
    return (
        f"unexpected {type(err).__name__}: {err}. This is a bug in geo_ppp; rerun with -vv to see the "
        "traceback and report it",
        1,
        "error",
    )


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn any error into a one-line message and exit status 1: no traceback reaches a user.

    geo_ppp's own errors carry their fix. An operating-system error (a full disk, a folder without
    write permission, a vanished file) is reported as such; outputs are written atomically, so none
    is left half-written. Anything else is a bug: the message says so, and ``-vv`` logs the traceback.

    SIGTERM, SIGHUP and Ctrl-C stop the command cleanly: every lock is released and no output is
    left half-written; the exit status is 128 + the signal (143 SIGTERM, 129 SIGHUP, 130 Ctrl-C).
    Under ``--progress jsonl`` every log line and Python warning is a JSON object on stderr, and the
    command ends with
    ``{"event": "error", ...}`` or ``{"event": "aborted", ...}`` instead of ``Error: ...``.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        jsonl = _progress_mode() == "jsonl"
        with _signals_as_exception(), json_logging(jsonl):
            try:
                return func(*args, **kwargs)
            except (click.exceptions.Exit, SystemExit):
                raise
            except (Exception, KeyboardInterrupt, Terminated) as err:
                message, code, event = _describe(err)
        _fail(jsonl, message, code, event)

    return wrapper


def _asks_jsonl(args: list[str]) -> bool:
    """Whether a command line asks for ``--progress jsonl`` (read before click parses it)."""
    return "--progress=jsonl" in args or any(
        a == "--progress" and b == "jsonl" for a, b in zip(args, args[1:], strict=False)
    )


class ProgressCommand(click.Command):
    """A command with ``--progress``: under ``jsonl`` even a usage error is one JSON ``error`` line."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        """Parse the arguments; a usage error under ``--progress jsonl`` ends as a JSON line."""
        jsonl = _asks_jsonl(list(args))
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as err:
            if not jsonl:
                raise
            _fail(True, err.format_message(), err.exit_code)
            raise  # not reached: _fail raises


class ProgressGroup(click.Group):
    """The ``geo-ppp`` group: an unknown command in a line asking ``--progress jsonl`` ends as JSON too."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse the group's options, remembering whether the line asks for JSON lines."""
        ctx.meta["geo_ppp.jsonl"] = _asks_jsonl(list(args))
        return super().parse_args(ctx, args)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """Find the command; a usage error under ``--progress jsonl`` ends as a JSON line."""
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as err:
            if not ctx.meta.get("geo_ppp.jsonl"):
                raise
            _fail(True, err.format_message(), err.exit_code)
            raise  # not reached: _fail raises


def command_line() -> str:
    """The current command as a shell line, rerunnable as recorded.

    Rebuilt from the parsed options (defaults left out), then the positional arguments (after ``--``
    when one of them starts with a dash).
    """
    ctx = click.get_current_context()
    parts = [ctx.command_path]
    arguments: list[str] = []
    for param in ctx.command.params:
        if isinstance(param, click.Argument) and param.name is not None:
            value = ctx.params.get(param.name)
            values = value if isinstance(value, (list, tuple)) else [] if value is None else [value]
            arguments += [shlex.quote(str(v)) for v in values]
            continue
        if not isinstance(param, click.Option) or param.name is None:
            continue
        value = ctx.params.get(param.name)
        if value is None or value == param.default or param.name in ("help", "version"):
            continue
        if param.is_flag:
            opts = param.opts if value else param.secondary_opts
            parts.extend(opts[:1])
            continue
        for item in value if param.multiple else [value]:
            parts += [param.opts[0], shlex.quote(str(item))]
    if any(a.lstrip("'").startswith("-") for a in arguments):
        arguments.insert(0, "--")
    return " ".join(parts + arguments)


overwrite_option = click.option("--overwrite", is_flag=True, help="Replace outputs that already exist.")
device_option = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where to run; auto picks CUDA when available.",
)


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise click.ClickException("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return name


def set_verbosity(verbose: int, quiet: bool) -> bool:
    """Per-command -v/-q (added to the group's): warnings only by default, -v per-tile info, -vv debug.

    Returns:
        Whether the run is quiet (``-q`` on the command or on the group).
    """
    parent = click.get_current_context().find_root().params
    verbose += parent.get("verbose") or 0
    quiet = quiet or bool(parent.get("quiet"))
    level = logging.WARNING if quiet or not verbose else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.getLogger("geo_ppp").setLevel(level)
    return quiet


PROGRESS_MODES = ("bar", "jsonl", "none")

progress_option = click.option(
    "--progress",
    "progress_mode",
    type=click.Choice(PROGRESS_MODES),
    default="bar",
    show_default=True,
    help="bar: a terminal progress bar (none with -q); jsonl: one JSON object per line on stderr "
    "(the plan with the total tile count first, one line per tile, then the outputs; logs, warnings and "
    "errors as JSON too); none.",
)


scheduler_option = click.option(
    "--scheduler",
    default=None,
    help="Run tiles on Dask: local, local:N (N worker processes) or a scheduler address (tcp://HOST:8786). "
    "For `run`, it overrides the spec's [job] scheduler.",
)


def verbosity_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``-v`` (repeatable) and ``-q``, on the group and on the commands that log per tile."""
    func = click.option(
        "-q", "--quiet", is_flag=True, help="Only warnings and errors (and no progress bar)."
    )(func)
    return click.option(
        "-v",
        "--verbose",
        count=True,
        help="More logging: -v which tiles ran or were skipped and why, -vv debug.",
    )(func)


#: The largest seed: seeds are offset per source and per sample (seed * 1_000_003 + i) in 64-bit integers.
MAX_SEED = 2**32 - 1

seed_option = checked_seed_option = click.option(
    "--seed",
    type=click.IntRange(0, MAX_SEED),
    default=0,
    show_default=True,
    help=f"Random seed, 0..{MAX_SEED}.",
)


class FiniteFloatRange(click.FloatRange):
    """A ``click.FloatRange`` that also refuses nan and inf (a plain range lets nan through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The number, or a usage error naming the option and value."""
        import math

        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number
