"""Inference runtime parameters shared by the algorithms that run a mapping model."""

from __future__ import annotations

from slidewise.contract.spec import Param

#: The runtimes a mapping model can run on (``auto``: the fastest here, measured once).
BACKENDS = ("auto", "torch", "onnxruntime", "openvino", "openvino_bf16")

#: Which runtime computes the model's forward passes (maplandslides, detectlandslides).
BACKEND = Param(
    "BACKEND",
    "Inference backend",
    "choice",
    "Runtime that computes the model on each tile: PyTorch, ONNX Runtime (the model is "
    "converted to ONNX once and cached), or OpenVINO (when installed). Automatic measures "
    "the available ones on this computer once per model (cached) and uses the fastest; on a "
    "GPU it is PyTorch. The tiling, the outputs and the memory bound are the same with every "
    "backend; the manifest records the one used. OpenVINO bfloat16 computes in reduced "
    "precision on CPUs with AMX or AVX512-BF16 (several times faster there; probabilities "
    "change slightly: landslide F1 changed by less than 0.001 on the Bijie and Sichuan test "
    "images); automatic never picks it.",
    default="auto",
    choices=BACKENDS,
    choice_labels=(
        "Automatic (fastest here)",
        "PyTorch",
        "ONNX Runtime",
        "OpenVINO",
        "OpenVINO bfloat16 (reduced precision)",
    ),
    advanced=True,
)
