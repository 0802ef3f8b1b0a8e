"""slidewise:trainsusceptibility: block-wise few-shot (or global) susceptibility model."""

from __future__ import annotations

from slidewise.contract.spec import AlgorithmSpec, Param, params, replace_param
from slidewise.contract.specs.analysis import COLLINEARITY, IMPORTANCE
from slidewise.contract.specs.factors import (
    BLOCKS,
    BLOCKS_OUTPUT,
    FACTOR_STACK,
    INVENTORY,
    SAMPLING_HIDDEN,
    SAMPLING_HIDDEN_NAMES,
)
from slidewise.contract.specs.groups import COG

#: Susceptibility methods (engine: ``susceptibility.models.METHODS``). New words go at the
#: end: scripts may pass the index of a choice.
METHODS = ("meta", "rf", "lr", "mlp", "fr", "svm", "gbm", "hybrid", "auto")
#: What the dialog shows for :data:`METHODS` (the job still receives the words).
METHOD_LABELS = (
    "Block-wise meta-learning (MAML)",
    "Random forest",
    "Logistic regression",
    "Neural network (MLP)",
    "Frequency ratio",
    "Support vector machine (RBF)",
    "Gradient boosting",
    "Block-wise hybrid: meta-learning + a global model, corrected per block",
    "Automatic: the best by leave-blocks-out cross-validation",
)
#: Methods that adapt to each block (the others fit one model for the whole area).
BLOCKWISE_METHODS = ("meta", "hybrid")
#: What blocks whose samples are all one class do.
ONE_CLASS_CHOICES = ("fallback", "adapt")


def _count(name: str, label: str, help_text: str, default: int, lo: int, hi: int) -> Param:
    return Param(
        name, label, "int", help_text, default=default, minimum=lo, maximum=hi, advanced=True
    )


#: The inventory: needed with a factor stack, replaced by a sample table.
TRAINING_INVENTORY = replace_param(
    INVENTORY,
    "INVENTORY",
    label="Landslide inventory (or a sample table below)",
    help="Landslide points or polygons (a CSV loaded as a point layer works too), needed "
    "with a factor stack; a sample table replaces both. Layers in another CRS are "
    "reprojected.",
)

SOURCES: tuple[Param, ...] = (
    Param(
        "TABLE",
        "Sample table (instead of stack and inventory)",
        "file",
        "Instead of a factor stack and a landslide inventory: a CSV or XLSX table with "
        "factor columns, X, Y and label (meta_LSM and Hong Kong layouts); blocks are then "
        "spatial clusters of X, Y.",
        file_filter="Tables (*.csv *.xlsx)",
    ),
    Param(
        "BLOCKS",
        "Blocks",
        "raster",
        "Block-ID raster from Segment terrain blocks; empty: the stack is segmented with "
        "the block parameters below.",
    ),
    Param(
        "METHOD",
        "Method",
        "choice",
        "How the model learns. Automatic ('auto', the default) compares the methods by "
        "leave-blocks-out cross-validation on the training data (CV_FOLDS folds, SHOTS "
        "samples per held-out block) and keeps the best; the comparison goes into the model "
        "and the log. Block-wise meta-learning (MAML, 'meta') learns a start that adapts to "
        "each terrain block from a few samples; the block-wise hybrid ('hybrid') mixes it "
        "with a global model (gradient boosting, random forest or logistic regression, and "
        "the weight, chosen on the training blocks) and corrects each block's level from its "
        "samples; random "
        "forest ('rf'), logistic regression ('lr'), a small neural network ('mlp'), a "
        "support vector machine ('svm') and gradient boosting ('gbm') fit one model for the "
        "whole area; frequency ratio ('fr') is the classic statistical method.",
        default="auto",
        choices=METHODS,
        choice_labels=METHOD_LABELS,
    ),
)

META: tuple[Param, ...] = (
    _count(
        "ITERATIONS_META",
        "Meta-iterations",
        "Outer MAML iterations (meta-batches).",
        2000,
        1,
        100_000,
    ),
    _count(
        "INNER_STEPS",
        "Adaptation steps",
        "Gradient steps of the per-block adaptation, the same in meta-training and when "
        "adapting to each block.",
        10,
        1,
        100,
    ),
    Param(
        "INNER_LR",
        "Adaptation learning rate",
        "float",
        "Learning rate of the adaptation steps (the same in meta-training and adaptation).",
        default=0.1,
        minimum=0.0,
        maximum=100.0,
        advanced=True,
    ),
    Param(
        "LEARN_INNER_LR",
        "Learn the adaptation learning rates",
        "bool",
        "Meta-learn one adaptation learning rate per weight (the Hong Kong variant).",
        default=False,
        advanced=True,
    ),
    Param(
        "META_LR",
        "Meta learning rate",
        "float",
        "Learning rate of the outer Adam optimiser.",
        default=0.001,
        minimum=0.0,
        maximum=10.0,
        advanced=True,
    ),
    _count(
        "TASKS_PER_BATCH", "Blocks per meta-batch", "Tasks (blocks) per meta-batch.", 16, 1, 10_000
    ),
    _count(
        "SUPPORT",
        "Support samples per block",
        "Samples a block adapts on in meta-training.",
        6,
        1,
        10_000,
    ),
    _count(
        "QUERY",
        "Query samples per block",
        "Samples a block is scored on in meta-training, at most. Blocks with at least support "
        "+ 6 samples are tasks (support + query if query is below 6); a task block with fewer "
        "than support + query samples is scored on every sample beyond its support.",
        32,
        1,
        10_000,
    ),
    _count(
        "PRETRAIN_EPOCHS",
        "Autoencoder pretraining epochs",
        "Denoising-autoencoder pretraining on unlabelled pixels before meta-training (0 = none).",
        0,
        0,
        10_000,
    ),
    _count(
        "MIN_BLOCK_SAMPLES",
        "Minimum samples to adapt a block",
        "Blocks with fewer samples keep the meta-learned initialisation.",
        3,
        1,
        100_000,
    ),
    _count(
        "SHOTS",
        "Shots in spatial cross-validation",
        "Support samples per held-out block in the leave-blocks-out cross-validation.",
        5,
        1,
        10_000,
    ),
    _count(
        "CV_FOLDS",
        "Cross-validation folds",
        "Folds of the leave-blocks-out and random cross-validation (0 = none; the "
        "automatic method compares the methods only with 2 or more, else it trains the "
        "block-wise hybrid and warns).",
        5,
        0,
        100,
    ),
    _count("N_ESTIMATORS", "Random forest trees", "Trees of the rf method.", 200, 1, 100_000),
)

#: How the probability is calibrated (engine: ``susceptibility.calibration``).
CALIBRATIONS = ("platt", "isotonic", "none")
CALIBRATION = Param(
    "CALIBRATION",
    "Probability calibration",
    "choice",
    "Calibrate the probability on out-of-block predictions of the training samples: Platt "
    "scaling (default: a logistic curve of the logit, keeps the map's ranking), "
    "isotonic regression (a step function, needs more samples) or none (the raw, "
    "over-confident probability). Writes a reliability report <model>_calibration.html "
    "next to the model.",
    default="platt",
    choices=CALIBRATIONS,
    choice_labels=("Platt scaling", "Isotonic regression", "None"),
    advanced=True,
)

OUTPUTS: tuple[Param, ...] = (
    Param(
        "OUTPUT",
        "Model file",
        "output_file",
        "The trained model (safetensors with JSON metadata: factors, normalisation, block "
        "raster reference, per-block weights, metrics).",
        required=True,
        file_filter="Slidewise model (*.safetensors)",
    ),
    BLOCKS_OUTPUT,
    Param(
        "OUTPUT_REPORT",
        "Training report (HTML)",
        "output_file",
        "Method, factors, blocks and K, leave-blocks-out and random cross-validated AUC, "
        "how many blocks were adapted, a map of the blocks over a hillshade and the inputs' "
        "hashes; a JSON of the figures is written next to it.",
        file_filter="HTML (*.html)",
        create_by_default=False,
    ),
)

#: Parameters only scripts set: sampling extras, table factor columns, one-class blocks.
HIDDEN: tuple[Param, ...] = (
    *SAMPLING_HIDDEN,
    Param(
        "FACTOR_FIELDS",
        "Factor fields",
        "names",
        "Factor columns of TABLE; empty: every numeric column besides label, X and Y.",
        default=(),
    ),
    Param(
        "ONE_CLASS_BLOCKS",
        "Blocks with one class",
        "choice",
        "adapt: adapt blocks whose samples are all one class on them; fallback: keep the "
        "meta-learned initialisation there.",
        default="adapt",
        choices=ONE_CLASS_CHOICES,
        choice_labels=("Keep the meta-learned start", "Adapt them on their samples"),
    ),
)

SPEC = AlgorithmSpec(
    "trainsusceptibility",
    params(
        FACTOR_STACK,
        TRAINING_INVENTORY,
        SOURCES,
        BLOCKS,
        META,
        (CALIBRATION,),
        OUTPUTS,
        COLLINEARITY,
        IMPORTANCE,
        (COG,),
        HIDDEN,
    ),
    hidden=SAMPLING_HIDDEN_NAMES | {"FACTOR_FIELDS", "ONE_CLASS_BLOCKS"},
)
