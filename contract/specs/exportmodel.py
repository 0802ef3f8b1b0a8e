"""slidewise:exportmodel: a mapping model as an ONNX file (for Deepness, ONNX Runtime, OpenVINO)."""

from __future__ import annotations

from dataclasses import replace

from slidewise.contract.spec import AlgorithmSpec, Param
from slidewise.contract.specs.training import OVERLAP, TILE_SIZE

SPEC = AlgorithmSpec(
    "exportmodel",
    (
        Param(
            "MODEL",
            "Model file",
            "file",
            "A mapping model from Train mapping model or Add region to mapping model.",
            required=True,
            file_filter="Slidewise model (*.safetensors)",
        ),
        Param(
            "REGION",
            "Region",
            "text",
            "Multi-region models: the region whose decoder is exported. Empty: the only "
            "region of a one-region model.",
        ),
        replace(
            TILE_SIZE,
            help="Tile side written into the ONNX input shape and the Deepness metadata "
            "(rounded up to the model's alignment, 32 for a U-Net); empty: the tile "
            "maplandslides would use (the training tile, at least 576 for fully "
            "convolutional models).",
            advanced=False,
        ),
        replace(
            OVERLAP,
            help="Overlap of neighbouring tiles written into the Deepness metadata "
            "(tiles_overlap, as a percentage of the tile).",
        ),
        Param(
            "DYNAMIC_SIZE",
            "Dynamic height and width",
            "bool",
            "Leave the input's height and width free (any multiple of the model's alignment) "
            "for ONNX Runtime or OpenVINO scripts. Deepness needs a fixed square tile: leave "
            "this off for Deepness. The batch size is always free.",
            default=False,
            advanced=True,
        ),
        Param(
            "THRESHOLD",
            "Threshold",
            "float",
            "Probability at or above which Deepness marks a pixel as a landslide (seg_thresh); "
            "empty: the threshold stored in the model (tuned on validation), else 0.5.",
            minimum=0.0,
            maximum=1.0,
        ),
        Param(
            "SMALL_SEGMENT",
            "Small segment removal",
            "int",
            "Deepness's removal of small segments (seg_small_segment): the size of the "
            "dilate/erode kernel; 0 keeps every segment.",
            default=0,
            minimum=0,
            maximum=255,
            unit="px",
            advanced=True,
        ),
        Param(
            "OPSET",
            "ONNX opset",
            "int",
            "ONNX operator set version of the exported graph.",
            default=17,
            minimum=17,
            maximum=20,
            advanced=True,
        ),
        Param(
            "OUTPUT",
            "ONNX model",
            "output_file",
            "The .onnx file: one input (batch, bands, height, width) of band values "
            "standardised as the metadata says, one output (batch, 1, height, width) of "
            "landslide probability; Deepness and Slidewise metadata inside.",
            required=True,
            file_filter="ONNX model (*.onnx)",
        ),
    ),
)
