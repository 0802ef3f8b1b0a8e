"""slidewise:exportmodel — a mapping model as an ONNX file for Deepness and ONNX runtimes."""

from __future__ import annotations

from slidewise.contract.specs.exportmodel import SPEC
from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm


class ExportModelAlgorithm(SlidewiseAlgorithm):
    """ONNX export with the metadata Deepness reads, checked against PyTorch."""

    ALG_ID = "exportmodel"
    DISPLAY_NAME = "Export mapping model to ONNX"
    GROUP = "mapping"
    ICON = "mapping.svg"
    JOB = "exportmodel"
    SPEC = SPEC
    SHORT_HELP = (
        "Writes a mapping model (or one region's decoder of a multi-region model) as an ONNX "
        "file that the Deepness plugin, ONNX Runtime and OpenVINO load. The graph takes the "
        "standardised bands and returns the landslide probability; the file carries Deepness's "
        "settings (model type, class names, resolution, tile size, overlap, standardisation "
        "mean and std, threshold) and Slidewise's model card. In Deepness: choose the file, "
        "press 'Load default parameters', map the input bands in the model's order and run. "
        "Before the file is kept, ONNX Runtime's probabilities on a test tile are compared with "
        "PyTorch's."
    )
