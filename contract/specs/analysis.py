"""Parameter group of factor analysis: multicollinearity thresholds.

Shared by samplefactors and trainsusceptibility (engine:
:mod:`slidewise.engine.geo.collinearity`).
"""

from __future__ import annotations

from slidewise.contract.spec import Param

#: VIF_THRESHOLD / CORRELATION_THRESHOLD: when the multicollinearity screening warns.
COLLINEARITY: tuple[Param, ...] = (
    Param(
        "VIF_THRESHOLD",
        "Variance inflation factor warning",
        "float",
        "Warn about factors whose variance inflation factor (1 / (1 - R²) of the factor "
        "regressed on all the others over the samples) is above this; 10 is the usual "
        "threshold, 5 a strict one. The VIF of every factor is in the log and the manifest.",
        default=10.0,
        minimum=1.0,
        maximum=1e6,
        advanced=True,
    ),
    Param(
        "CORRELATION_THRESHOLD",
        "Correlation warning",
        "float",
        "Warn about pairs of factors whose Pearson correlation over the samples is above "
        "this in absolute value (0.8 is usual; 0.7 is strict).",
        default=0.8,
        minimum=0.0,
        maximum=1.0,
        advanced=True,
    ),
)

#: IMPORTANCE_SAMPLES / OUTPUT_FACTORS: factor importance of a trained model, and the report.
IMPORTANCE: tuple[Param, ...] = (
    Param(
        "IMPORTANCE_SAMPLES",
        "Samples explained for factor importance",
        "int",
        "Training samples (a random subset) whose SHAP values give the factor importance, "
        "globally and per block; 0 = no factor importance. More samples: steadier figures, "
        "longer training (seconds per hundred samples).",
        default=200,
        minimum=0,
        maximum=100_000,
        advanced=True,
    ),
    Param(
        "OUTPUT_FACTORS",
        "Factor analysis report",
        "output_file",
        "HTML report of the factor importance (SHAP, table and plots, global and per block) "
        "and the multicollinearity screening (VIF, correlation matrix), with its figures as "
        "JSON next to it; empty: written next to the model as <model>_factors.html.",
        create_by_default=False,
        file_filter="HTML (*.html)",
    ),
)
