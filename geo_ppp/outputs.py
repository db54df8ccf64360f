"""Output policy: refuse to overwrite unless asked, refuse colliding outputs, lock a run's outputs.

:func:`check_outputs` and :func:`check_distinct` run before any work; :class:`RunLock` keeps a
second run off the same outputs. Writing itself is atomic everywhere through
:mod:`geo_ppp.core.atomic` (a temporary name in the destination folder, renamed into place).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from geo_ppp.errors import GeoPPPError, OutputExistsError

__all__ = [
    "LOCK_CHARS",
    "OutputError",
    "RunLock",
    "check_distinct",
    "check_name_lengths",
    "check_outputs",
    "claim_outputs",
]

log = logging.getLogger(__name__)

#: characters a lock file adds to the name it locks (``.NAME.geo_ppp.lock``)
LOCK_CHARS = 14


class OutputError(GeoPPPError, OSError):
    """An output location cannot be written."""


def check_outputs(
    paths: Iterable[str | os.PathLike[str]], overwrite: bool, create_folders: bool = False
) -> list[Path]:
    """Check, before any work, that every output may be written.

    With ``create_folders`` a missing destination folder is fine when the run can make it (its nearest
    existing ancestor is a writable folder).

    Raises:
        OutputExistsError: if one exists and ``overwrite`` is false.
        OutputError: if a destination folder is missing or not writable.
    """
    out = [Path(p) for p in paths]
    for path in out:
        if path.is_dir():
            raise OutputError(f"{path} is a folder; give this output a file name (e.g. {path / 'map.tif'})")
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")
        folder = path.parent if str(path.parent) else Path(".")
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{folder} is a file, not a folder; choose an output path inside a folder")
        if not folder.is_dir() and create_folders:
            ancestor = next((a for a in folder.absolute().parents if a.exists()), None)
            if ancestor is None or not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
                raise OutputError(f"output folder {folder} cannot be made: {ancestor} is not writable")
            continue
        if not folder.is_dir():
            raise OutputError(f"output folder {folder} does not exist; create it first")
        if not os.access(folder, os.W_OK):
            raise OutputError(f"output folder {folder} is not writable; choose another --out")
    return out


def _name_max(path: Path) -> int:
    """The longest file name the file system holding ``path`` takes (255 where it cannot say)."""
    folder = next((a for a in path.absolute().parents if a.is_dir()), None)
    try:
        return int(os.pathconf(folder or ".", "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def check_name_lengths(
    labelled: Mapping[str, str | os.PathLike[str]], extra: Mapping[str, int] | None = None
) -> None:
    """Refuse, before any work, output names too long for their lock (and temporary) files.

    Args:
        labelled: the flag that names each output (``--out``) and its path.
        extra: characters the run adds to a name beyond the lock's :data:`LOCK_CHARS`, by flag
            (a map's sidecars and scratch raster add more).

    Raises:
        OutputError: naming the output, its length and the flag to shorten.
    """
    for flag, path in labelled.items():
        path = Path(path)
        n = len(os.fsencode(path.name))
        added = LOCK_CHARS + (extra or {}).get(flag, 0)
        limit = _name_max(path)
        if n + added > limit:
            what = (
                f"the lock's {LOCK_CHARS}"
                if added == LOCK_CHARS
                else f"the {added} its lock and sidecars add"
            )
            raise OutputError(
                f"the name {path.name} is {n} characters; the file system allows {limit} including {what}: "
                f"choose a shorter {flag} (at most {limit - added} characters)"
            )


def _key(path: str | os.PathLike[str]) -> str:
    """A path as the file system will see it: absolute, symlinks followed, case-folded where it folds."""
    return os.path.normcase(os.path.realpath(os.path.abspath(path)))


def check_distinct(
    files: Mapping[str, str | os.PathLike[str]],
    folders: Mapping[str, str | os.PathLike[str]] | None = None,
    roots: Mapping[str, str | os.PathLike[str]] | None = None,
) -> None:
    """Refuse outputs of one run (or of one job) that would land on each other.

    Args:
        files: a label per output file (``--out landcover.tif``, ``its style landcover.qml``...).
        folders: a label per output folder that the run fills and may remove (the work dir).
        roots: a label per folder of the run that must not be an output file (files inside are fine).

    Raises:
        OutputError: naming every pair that collides: two labels on one file, a file that is a
            folder of the run, or a file inside such a folder.
    """
    problems: list[str] = []
    seen: dict[str, str] = {}
    for label, path in files.items():
        key = _key(path)
        if key in seen:
            problems.append(f"{label} and {seen[key]} are the same file ({path})")
        else:
            seen[key] = label
    for f_label, f_path in (roots or {}).items():
        label = seen.get(_key(f_path))
        if label is not None:
            problems.append(f"{label} is also {f_label} ({f_path})")
    for f_label, f_path in (folders or {}).items():
        fkey = _key(f_path)
        for key, label in seen.items():
            if key == fkey:
                problems.append(f"{label} is also {f_label} ({f_path})")
            elif key.startswith(fkey.rstrip(os.sep) + os.sep):
                problems.append(f"{label} lies inside {f_label} {f_path}, which the run fills and clears")
    if problems:
        raise OutputError(
            "outputs collide: " + "; ".join(problems) + ". Give each output its own name (nothing written)."
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _lock_failure(path: Path, lock: Path, err: OSError) -> str:
    """Why a lock could not be made, with the fix, by the operating system's reason."""
    import errno

    reason = err.strerror or str(err)
    if err.errno == errno.ENAMETOOLONG:
        n = len(os.fsencode(path.name))
        fix = f"the name {path.name} is {n} characters, {n + LOCK_CHARS} with the lock's: shorten it"
    elif err.errno == errno.EROFS:
        fix = f"{path.parent} is on a read-only file system; write the outputs elsewhere"
    elif err.errno in (errno.EACCES, errno.EPERM):
        fix = f"{path.parent} is not writable; fix its permissions or write the outputs elsewhere"
    elif err.errno == errno.ENOSPC:
        fix = "the disk is full; free space and rerun"
    else:
        fix = f"check that {path.parent} is a writable folder"
    return f"cannot lock {path} ({reason}: {lock.name}); {fix}"


class RunLock:
    """Lock files that keep two runs off the same outputs and work dir for the length of a run.

    Each locked path ``P`` gets ``.P.name.geo_ppp.lock`` beside it, created atomically (``O_EXCL``)
    and holding who holds it (process id, host, start time, command). A lock whose process is gone
    (a killed run, on this host) is stale and taken over, with a warning; a live one stops the second
    run at once, naming the first. Use as a context manager; the locks go when the block ends.

    Args:
        paths: the outputs and work dir to lock.
        command: recorded in the lock for the message another run shows.
        make_folders: those of ``paths`` whose missing folders the run makes anyway (a work dir, a
            saved segmenter): they are made now for the lock (``new/seg`` is locked before ``new``
            exists) and removed again on release while still empty.
    """

    def __init__(
        self,
        paths: Iterable[str | os.PathLike[str]],
        command: str = "",
        make_folders: Iterable[str | os.PathLike[str]] = (),
    ) -> None:
        self.paths = sorted({Path(os.path.abspath(p)) for p in paths})
        self.make_folders = {Path(os.path.abspath(p)) for p in make_folders}
        self.command = command
        self.held: list[Path] = []
        self.made: list[Path] = []

    @staticmethod
    def lock_file(path: Path) -> Path:
        """Where the lock of ``path`` lives."""
        return path.with_name(f".{path.name}.geo_ppp.lock")

    def _take(self, path: Path) -> None:
        import json
        import socket
        import time

        lock = self.lock_file(path)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": self.command,
        }
        for _ in range(3):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    other = json.loads(lock.read_text())
                except (OSError, ValueError):
                    other = {}
                pid, host = other.get("pid"), other.get("host")
                if isinstance(pid, int) and host == record["host"] and not _alive(pid):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(lock)  # stale: its run was killed
                        log.warning(
                            "took over the lock on %s of process %s (started %s: %s), which is gone: "
                            "that run was stopped before it finished",
                            path,
                            pid,
                            other.get("started", "?"),
                            other.get("command") or "no command recorded",
                        )
                    continue
                if not other:  # being written this instant, or unreadable: treat as held
                    other = {"pid": "?", "started": "?", "command": "?"}
                raise OutputError(
                    f"another geo-ppp run (process {other.get('pid')} on {other.get('host', '?')}, started "
                    f"{other.get('started')}: {other.get('command') or 'no command recorded'}) is writing "
                    f"{path}; wait for it to finish, or give this run another --out / --workdir. If that "
                    f"run is gone, delete {lock}"
                ) from None
            except OSError as err:
                raise OutputError(_lock_failure(path, lock, err)) from None
            self.held.append(lock)  # before it is written: an interrupt here still removes it
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(record))
            return
        raise OutputError(f"cannot take the lock {lock}: it keeps reappearing; is another run starting?")

    def __enter__(self) -> RunLock:
        try:
            for path in self.paths:
                if path in self.make_folders:
                    self._make_folder(path.parent)
                if path.parent.is_dir():  # else check_outputs says the folder is missing
                    self._take(path)
        except BaseException:
            self.release()
            raise
        return self

    def _make_folder(self, folder: Path) -> None:
        """Make a missing folder of an output (the run would make it anyway) so its lock has a place.

        Folders made here and still empty are removed again on release: a run that stops early
        leaves nothing behind.
        """
        missing = []
        while not folder.is_dir() and folder.parent != folder:
            missing.append(folder)
            folder = folder.parent
        for made in reversed(missing):
            try:
                made.mkdir()
            except FileExistsError:
                continue
            except OSError:
                return  # not a folder or not writable: check_outputs names it
            self.made.append(made)

    def release(self) -> None:
        """Remove the locks this object holds (and the folders it made, if still empty)."""
        for lock in self.held:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
        self.held.clear()
        for made in reversed(self.made):
            with contextlib.suppress(OSError):
                made.rmdir()
        self.made.clear()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def claim_outputs(
    labelled: Mapping[str, str | os.PathLike[str]], overwrite: bool, command: str = ""
) -> Iterator[list[Path]]:
    """Check and lock a command's output files before any work; the locks go when the block ends.

    Names too long for their lock, outputs that land on each other, outputs that exist (without
    ``overwrite``) or whose folder cannot be written are refused; then each is locked
    (:class:`RunLock`) so a second command onto the same file stops at once. Write each output
    atomically inside the block.

    Example:
        >>> with claim_outputs({"--out": "tours.txt"}, overwrite=False) as (out,):  # doctest: +SKIP
        ...     write_tours(out, tours)
    """
    check_name_lengths(labelled)
    check_distinct(labelled)
    with RunLock(labelled.values(), command):
        yield check_outputs(labelled.values(), overwrite)
