"""Slidewise Processing algorithms, one module each."""

from slidewise.processing_provider.algorithms.check_engine import CheckEngineAlgorithm
from slidewise.processing_provider.algorithms.terrain_factors import TerrainFactorsAlgorithm

ALGORITHMS = [
    CheckEngineAlgorithm,
    TerrainFactorsAlgorithm,
]
