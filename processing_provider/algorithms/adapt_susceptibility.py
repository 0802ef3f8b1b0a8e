"""slidewise:adaptsusceptibility — few-shot adaptation of a block-wise model to new blocks."""

from __future__ import annotations

from slidewise.contract.specs.adaptsusceptibility import SPEC
from slidewise.processing_provider.algorithms.factor_stack import FactorStackAlgorithm


class AdaptSusceptibilityAlgorithm(FactorStackAlgorithm):
    """The meta-learned initialisation adapted to each block with a few new samples."""

    ALG_ID = "adaptsusceptibility"
    DISPLAY_NAME = "Adapt susceptibility model to new blocks"
    GROUP = "susceptibility"
    ICON = "susceptibility.svg"
    JOB = "adaptsusceptibility"
    SPEC = SPEC
    SHORT_HELP = (
        "Adapts a block-wise model (Train susceptibility model, method hybrid, meta, or "
        "auto when it chose one of them) to the blocks of an area with a few new samples "
        "per block, in seconds and without meta-training again: new blocks of the same "
        "area, or a new area with the same factors. Blocks come from a block raster or are "
        "segmented here. Part of each block's samples (the held-out share) is not adapted "
        "on: the log and the results give the AUC and Brier score of the model before and "
        "after adaptation on those samples, for all blocks together and block by block. "
        "The adapted model file is used by Predict susceptibility as it is. A hybrid model "
        "keeps its global part and its mix as trained (when the mix gives the adapted MLP "
        "weight 0, adapting changes nothing and the log says so). "
        "A global model (rf, lr, gbm, svm, mlp) has nothing block-wise to adapt: train it "
        "again with the new samples."
    )
