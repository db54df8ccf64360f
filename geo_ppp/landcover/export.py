"""Export a saved segmenter to ONNX, with the metadata the QGIS Deepness plugin reads.

The graph takes imagery as Deepness feeds it, (N, C, H, W) float32, and returns class probabilities
(N, K, H, W). Deepness divides 0-255 pixels by 255 and then standardises them with the model's
``standardization_mean`` / ``standardization_std``; we write mean 0 and std 1/255 for every band,
which gives the graph the pixels back in 0-255, and the graph computes the segmenter's own features
(NDVI included) and their standardisation itself. Other metadata: ``model_type`` ``Segmentor``,
``class_names`` (the legend's, by output channel), ``resolution`` (cm per pixel), ``tile_size`` and
``tiles_overlap`` (percent), ``seg_thresh``, and ``geo_ppp`` (legend codes and colours, bands,
features, the training command).

The exported file is checked with onnxruntime against the torch model before it is put in place.
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
from geo_ppp.errors import InputError
from geo_ppp.landcover.segmenter import Segmenter, load_segmenter
from geo_ppp.outputs import OutputExistsError

__all__ = ["deepness_metadata", "export_onnx"]

#: largest difference allowed between onnxruntime's and torch's probabilities
TOLERANCE = 1e-4


class _Probabilities(nn.Module):
    """Imagery in 0-255 -> class probabilities: the segmenter with its features and softmax."""

    def __init__(self, model: Segmenter) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.softmax(self.model(self.model.features(image)), 1)


def deepness_metadata(model: Segmenter, meta: dict[str, Any], tile_size: int, overlap: int) -> dict[str, Any]:
    """The ONNX metadata (values before JSON encoding) for a segmenter and its saved ``meta``."""
    bands = len(meta.get("bands") or []) or (4 if model.config.in_channels >= 5 else 3)
    names = meta.get("class_names") or [str(c) for c in meta.get("codes", range(model.config.classes))]
    return {
        "model_type": "Segmentor",
        "class_names": {str(i): name for i, name in enumerate(names)},
        "resolution": round(100.0 * float(meta.get("resolution_m", 1.0)), 3),
        "tile_size": tile_size,
        "tiles_size": tile_size,
        "tiles_overlap": round(100 * overlap / tile_size),
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
            "command": meta.get("command"),
        },
    }


def export_onnx(
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    tile_size: int = 256,
    overlap: int = 32,
) -> dict[str, Any]:
    """Export the segmenter saved in ``folder`` to ``out`` (ONNX) and check it with onnxruntime.

    Returns:
        A report: the output path, the metadata, and the largest difference from torch.

    Raises:
        InputError: not a segmenter, or a tile size the network cannot take.
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
    """
    import onnx

    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out} is a folder; give the ONNX file's name, e.g. {out / 'segmenter.onnx'}")
    if out.exists() and not overwrite:
        raise OutputExistsError(
            f"{out} already exists; pass --overwrite to replace it, or choose another name"
        )
    if out.suffix.lower() != ".onnx":
        raise InputError(
            f"{out}: an ONNX model's name must end in .onnx (e.g. {out.with_suffix('.onnx').name})"
        )
    if not out.parent.is_dir():
        raise InputError(f"the folder of {out} does not exist; create it first")
    model, meta = load_segmenter(folder)
    if tile_size < 1 or tile_size % model.config.pool:
        raise InputError(f"--tile-size {tile_size} must be a positive multiple of {model.config.pool}")
    if not 0 <= overlap < tile_size:
        raise InputError(f"--overlap {overlap} must be >= 0 and smaller than the tile size {tile_size}")
    wrapped = _Probabilities(model).eval()
    bands = 4 if model.config.in_channels >= 5 else 3
    example = torch.rand(1, bands, tile_size, tile_size, generator=torch.Generator().manual_seed(0)) * 255
    metadata = deepness_metadata(model, meta, tile_size, overlap)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        # the tracer notes that the band count and the padding are fixed by the example: they are
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapped, (example,), str(tmp), input_names=["image"], output_names=["probabilities"],
            dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}}, dynamo=False,
        )  # fmt: skip
        proto = onnx.load(str(tmp))
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, json.dumps(value)
        onnx.save(proto, str(tmp))
        diff = _check(str(tmp), wrapped, bands, tile_size)
    return {"out": str(out), "metadata": metadata, "max_abs_difference": diff}


def _check(path: str, wrapped: nn.Module, bands: int, tile_size: int) -> float:
    """Largest |onnxruntime - torch| over two real-looking tiles; raises if above :data:`TOLERANCE`."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(2, bands, tile_size, tile_size, generator=gen) * 255
    got = session.run(None, {"image": image.numpy()})[0]
    with torch.no_grad():
        want = wrapped(image).numpy()
    diff = float(np.abs(got - want).max())
    if not diff <= TOLERANCE:
        raise InputError(
            f"the ONNX export differs from the torch model by {diff:.2e}; this is a bug, report it"
        )
    return diff
