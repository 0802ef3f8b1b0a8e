"""slidewise:predictsusceptibility — probability of landslide and a classed map."""

from __future__ import annotations

from slidewise.contract.specs.predictsusceptibility import SPEC
from slidewise.processing_provider.algorithms.factor_stack import FactorStackAlgorithm


class PredictSusceptibilityAlgorithm(FactorStackAlgorithm):
    """Each pixel predicted by its block's adapted model (blended near block borders)."""

    ALG_ID = "predictsusceptibility"
    DISPLAY_NAME = "Predict susceptibility"
    GROUP = "susceptibility"
    ICON = "susceptibility.svg"
    JOB = "predictsusceptibility"
    SPEC = SPEC
    SHORT_HELP = (
        "Applies a susceptibility model to a factor stack: every pixel is predicted by the "
        "model of its block (meta models; near block borders the models of the adjacent "
        "blocks are blended over BLEND_WIDTH pixels, so the map has no seams) or by the "
        "global model, window by window with bounded memory. Writes the calibrated "
        "probability of landslide (0-1), its uncertainty (spread of the model's bootstrap "
        "ensemble) and, optionally, a classed map (very low ... very high)."
    )

    def style_outputs(self, results, context) -> None:
        self.style_output(results.get("OUTPUT", ""), "susceptibility_probability.qml", context)
        self.style_output(results.get("CLASSED", ""), "susceptibility_classes.qml", context)
        self.style_output(results.get("UNCERTAINTY", ""), "susceptibility_uncertainty.qml", context)
