"""Safe output writing: refuse to overwrite unless asked, and never leave a half-written file.

Every file is written to a temporary name in its destination folder and renamed into place, so a
crash leaves either the old file or the complete new one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from geo_ppp.core.atomic import atomic_path, write_json
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
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{folder} is a file, not a folder; choose an output path inside a folder")
        if not folder.is_dir():
            raise OutputError(f"output folder {folder} does not exist; create it first")
        if not os.access(folder, os.W_OK):
            raise OutputError(f"output folder {folder} is not writable; choose another --out")
    return out
