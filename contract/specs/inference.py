"""Inference runtime parameters shared by the algorithms that run a mapping model."""

from __future__ import annotations

from slidewise.contract.spec import Param

#: The runtimes a mapping model can run on (``auto``: the fastest here, measured once).
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")

#: Which runtime computes the model's forward passes (maplandslides, detectlandslides).
BACKEND = Param(
    "BACKEND",
    "Inference backend",
    "choice",
    "Runtime that computes the model on each tile: PyTorch, ONNX Runtime (the model is "
    "converted to ONNX once and cached), or OpenVINO (when installed). Automatic measures "
    "the available ones on this computer once per model (cached) and uses the fastest; on a "
    "GPU it is PyTorch. The tiling, the outputs and the memory bound are the same with every "
    "backend; the manifest records the one used.",
    default="auto",
    choices=BACKENDS,
    choice_labels=("Automatic (fastest here)", "PyTorch", "ONNX Runtime", "OpenVINO"),
    advanced=True,
)
