"""The factor analysis of a training run: multicollinearity, importance, report.

:func:`screen_training_factors` (before training) screens the factors for
multicollinearity; :func:`analyse_trained_factors` (after training) computes the
model's factor importance and writes the factor-analysis report. Each is the
one call ``trainsusceptibility`` makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.engine.core.job import JobContext
from slidewise.engine.geo.collinearity import CollinearityParams, report_collinearity
from slidewise.engine.geo.samples import FeatureEncoder
from slidewise.engine.susceptibility.crossval import LabelledSamples
from slidewise.engine.susceptibility.models import FittedModel


@dataclass(frozen=True)
class FactorAnalysisParams(CollinearityParams):
    """The factor-analysis parameters of trainsusceptibility (``contract/specs/analysis.py``).

    Attributes:
        importance_samples: IMPORTANCE_SAMPLES explained by SHAP (0: no importance).
        output_factors: OUTPUT_FACTORS report (default ``<model>_factors.html``).
    """

    importance_samples: int = 200
    output_factors: str | None = None

    def factors_report_path(self, model: str) -> str:
        """OUTPUT_FACTORS, or ``<model>_factors.html`` next to the model."""
        return self.output_factors or str(Path(model).with_name(Path(model).stem + "_factors.html"))


def screen_training_factors(
    options: FactorAnalysisParams, data: LabelledSamples, ctx: JobContext
) -> dict[str, Any]:
    """VIF and correlation of the training samples' factors; warnings in the log."""
    return report_collinearity(
        data.values,
        data.bands,
        data.categorical,
        options.collinearity_thresholds(),
        ctx.log,
        ctx.warn,
    )


def analyse_trained_factors(
    options: FactorAnalysisParams,
    model: str,
    data: LabelledSamples,
    fitted: FittedModel,
    encoder: FeatureEncoder,
    figures: dict[str, Any],
    ctx: JobContext,
) -> str:
    """Add the factor importance to ``figures`` and write the factor-analysis report.

    Args:
        options: The job's parameters.
        model: The model file written (the report goes next to it by default).
        data: The training samples (values, labels, blocks).
        fitted: The trained model.
        encoder: Its feature encoder.
        figures: The run's figures; ``collinearity`` is read, ``importance`` added.
        ctx: The job context (log, seed).

    Returns:
        The report's path.
    """
    from slidewise.engine.susceptibility.factor_report import write_factor_report
    from slidewise.engine.susceptibility.importance import factor_importance

    if options.importance_samples > 0:
        importance = factor_importance(
            fitted,
            encoder.transform(data.values),
            np.asarray(data.blocks),
            encoder.bands,
            encoder.groups,
            max_samples=options.importance_samples,
            seed=ctx.options.seed,
        ).to_dict()
        figures["importance"] = importance
        shares = ", ".join(f"{f} {importance['share'][f]:.0%}" for f in importance["ranking"])
        ctx.log(f"Factor importance ({importance['method']}): {shares}.")
    path = options.factors_report_path(model)
    write_factor_report(path, f"Factor analysis of {Path(model).name}", figures)
    ctx.log(f"Factor analysis report: {path}.")
    return path
