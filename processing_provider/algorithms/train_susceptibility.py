"""slidewise:trainsusceptibility — block-wise few-shot (or global) susceptibility model."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback

from slidewise.contract.specs.factors import FACTOR_STACK, INVENTORY, LABEL_FIELD
from slidewise.contract.specs.trainsusceptibility import SPEC
from slidewise.processing_provider.algorithms.base import tr
from slidewise.processing_provider.algorithms.factor_stack import FactorStackAlgorithm

#: What a sample table replaces: the stack and the inventory (its label field stays).
STACK_AND_INVENTORY = frozenset(p.name for p in (*FACTOR_STACK, *INVENTORY)) - {LABEL_FIELD.name}


class TrainSusceptibilityAlgorithm(FactorStackAlgorithm):
    """Automatic choice, block-wise adaptation (meta, hybrid) or a global model."""

    ALG_ID = "trainsusceptibility"
    DISPLAY_NAME = "Train susceptibility model"
    GROUP = "susceptibility"
    ICON = "susceptibility.svg"
    JOB = "trainsusceptibility"
    SPEC = SPEC
    SHORT_HELP = (
        "Trains a landslide susceptibility model. Needed: a factor stack (or single factor "
        "rasters instead) and a landslide inventory, or else a sample table, which replaces "
        "both; every other input is optional. Automatic (the default) compares the methods "
        "by leave-blocks-out cross-validation on the training data and keeps the best; the "
        "log, the run manifest and the model file hold the comparison (method, AUC mean, "
        "standard deviation), and the log warns when a global model beats block-wise "
        "adaptation. Block-wise meta-learning (MAML over terrain blocks) learns an "
        "initialisation that adapts to each block from a few samples; each block's adapted "
        "weights are stored, and blocks with too few samples keep the meta-learned "
        "initialisation (the log says which). The block-wise hybrid averages it with "
        "gradient boosting and corrects each block's level from its samples. Random forest, "
        "logistic regression, the neural network (MLP), the support vector machine and "
        "gradient boosting train one global scikit-learn model; frequency ratio is the "
        "classic statistical method. The log and the model file report leave-blocks-out "
        "(spatial) and random cross-validation AUC, so the optimism of random splits is "
        "visible."
    )

    def needs_factors(self, params: dict[str, Any]) -> bool:
        """A sample table replaces the factor stack."""
        return not params.get("TABLE")

    def job_parameters(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> tuple[dict[str, Any], list[str]]:
        """With TABLE the stack and inventory are left out; without it INVENTORY is needed."""
        params, outputs = super().job_parameters(parameters, context, feedback)
        if params.get("TABLE"):
            params = {k: v for k, v in params.items() if k not in STACK_AND_INVENTORY}
        elif not params.get("INVENTORY"):
            raise QgsProcessingException(
                tr(
                    "No samples were given: choose a landslide inventory (INVENTORY) with "
                    "the factor stack, or a sample table (TABLE)."
                )
            )
        return params, outputs
