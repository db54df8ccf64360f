"""``geo-ppp demo``: segment the real sample tiles end to end with the shipped prior, on the CPU.

The eight NAIP patches of the repository's ``sample_tiles/`` are one region (eight files of one NAIP tile,
with nodata between them) and the eight NLCD patches its weak labels. The demo writes the map COG with
its ``.qml`` style, the class polygons (GeoPackage), a quicklook PNG and the resolved config, then
scores the map against the 1 m truth of every patch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from geo_ppp.demos import sample_tiles
from geo_ppp.errors import InputError
from geo_ppp.geo.legend import load_legend
from geo_ppp.io import read_class_raster, read_labels_on_grid
from geo_ppp.landcover.metrics import Scores, confusion
from geo_ppp.outputs import OutputError
from geo_ppp.pipeline import segment
from geo_ppp.pipeline.job import Progress, RunObserver

__all__ = ["run_landcover_demo", "score_against_truth"]


def score_against_truth(pred: str | os.PathLike[str], truths: list[Path], legend_name: str) -> Scores:
    """Score a region map against several truth rasters (the map is read on each truth's grid)."""
    legend = load_legend(legend_name)
    total = np.zeros((legend.num_classes, legend.num_classes), np.int64)
    for truth in truths:
        codes, nodata, grid = read_class_raster(truth, what="truth")
        pred_codes, _ = read_labels_on_grid(pred, grid, what="prediction")
        pred_index = legend.to_index(pred_codes, legend.nodata)
        total += confusion(pred_index, legend.to_index(codes, nodata), legend.num_classes)
    return Scores.from_confusion(total)


def run_landcover_demo(
    out: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    seed: int = 0,
    steps: int | None = None,
    overwrite: bool = False,
    device: str = "cpu",
    progress: RunObserver | Progress | None = None,
    echo: Callable[[str], object] = print,
    command: str = "",
) -> str:
    """Segment ``data`` (a sample_tiles folder; see :func:`~geo_ppp.demos.sample_tiles`) into ``out``.

    Reports the accuracy of the map against the folder's 1 m truth.
    """
    data = sample_tiles(data)
    naip = sorted((data / "naip").glob("*.tif"))
    nlcd = sorted((data / "nlcd").glob("*.tif"))
    truth = sorted((data / "truth").glob("*.tif"))
    if not naip or not nlcd:
        raise InputError(
            f"{data} holds no naip/*.tif or nlcd/*.tif; run the demo from a clone of the repository or pass "
            "--data pointing at its sample_tiles/ folder"
        )
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; the demo writes a folder of products: give a folder name")
    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot make the folder {out} ({err.strerror}); choose another --out") from None
    echo(f"segmenting {len(naip)} NAIP files of {data} with weak labels from {len(nlcd)} NLCD files ...")
    try:
        result = segment(
            naip,
            nlcd,
            "chesapeake",
            out / "landcover.tif",
            seed=seed,
            steps=steps,
            vector=out / "landcover.gpkg",
            quicklook=out / "quicklook.png",
            overwrite=overwrite,
            device=device,
            progress=progress,
            command=command,
        )
    except BaseException:
        for folder in created:  # a refused or failed demo leaves no empty folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    lines = [f"wrote {kind:<9} {path}" for kind, path in result.outputs.items()]
    s = result.stats
    lines.append(
        f"tiles: {s['ran']} ran, {s['skipped']} skipped (no imagery), {s['resumed']} resumed; "
        f"{s['seconds']['total']:.0f} s on {device}"
    )
    if truth:
        scores = score_against_truth(result.out, truth, "chesapeake")
        legend = load_legend("chesapeake")
        present = scores.confusion.sum(1) > 0
        per_class = ", ".join(
            f"{n} {iou:.0%}" for n, iou, ok in zip(legend.names, scores.iou, present, strict=True) if ok
        )
        lines.append(
            f"accuracy against the 1 m truth of {len(truth)} patches: {scores.accuracy:.1%}, "
            f"mIoU {scores.miou:.1%} (IoU: {per_class})"
        )
    return "\n".join(lines)
