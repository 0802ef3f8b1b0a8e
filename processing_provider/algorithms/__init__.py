"""Slidewise Processing algorithms, one module each."""

from slidewise.processing_provider.algorithms.adapt_susceptibility import (
    AdaptSusceptibilityAlgorithm,
)
from slidewise.processing_provider.algorithms.add_region import AddRegionAlgorithm
from slidewise.processing_provider.algorithms.check_engine import CheckEngineAlgorithm
from slidewise.processing_provider.algorithms.detect_landslides import DetectLandslidesAlgorithm
from slidewise.processing_provider.algorithms.evaluate_mapping import EvaluateMappingAlgorithm
from slidewise.processing_provider.algorithms.evaluate_susceptibility import (
    EvaluateSusceptibilityAlgorithm,
)
from slidewise.processing_provider.algorithms.export_layout import ExportLayoutAlgorithm
from slidewise.processing_provider.algorithms.export_model import ExportModelAlgorithm
from slidewise.processing_provider.algorithms.map_landslides import MapLandslidesAlgorithm
from slidewise.processing_provider.algorithms.map_scenes import MapScenesAlgorithm
from slidewise.processing_provider.algorithms.predict_susceptibility import (
    PredictSusceptibilityAlgorithm,
)
from slidewise.processing_provider.algorithms.pretrain_encoder import PretrainEncoderAlgorithm
from slidewise.processing_provider.algorithms.sample_factors import SampleFactorsAlgorithm
from slidewise.processing_provider.algorithms.segment_blocks import SegmentBlocksAlgorithm
from slidewise.processing_provider.algorithms.setup_engine import SetupEngineAlgorithm
from slidewise.processing_provider.algorithms.terrain_factors import TerrainFactorsAlgorithm
from slidewise.processing_provider.algorithms.train_detection import TrainDetectionAlgorithm
from slidewise.processing_provider.algorithms.train_mapping import TrainMappingAlgorithm
from slidewise.processing_provider.algorithms.train_susceptibility import (
    TrainSusceptibilityAlgorithm,
)

ALGORITHMS = [
    TerrainFactorsAlgorithm,
    SampleFactorsAlgorithm,
    SegmentBlocksAlgorithm,
    TrainSusceptibilityAlgorithm,
    PredictSusceptibilityAlgorithm,
    AdaptSusceptibilityAlgorithm,
    EvaluateSusceptibilityAlgorithm,
    TrainMappingAlgorithm,
    MapLandslidesAlgorithm,
    MapScenesAlgorithm,
    EvaluateMappingAlgorithm,
    ExportLayoutAlgorithm,
    AddRegionAlgorithm,
    ExportModelAlgorithm,
    PretrainEncoderAlgorithm,
    TrainDetectionAlgorithm,
    DetectLandslidesAlgorithm,
    CheckEngineAlgorithm,
    SetupEngineAlgorithm,
]
