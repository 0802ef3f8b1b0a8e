"""slidewise:predictsusceptibility — probability of landslide and a classed map."""

from __future__ import annotations

from slidewise.contract.specs.factors import CLASSES
from slidewise.contract.specs.factors import CLASSIFICATIONS as CLASSIFICATION_CHOICES
from slidewise.contract.specs.predictsusceptibility import SPEC
from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm
from slidewise.processing_provider.algorithms.factor_stack import FactorStackAlgorithm

#: Classification methods by dialog index (evaluatesusceptibility reads them too).
CLASSIFICATIONS = list(CLASSIFICATION_CHOICES)


def add_classification_parameters(alg: SlidewiseAlgorithm) -> None:
    """CLASSIFICATION / N_CLASSES (shared with evaluation), from the contract's CLASSES."""
    from slidewise.processing_provider.algorithms.spec_parameters import add_params

    add_params(alg, CLASSES)


class PredictSusceptibilityAlgorithm(FactorStackAlgorithm):
    """Each pixel predicted by its block's adapted model, window by window."""

    ALG_ID = "predictsusceptibility"
    DISPLAY_NAME = "Predict susceptibility"
    GROUP = "susceptibility"
    ICON = "susceptibility.svg"
    JOB = "predictsusceptibility"
    SPEC = SPEC
    SHORT_HELP = (
        "Applies a susceptibility model to a factor stack: every pixel is predicted by the "
        "model of its block (meta models) or by the global model, window by window with "
        "bounded memory. Writes the probability of landslide (0-1) and, optionally, a "
        "classed map (very low ... very high)."
    )

    def style_outputs(self, results, context) -> None:
        self.style_output(results.get("OUTPUT", ""), "susceptibility_probability.qml", context)
        self.style_output(results.get("CLASSED", ""), "susceptibility_classes.qml", context)
