"""Safe output writing: refuse to overwrite unless asked, and never leave a half-written file.

Every file is written to a temporary name in its destination folder and renamed into place, so a
crash leaves either the old file or the complete new one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from geo_ppp.core.atomic import atomic_path, write_json
from geo_ppp.errors import GeoPPPError, OutputExistsError

__all__ = ["OutputError", "atomic_path", "check_distinct", "check_outputs", "write_json"]


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
        if path.is_dir():
            raise OutputError(f"{path} is a folder; give this output a file name (e.g. {path / 'map.tif'})")
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
                problems.append(f"{label} lies inside {f_label} {f_path}, which the run fills and removes")
    if problems:
        raise OutputError(
            "outputs collide: " + "; ".join(problems) + ". Give each output its own name (nothing written)."
        )
