"""slidewise:predictsusceptibility — probability of landslide and a classed map."""

from __future__ import annotations

from slidewise.contract.specs.predictsusceptibility import SPEC
from slidewise.processing_provider.algorithms.factor_stack import FactorStackAlgorithm


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
