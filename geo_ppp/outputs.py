"""Safe output writing: refuse to overwrite unless asked, and never leave a half-written file.

Every file is written to a temporary name in its destination folder and renamed into place, so a
crash leaves either the old file or the complete new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from geo_ppp.errors import GeoPPPError, OutputExistsError

__all__ = ["atomic_path", "check_outputs", "write_json"]


class OutputError(GeoPPPError, OSError):
    """An output location cannot be written."""


def check_outputs(paths: Iterable[str | os.PathLike[str]], overwrite: bool) -> list[Path]:
    """Check, before any work, that every output may be written.

    Raises:
        OutputExistsError: if one exists and ``overwrite`` is false.
        OutputError: if a destination folder is missing or not writable.
    """
    out = [Path(p) for p in paths]
    for path in out:
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise OutputError(f"output folder {folder} does not exist; create it first")
        if not os.access(folder, os.W_OK):
            raise OutputError(f"output folder {folder} is not writable; choose another --out")
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    Example:
        >>> with atomic_path("grid.png") as tmp:  # doctest: +SKIP
        ...     image.save(tmp)
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; outputs are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
