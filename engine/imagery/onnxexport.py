"""Mapping models as ONNX graphs, with the metadata the QGIS plugin Deepness reads.

:func:`export_onnx` traces a mapping model (any smp architecture, the
residual U-Net, or one region's decoder of a multi-region model seen through
:class:`~slidewise.engine.imagery.regions.RegionView`) with
``torch.onnx.export``: one input ``input`` (batch, bands, height, width) of
*standardised* band values, one output: the landslide logits (the inference
backends, :mod:`slidewise.engine.imagery.backends`) or the landslide
probability (the files :func:`write_deepness_onnx` writes). The batch is
always dynamic; height and width are dynamic or one fixed square tile.

Deepness (PUTvision/qgis-plugin-deepness) reads ``metadata_props`` whose
values are JSON-encoded strings: ``model_type`` (``"Segmentation"``),
``class_names`` (``{"0": ..., "1": ...}``), ``resolution`` (cm/px),
``tile_size`` (px), ``tiles_overlap`` (percent of the tile), ``seg_thresh``,
``seg_small_segment`` and ``standardization_mean`` / ``standardization_std``.
It scales each pixel value by 1/255 and then standardises with those lists,
so Slidewise's per-band normalisation ``(x - mean) / std`` of raw band values
is written as ``mean / 255`` and ``std / 255``: Deepness then feeds the graph
exactly what Slidewise feeds the model, for 8-bit and for any other band
values, and the graph itself holds no normalisation. A one-channel
probability output is read by Deepness as a two-class (background /
landslide) map. Slidewise's own model card travels under ``slidewise``.
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

from slidewise.engine.core.modelfile import ModelMetadata
from slidewise.engine.imagery.segmodels import main_logits, normalise

INPUT_NAME = "input"
"""Name of the graph input."""
DEFAULT_OPSET = 17
"""ONNX operator set of exported graphs."""
DEEPNESS_PIXEL_SCALE = 255.0
"""Deepness divides every pixel value by this before standardising."""
TRACE_SIDE = 64
"""Side of the sample input a dynamic-size graph is traced with (small: export is fast)."""


class ExportHead(nn.Module):
    """A mapping model with one 4-D output: logits, or probabilities after a sigmoid."""

    def __init__(self, model: nn.Module, probability: bool) -> None:
        super().__init__()
        self.model = model
        self.probability = probability

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits or probabilities (B, 1, H, W) of standardised bands (B, C, H, W)."""
        out = main_logits(self.model(x))
        if out.ndim == 3:
            out = out[:, None]
        return torch.sigmoid(out) if self.probability else out


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    in_channels: int,
    *,
    size: int | None = None,
    probability: bool = False,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Trace ``model`` into an ONNX file (CPU, eval mode; ``model`` itself is not moved).

    Args:
        model: A mapping model returning one logit per pixel.
        path: The ``.onnx`` file to write.
        in_channels: Number of input bands.
        size: Fixed square input side; ``None``: dynamic height and width.
        probability: End the graph with a sigmoid (output ``probability``);
            else the output is ``logits``.
        opset: ONNX operator set version (17 or later).

    Returns:
        The path written.
    """
    import copy

    head = ExportHead(copy.deepcopy(model).cpu().eval(), probability).eval()
    side = int(size or TRACE_SIDE)
    sample = torch.zeros(1, int(in_channels), side, side)
    output = "probability" if probability else "logits"
    axes: dict[int, str] = {0: "batch"} if size else {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and legacy-exporter notices
        torch.onnx.export(
            head,
            (sample,),
            os.fspath(path),
            input_names=[INPUT_NAME],
            output_names=[output],
            dynamic_axes={INPUT_NAME: axes, output: axes},
            opset_version=int(opset),
            do_constant_folding=True,
            dynamo=False,
        )
    _name_output_dims(path, size)
    return Path(path)


def _name_output_dims(path: str | os.PathLike[str], size: int | None) -> None:
    """Declare the output (batch, 1, height, width) like the input.

    The tracer names upsampled sides ``<output>_dim_2`` / ``_dim_3``; Deepness
    refuses an output whose two sides differ, so a fixed-tile graph states
    them as numbers and a dynamic one as the input's ``height`` / ``width``.
    """
    import onnx

    graph = onnx.load(os.fspath(path))
    dims = graph.graph.output[0].type.tensor_type.shape.dim
    for axis, name in ((2, "height"), (3, "width")):
        if size:
            dims[axis].dim_value = int(size)
        else:
            dims[axis].dim_param = name
    onnx.save(graph, os.fspath(path))


def deepness_metadata(
    meta: ModelMetadata,
    normalisation: dict[str, Any],
    *,
    tile: int,
    overlap: int,
    threshold: float,
    small_segment: int = 0,
) -> dict[str, str]:
    """The Deepness keys of a mapping model, each value JSON-encoded.

    Args:
        meta: The model file's metadata (pixel size, class names, bands).
        normalisation: Per-band ``mean`` and ``std`` of raw band values (may be empty).
        tile: Tile side in pixels.
        overlap: Overlap of neighbouring tiles in pixels (written as a percentage).
        threshold: Landslide probability threshold.
        small_segment: Deepness's small-segment removal kernel (0: off).
    """
    bands = int((meta.config or {}).get("in_channels", len(meta.bands)) or len(meta.bands))
    mean = list(normalisation.get("mean") or [0.0] * bands)
    std = list(normalisation.get("std") or [1.0] * bands)
    names = list(meta.class_names or ["background", "landslide"])
    props: dict[str, Any] = {
        "model_type": "Segmentation",
        "class_names": {str(k): str(v) for k, v in enumerate(names)},
        "tile_size": int(tile),
        "tiles_overlap": round(100.0 * overlap / max(1, tile)),
        "seg_thresh": float(threshold),
        "seg_small_segment": int(small_segment),
        "standardization_mean": [float(m) / DEEPNESS_PIXEL_SCALE for m in mean],
        "standardization_std": [max(float(s), 1e-12) / DEEPNESS_PIXEL_SCALE for s in std],
    }
    resolution = _resolution_cm(meta)
    if resolution is not None:
        props["resolution"] = resolution
    return {key: json.dumps(value) for key, value in props.items()}


def _resolution_cm(meta: ModelMetadata) -> float | None:
    """Training pixel size in cm/px (Deepness's unit), when stored and plausibly in metres."""
    size = meta.pixel_size
    if not size:
        return None
    value = abs(float(size[0]))
    if not 0.0 < value < 10_000.0:  # degrees would be < 1 too; metres is the engine's norm
        return None
    return round(value * 100.0, 4)


def add_metadata(path: str | os.PathLike[str], props: dict[str, str]) -> None:
    """Add (or replace) ``metadata_props`` of the ONNX file at ``path``, in place."""
    import onnx

    graph = onnx.load(os.fspath(path))
    kept = [p for p in graph.metadata_props if p.key not in props]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    for key, value in props.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    graph.producer_name = "slidewise"
    onnx.save(graph, os.fspath(path))


def read_metadata_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as ONNX Runtime reports them (Deepness's way)."""
    import onnxruntime as ort

    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def compare_with_torch(
    model: nn.Module,
    onnx_path: str | os.PathLike[str],
    batch: np.ndarray,
    normalisation: dict[str, Any],
    *,
    probability: bool = True,
) -> float:
    """Largest absolute difference between ONNX Runtime and PyTorch on raw tiles ``batch``.

    ``batch`` (B, bands, H, W) holds raw band values; both sides get them
    standardised with ``normalisation`` (the way Slidewise and Deepness do).
    """
    import onnxruntime as ort

    x = torch.nan_to_num(normalise(torch.from_numpy(np.asarray(batch, np.float32)), normalisation))
    head = ExportHead(model, probability).cpu().eval()
    with torch.inference_mode():
        expected = head(x).numpy()
    session = ort.InferenceSession(os.fspath(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: x.numpy()})[0]
    return float(np.max(np.abs(got - expected)))
