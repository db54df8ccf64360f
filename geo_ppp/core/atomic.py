"""Atomic file writing: a temporary name in the destination folder, renamed into place.

A crash leaves either the old file or the complete new one, never a half-written file. Lives in
the core (stdlib only) so that both the weights code and the output writers above it can use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_folder", "atomic_path", "write_json"]


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
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; outputs and weights are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; swap it onto ``path`` if the block succeeds.

    The folder output (a prior, a saved segmenter, a sample set) appears complete or not at all:
    files written into the temporary folder can never be paired with another run's. An existing
    ``path`` is replaced (callers check ``--overwrite`` before any work); it is moved aside first
    and removed only once the new folder is in place. On failure the temporary folder goes and
    ``path`` is untouched.

    Example:
        >>> with atomic_folder("my_prior") as tmp:  # doctest: +SKIP
        ...     save_prior(prior, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes private folders; outputs are meant to be shared
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "previous")
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old / "previous", path)
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            if path.exists() or path.is_symlink():
                path.unlink()
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON (indented, sorted keys) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
