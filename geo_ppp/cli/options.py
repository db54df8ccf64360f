"""What every command shares: error handling, the recorded command line, common options, verbosity.

Choice lists are read from the registries they name (samplers, schedules, presets, ...) when click
first needs them, so a new entry in a registry appears in the CLI without an edit here, and
``geo-ppp --help`` does not import torch.
"""

from __future__ import annotations

import functools
import logging
import shlex
from collections.abc import Callable, Iterable
from typing import Any

import click

from geo_ppp.errors import GeoPPPError

log = logging.getLogger("geo_ppp")

__all__ = [
    "RegistryChoice",
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


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn any error into a one-line message and exit status 1: no traceback reaches a user.

    geo_ppp's own errors carry their fix. An operating-system error (a full disk, a folder without
    write permission, a vanished file) is reported as such; outputs are written atomically, so none
    is left half-written. Anything else is a bug: the message says so, and ``-vv`` logs the traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except GeoPPPError as err:
            raise click.ClickException(str(err)) from err
        except OSError as err:
            log.debug("operating-system error", exc_info=True)
            where = f" ({err.filename})" if getattr(err, "filename", None) else ""
            raise click.ClickException(
                f"a file could not be written or read: {err.strerror or err}{where}. Nothing was left "
                "half-written: free space (is the disk full?) or fix the permissions, then rerun (a segment "
                "run resumes its finished tiles)"
            ) from err
        except Exception as err:
            log.debug("unexpected error", exc_info=True)
            raise click.ClickException(
                f"unexpected {type(err).__name__}: {err}. This is a bug in geo_ppp; rerun with -vv to see "
                "the traceback and report it"
            ) from err

    return wrapper


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
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
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
    "(the plan with the total tile count first, one line per tile, then the outputs); none.",
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
