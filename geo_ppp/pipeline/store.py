"""The work dir: per-tile results kept on disk so a killed run resumes without recomputing them.

Layout::

    WORKDIR/manifest.json          the fingerprint of the run (inputs, prior, settings, tiles)
    WORKDIR/tiles/r0003_c0012.npy  float16 (K, T, T) class probabilities, 0 at invalid pixels
    WORKDIR/tiles/r0003_c0013.skip an empty marker: the tile held no valid pixel

Each tile file is written under a temporary name and renamed, so a tile is either complete or
absent. A work dir that holds results of a different run (another fingerprint) is refused unless
``resume=False``, which clears it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from geo_ppp.core.atomic import write_json
from geo_ppp.errors import InputError
from geo_ppp.pipeline.tiling import Tile

__all__ = ["TileStore"]


def _normalise(fingerprint: dict[str, Any]) -> Any:
    """A fingerprint as its manifest stores it (JSON types, sorted keys)."""
    return json.loads(json.dumps(fingerprint, sort_keys=True, default=str))


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


class TileStore:
    """Per-tile results of one run in a work dir.

    Args:
        folder: the work dir (created if missing).
        fingerprint: JSON-able description of everything that determines tile results.
        resume: keep finished tiles of the same run (``False`` clears the work dir's tiles).

    Raises:
        InputError: the work dir holds tiles of a different run and ``resume`` is true.
    """

    def __init__(
        self, folder: str | os.PathLike[str], fingerprint: dict[str, Any], resume: bool = True
    ) -> None:
        self.folder = Path(folder)
        self.tiles = self.folder / "tiles"
        fingerprint = _normalise(fingerprint)
        manifest = self.folder / "manifest.json"
        if manifest.exists():
            old = json.loads(manifest.read_text()).get("fingerprint")
            if old != fingerprint:
                if resume and self.tiles.is_dir() and any(self.tiles.iterdir()):
                    diff = ", ".join(_differences(old, fingerprint)[:6]) or "the manifest"
                    raise InputError(
                        f"work dir {self.folder} holds tiles of a different run (differs in: {diff}); pass "
                        "--no-resume to discard them, or choose another --workdir"
                    )
        if not resume and self.tiles.is_dir():
            shutil.rmtree(self.tiles)
        try:
            self.tiles.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"cannot create the work dir {self.folder} ({exc}); choose another --workdir"
            ) from exc
        write_json(manifest, {"fingerprint": fingerprint, "format": 1})

    @staticmethod
    def holds_run(folder: str | os.PathLike[str], fingerprint: dict[str, Any]) -> bool:
        """Whether ``folder``'s manifest records the run with this fingerprint (nothing is written)."""
        try:
            old = json.loads((Path(folder) / "manifest.json").read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            return False
        return old == _normalise(fingerprint)

    @classmethod
    def open_existing(cls, folder: str | os.PathLike[str]) -> TileStore:
        """Open a work dir that a run has set up (in a worker: no fingerprint check, nothing cleared)."""
        store = cls.__new__(cls)
        store.folder = Path(folder)
        store.tiles = store.folder / "tiles"
        if not store.tiles.is_dir():
            raise InputError(
                f"work dir {store.folder} is not set up (no tiles/ folder); start the run with segment()"
            )
        return store

    def _path(self, tile: Tile, suffix: str) -> Path:
        return self.tiles / f"{tile.key}{suffix}"

    def status(self, tile: Tile) -> str | None:
        """``done``, ``skipped`` or None (still to run)."""
        if self._path(tile, ".npy").exists():
            return "done"
        if self._path(tile, ".skip").exists():
            return "skipped"
        return None

    def save(self, tile: Tile, probabilities: np.ndarray) -> None:
        """Store a tile's (K, T, T) probabilities atomically (as float16)."""
        fd, tmp = tempfile.mkstemp(prefix=f".{tile.key}.", suffix=".npy", dir=self.tiles)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, probabilities.astype(np.float16), allow_pickle=False)
            os.replace(tmp, self._path(tile, ".npy"))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def mark_skipped(self, tile: Tile) -> None:
        """Record that a tile has no valid pixel."""
        self._path(tile, ".skip").touch()

    def load(self, tile: Tile) -> np.ndarray | None:
        """A tile's probabilities (memory-mapped, read-only), or None if it was skipped."""
        path = self._path(tile, ".npy")
        if not path.exists():
            return None
        return np.load(path, mmap_mode="r", allow_pickle=False)

    def remove(self) -> None:
        """Delete the work dir."""
        shutil.rmtree(self.folder, ignore_errors=True)
