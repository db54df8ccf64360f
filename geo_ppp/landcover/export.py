"""Export a saved segmenter to ONNX, with the metadata the QGIS Deepness plugin reads.

The graph takes imagery as Deepness feeds it, (N, C, T, T) float32, and returns class probabilities
(N, K, T, T): the batch N is free, the bands C, the classes K and the tile size T are declared as
numbers (Deepness reads the class count from the output's dimension 1 and the tile size from the
input's last one). Deepness divides 0-255 pixels by 255 and then standardises them with the model's
``standardization_mean`` / ``standardization_std``; we write mean 0 and std 1/255 for every band,
which gives the graph the pixels back in 0-255, and the graph computes the segmenter's own features
(NDVI included) and their standardisation itself. Other metadata: ``model_type`` ``Segmentor``,
``class_names`` (the legend's, by output channel), ``resolution`` (cm per pixel), ``tile_size`` and
``tiles_overlap`` (a whole percent of the tile that Deepness turns back into exactly the overlap
asked for), ``seg_thresh``, and ``geo_ppp`` (legend codes and colours, bands, features, the training
command).

The file is written at ONNX opset :data:`OPSET`, which every onnxruntime Deepness 0.6.5 accepts
(1.12.1 to 1.17.0), and checked with onnxruntime (declared shapes, and probabilities against the
torch model) before it is put in place.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geo_ppp.core.atomic import atomic_path
from geo_ppp.core.memory import MEMORY_SHARE, available_memory
from geo_ppp.errors import InputError
from geo_ppp.landcover.segmenter import Segmenter, load_segmenter
from geo_ppp.outputs import OutputError, RunLock, check_outputs

__all__ = ["OPSET", "deepness_metadata", "deepness_overlap_percent", "export_onnx", "max_tile_size"]

#: largest difference allowed between onnxruntime's and torch's probabilities
TOLERANCE = 1e-4
#: ONNX opset written: onnxruntime 1.12 (the oldest Deepness 0.6.5 allows) runs opsets up to 17
OPSET = 17
#: newest ONNX IR version onnxruntime 1.12 reads
IR_VERSION = 8
#: bytes of memory one tile pixel takes while exporting and checking (measured: tracing, the
#: onnxruntime session and the two-tile check together: 745 at 1024 to 2048 px, with a margin)
BYTES_PER_PIXEL = 800


class _Probabilities(nn.Module):
    """Imagery in 0-255 -> class probabilities: the segmenter with its features and softmax."""

    def __init__(self, model: Segmenter) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.softmax(self.model(self.model.features(image)), 1)


def deepness_overlap_percent(tile_size: int, overlap: int) -> int | None:
    """The whole percent that Deepness turns back into ``overlap`` pixels, or None if there is none.

    Deepness 0.6.5 reads ``tiles_overlap`` as an integer percent and computes the pixels as
    ``int(tile_size * percent / 100 * 2) // 2``.

    Example:
        >>> deepness_overlap_percent(256, 64), deepness_overlap_percent(256, 32)
        (25, None)
    """
    fits = [p for p in range(100) if int(tile_size * p / 100 * 2) // 2 == overlap]
    return min(fits, key=lambda p: abs(p - 100 * overlap / tile_size)) if fits else None


def _nearest_overlaps(tile_size: int, overlap: int) -> str:
    reachable = sorted({int(tile_size * p / 100 * 2) // 2 for p in range(50)} - {overlap})
    below = [o for o in reachable if o < overlap][-1:]
    above = [o for o in reachable if o > overlap][:1]
    return " or ".join(str(o) for o in below + above)


def max_tile_size(pool: int, available: int | None = None) -> int:
    """The largest tile (a multiple of ``pool``) whose export fits in half of the available memory."""
    if available is None:
        available = available_memory()
    side = int((available * MEMORY_SHARE / BYTES_PER_PIXEL) ** 0.5)
    return max(pool, side - side % pool)


def check_export_settings(tile_size: int, overlap: int, pool: int, available: int | None = None) -> int:
    """Check the tile size and overlap before any work; returns the overlap as Deepness's percent.

    Raises:
        InputError: a tile size that is not a positive multiple of ``pool`` or too big for the
            memory, an overlap outside ``[0, tile_size / 2)``, or one Deepness cannot reproduce.
    """
    if tile_size < pool or tile_size % pool:
        raise InputError(f"--tile-size {tile_size} must be a positive multiple of {pool}, e.g. 256")
    biggest = max_tile_size(pool, available)
    if tile_size > biggest:
        raise InputError(
            f"--tile-size {tile_size} needs about {BYTES_PER_PIXEL * tile_size**2 / 1e9:.1f} GB of memory to "
            f"export, more than half of what is free; use at most {biggest} here (256 to 1024 is typical)"
        )
    if not 0 <= overlap < tile_size / 2:
        raise InputError(
            f"--overlap {overlap} must be >= 0 and below half the tile size ({tile_size / 2:g}); leave it "
            "out for the default, a quarter of the tile"
        )
    percent = deepness_overlap_percent(tile_size, overlap)
    if percent is None:
        raise InputError(
            f"--overlap {overlap} is not a whole percent of --tile-size {tile_size}, the only way Deepness "
            f"stores an overlap; use --overlap {_nearest_overlaps(tile_size, overlap)}"
        )
    return percent


def deepness_metadata(model: Segmenter, meta: dict[str, Any], tile_size: int, overlap: int) -> dict[str, Any]:
    """The ONNX metadata (values before JSON encoding) for a segmenter and its saved ``meta``."""
    bands = len(meta.get("bands") or []) or (4 if model.config.in_channels >= 5 else 3)
    names = meta.get("class_names") or [str(c) for c in meta.get("codes", range(model.config.classes))]
    percent = deepness_overlap_percent(tile_size, overlap)
    return {
        "model_type": "Segmentor",
        "class_names": {str(i): name for i, name in enumerate(names)},
        "resolution": round(100.0 * float(meta.get("resolution_m", 1.0)), 3),
        "tile_size": tile_size,
        "tiles_size": tile_size,
        "tiles_overlap": percent if percent is not None else round(100 * overlap / tile_size),
        "seg_thresh": 0.0,
        "seg_small_segment": 0,
        "standardization_mean": [0.0] * bands,
        "standardization_std": [1.0 / 255.0] * bands,
        "geo_ppp": {
            "legend": meta.get("legend"),
            "codes": meta.get("codes"),
            "colors": meta.get("colors"),
            "bands": meta.get("bands"),
            "features": meta.get("features"),
            "input": "pixels in 0-255 (Deepness: /255 then standardisation with std 1/255)",
            "overlap_px": overlap,
            "opset": OPSET,
            "command": meta.get("command"),
        },
    }


def export_onnx(
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    tile_size: int = 256,
    overlap: int | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Export the segmenter saved in ``folder`` to ``out`` (ONNX) and check it with onnxruntime.

    ``overlap`` (pixels) defaults to a quarter of the tile (25 %, which Deepness reproduces exactly).
    ``out`` is checked before any work, locked while the export runs and written atomically.

    Example:
        >>> export_onnx("county-seg/", "county-seg.onnx")["metadata"]["tile_size"]  # doctest: +SKIP
        256

    Returns:
        A report: the output path, the metadata, the declared input and output shapes, and the
        largest difference from torch.

    Raises:
        InputError: not a segmenter, or a tile size or overlap the export cannot take.
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
        OutputError: ``out`` cannot be written (its folder is missing or read-only, the disk is full).
    """
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out} is a folder; give the ONNX file's name, e.g. {out / 'segmenter.onnx'}")
    if out.suffix.lower() != ".onnx":
        raise InputError(
            f"{out}: an ONNX model's name must end in .onnx (e.g. {out.with_suffix('.onnx').name})"
        )
    check_outputs([out], overwrite)
    model, meta = load_segmenter(folder)
    overlap = tile_size // 4 if overlap is None else overlap
    check_export_settings(tile_size, overlap, model.config.pool)
    metadata = deepness_metadata(model, meta, tile_size, overlap)
    try:
        with RunLock([out], command=command):
            check_outputs([out], overwrite)  # again under the lock: another run may have written it
            with atomic_path(out) as tmp:
                shapes, diff = _write(model, metadata, tmp, tile_size)
    except OutputError:
        raise
    except OSError as err:
        raise OutputError(
            f"{out} could not be written ({err.strerror or err}); nothing was left half-written: free "
            "space or fix the folder's permissions, then run export-onnx again"
        ) from None
    return {"out": str(out), "metadata": metadata, "shapes": shapes, "max_abs_difference": diff}


def _write(model: Segmenter, metadata: dict[str, Any], path: Path, tile_size: int) -> tuple[dict, float]:
    """Trace, declare the static shapes, add the metadata, save to ``path`` and check it."""
    import onnx

    wrapped = _Probabilities(model).eval()
    bands = len(metadata["standardization_mean"])
    example = torch.rand(1, bands, tile_size, tile_size, generator=torch.Generator().manual_seed(0)) * 255
    with warnings.catch_warnings():
        # the tracer notes that the band count and the padding are fixed by the example: they are
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # the TorchScript exporter writes the opset it is asked for (the dynamo one may upgrade it)
        torch.onnx.export(
            wrapped, (example,), str(path), input_names=["image"], output_names=["probabilities"],
            dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}}, opset_version=OPSET,
            dynamo=False,
        )  # fmt: skip
    proto = onnx.load(str(path))
    opsets = {o.domain: o.version for o in proto.opset_import}
    if opsets.get("", opsets.get("ai.onnx")) != OPSET or proto.ir_version > IR_VERSION:
        raise InputError(
            f"torch wrote ONNX opset {opsets} and IR version {proto.ir_version}, not opset {OPSET} and IR <= "
            f"{IR_VERSION}, which Deepness's onnxruntime 1.12 needs; this is a bug, report it"
        )
    want = {
        "image": ["batch", bands, tile_size, tile_size],
        "probabilities": ["batch", model.config.classes, tile_size, tile_size],
    }
    for value in (*proto.graph.input, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(dims, want[value.name], strict=True):
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = size
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    got = _check(str(path), wrapped, want)
    return want, got


def _check(path: str, wrapped: nn.Module, want: dict[str, list]) -> float:
    """Check the declared shapes and the largest |onnxruntime - torch| over two random tiles.

    Raises:
        InputError: a shape that is not the one declared, or a difference above :data:`TOLERANCE`
            (both bugs of the exporter).
    """
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    shapes = {v.name: list(v.shape) for v in (*session.get_inputs(), *session.get_outputs())}
    if shapes != want:
        raise InputError(f"the ONNX export declares the shapes {shapes}, not {want}: a bug, report it")
    _, bands, tile, _ = want["image"]
    image = torch.rand(2, bands, tile, tile, generator=torch.Generator().manual_seed(1)) * 255
    got = session.run(None, {"image": image.numpy()})[0]
    with torch.no_grad():
        expected = wrapped(image).numpy()
    diff = float(np.abs(got - expected).max())
    if got.shape != expected.shape or not diff <= TOLERANCE:
        raise InputError(
            f"the ONNX export differs from the torch model by {diff:.2e}; this is a bug, report it"
        )
    return diff
