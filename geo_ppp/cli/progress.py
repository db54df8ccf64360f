"""What a run shows while it works: the terminal bar, or JSON lines for programs (``--progress``)."""

from __future__ import annotations

import json
import sys
from typing import Any

from geo_ppp.pipeline.job import RegionJob, RegionResult, RunObserver
from geo_ppp.pipeline.tiling import Tile

__all__ = ["JsonLines", "TileBar", "observer_for"]


class TileBar(RunObserver):
    """The terminal progress bar of a run: made once the regions are planned, with their total.

    Nothing is printed before the first region is planned, so the bar starts with the right total
    and measures the tiles' rate only.
    """

    def __init__(self) -> None:
        self.bar: Any = None
        self.total = 0
        self.counts = {"ran": 0, "skipped": 0, "resumed": 0}
        self.stages: dict[str, Any] = {}

    def planned(self, job: RegionJob, name: str | None = None) -> None:
        """Add a region's tiles to the total (the bar appears with the first region)."""
        from tqdm import tqdm

        self.total += len(job.tiles)
        if self.bar is None:
            self.bar = tqdm(total=self.total, unit="tile", dynamic_ncols=True, leave=True)
        else:
            self.bar.total = self.total
            self.bar.refresh()

    def tile(self, done: int, total: int, tile: Tile, status: str) -> None:
        """One tile done."""
        if self.bar is None:
            return
        self.counts[status] += 1
        self.bar.set_postfix(self.counts, refresh=False)
        if self.bar.n + 1 >= self.total:
            self.bar.n += 1  # the last tile: close() draws the final line, once (not twice in a log)
        else:
            self.bar.update(1)

    def stage(self, name: str, done: int, total: int) -> None:
        """A method's stage (teacher tiles, training steps): a second bar under the tiles' bar."""
        from tqdm import tqdm

        bar = self.stages.get(name)
        if bar is None:
            desc = {"teacher": "plug-and-play teacher", "train": "training segmenter",
                    "calibrate": "region calibration"}.get(name, name)  # fmt: skip
            unit = {"train": "step", "calibrate": "stage"}.get(name, "tile")
            bar = self.stages[name] = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, position=1)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()
            if self.bar is not None and self.bar.n == 0:
                self.bar.reset(total=self.total)  # the tiles' rate starts with the tiles

    def published(self, result: RegionResult, name: str | None = None) -> None:
        """A region's outputs are written (the bar keeps going over the other regions)."""

    def close(self) -> None:
        """Close the bars (once)."""
        for bar in self.stages.values():
            bar.close()
        self.stages.clear()
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class JsonLines(RunObserver):
    """``--progress jsonl``: one JSON object per line on stderr, for programs (the QGIS plugin).

    Lines, in order: ``{"event": "plan", "region", "tiles", "total", "workdir"}`` for every region
    before any tile runs (``total``: the tiles of every region planned so far); ``{"event": "tile",
    "done", "total", "tile", "status"}`` per tile; ``{"event": "stage", "stage", "done", "total"}``
    for the calibration, a region-trained method's teacher tiles and training steps; ``{"event":
    "outputs", "region", "outputs", "stats"}`` per region published. Log records and warnings are
    ``{"event": "log", ...}`` lines and a run that fails or is stopped ends with ``{"event": "error",
    ...}`` or ``{"event": "aborted", ...}`` (:func:`geo_ppp.cli.options.handle_errors`). The schema:
    ``docs/progress-jsonl.md``.
    """

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = 0

    def _write(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()

    def planned(self, job: RegionJob, name: str | None = None) -> None:
        """A region planned."""
        self.total += len(job.tiles)
        self._write(
            {
                "event": "plan",
                "region": name,
                "tiles": len(job.tiles),
                "total": self.total,
                "workdir": job.workdir,
            }
        )

    def tile(self, done: int, total: int, tile: Tile, status: str) -> None:
        """A tile done."""
        self._write({"event": "tile", "done": done, "total": total, "tile": tile.key, "status": status})

    def stage(self, name: str, done: int, total: int) -> None:
        """A method's stage: ``{"event": "stage", "stage", "done", "total"}`` (training: every 10th step)."""
        if name == "train" and done % 10 and done < total:
            return
        self._write({"event": "stage", "stage": name, "done": done, "total": total})

    def published(self, result: RegionResult, name: str | None = None) -> None:
        """A region's outputs."""
        outputs = {k: str(v) for k, v in result.outputs.items()}
        self._write({"event": "outputs", "region": name, "outputs": outputs, "stats": result.stats})


def observer_for(mode: str, quiet: bool) -> RunObserver:
    """The observer of a run for ``--progress MODE`` (``bar`` under ``-q`` shows nothing)."""
    if mode == "jsonl":
        return JsonLines()
    if mode == "bar" and not quiet:
        return TileBar()
    return RunObserver()
