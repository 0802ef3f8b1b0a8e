"""slidewise:trainsusceptibility — block-wise few-shot (or global) susceptibility model."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr
from slidewise.processing_provider.algorithms.segment_blocks import (
    add_block_parameters,
    block_params,
)
from slidewise.processing_provider.algorithms.shared_parameters import (
    add_factor_stack,
    add_inventory,
    factor_stack_params,
    inventory_params,
)

METHODS = ["meta", "rf", "lr", "mlp", "fr"]


class TrainSusceptibilityAlgorithm(SlidewiseAlgorithm):
    """Meta-learned initialisation + per-block adaptation, or RF / LR / MLP / FR."""

    ALG_ID = "trainsusceptibility"
    DISPLAY_NAME = "Train susceptibility model"
    GROUP = "susceptibility"
    ICON = "susceptibility.svg"
    JOB = "trainsusceptibility"
    RUNTIME_PARAMETERS = True
    SHORT_HELP = (
        "Trains a landslide susceptibility model from a factor stack and a landslide "
        "inventory (or from a sample table). Method meta (default): MAML over terrain "
        "blocks learns an initialisation that adapts to each block from a few samples; each "
        "block's adapted weights are stored, and blocks with too few samples keep the "
        "meta-learned initialisation (the log says which). rf, lr and mlp train one global "
        "scikit-learn model; fr is the frequency ratio method. The log and the model file "
        "report leave-blocks-out (spatial) and random cross-validation AUC, so the optimism "
        "of random splits is visible."
    )

    def initAlgorithm(self, config=None) -> None:
        add_factor_stack(self)
        add_inventory(self, optional=True)
        self.add(
            QgsProcessingParameterFile(
                "TABLE",
                tr("Sample table (instead of stack and inventory)"),
                fileFilter="Tables (*.csv *.xlsx)",
                optional=True,
            ),
            "A CSV or XLSX table with factor columns, X, Y and label (meta_LSM and Hong Kong "
            "layouts); blocks are then spatial clusters of X, Y.",
        )
        self.add(
            QgsProcessingParameterRasterLayer("BLOCKS", tr("Blocks"), optional=True),
            "Block-ID raster from Segment terrain blocks; empty: the stack is segmented with "
            "the block parameters below.",
        )
        self.add(
            QgsProcessingParameterEnum("METHOD", tr("Method"), options=METHODS, defaultValue=0),
            "meta: block-wise few-shot meta-learning (MAML); rf: random forest; lr: logistic "
            "regression; mlp: multilayer perceptron; fr: frequency ratio.",
        )
        add_block_parameters(self, advanced=True)
        self.add(
            QgsProcessingParameterNumber(
                "ITERATIONS_META",
                tr("Meta-iterations"),
                QgsProcessingParameterNumber.Integer,
                defaultValue=2000,
                minValue=1,
            ),
            "Outer MAML iterations (meta-batches).",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterNumber(
                "INNER_STEPS",
                tr("Adaptation steps"),
                QgsProcessingParameterNumber.Integer,
                defaultValue=5,
                minValue=1,
            ),
            "Gradient steps of the per-block adaptation, the same in meta-training and when "
            "adapting to each block.",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterNumber(
                "INNER_LR",
                tr("Adaptation learning rate"),
                QgsProcessingParameterNumber.Double,
                defaultValue=0.1,
                minValue=0.0,
            ),
            "Learning rate of the adaptation steps (the same in meta-training and adaptation).",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterBoolean(
                "LEARN_INNER_LR", tr("Learn the adaptation learning rates"), defaultValue=False
            ),
            "Meta-learn one adaptation learning rate per weight (the Hong Kong variant).",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterNumber(
                "META_LR",
                tr("Meta learning rate"),
                QgsProcessingParameterNumber.Double,
                defaultValue=0.001,
                minValue=0.0,
            ),
            "Learning rate of the outer Adam optimiser.",
            advanced=True,
        )
        for name, label, default, help_text in (
            ("TASKS_PER_BATCH", "Blocks per meta-batch", 16, "Tasks (blocks) per meta-batch."),
            (
                "SUPPORT",
                "Support samples per block",
                6,
                "Samples a block adapts on in meta-training.",
            ),
            (
                "QUERY",
                "Query samples per block",
                6,
                "Samples a block is scored on in meta-training; blocks with at least support + "
                "query samples are tasks.",
            ),
            (
                "PRETRAIN_EPOCHS",
                "Autoencoder pretraining epochs",
                0,
                "Denoising-autoencoder pretraining on unlabelled pixels before meta-training "
                "(0 = none).",
            ),
            (
                "MIN_BLOCK_SAMPLES",
                "Minimum samples to adapt a block",
                3,
                "Blocks with fewer samples keep the meta-learned initialisation.",
            ),
            (
                "SHOTS",
                "Shots in spatial cross-validation",
                5,
                "Support samples per held-out block in the leave-blocks-out cross-validation.",
            ),
            (
                "CV_FOLDS",
                "Cross-validation folds",
                5,
                "Folds of the leave-blocks-out and random cross-validation (0 = none).",
            ),
            ("N_ESTIMATORS", "Random forest trees", 200, "Trees of the rf method."),
        ):
            self.add(
                QgsProcessingParameterNumber(
                    name,
                    tr(label),
                    QgsProcessingParameterNumber.Integer,
                    defaultValue=default,
                    minValue=0,
                ),
                help_text,
                advanced=True,
            )
        self.add(
            QgsProcessingParameterFileDestination(
                "OUTPUT", tr("Model file"), fileFilter="Slidewise model (*.safetensors)"
            ),
            "The trained model (safetensors with JSON metadata: factors, normalisation, block "
            "raster reference, per-block weights, metrics).",
        )
        self.add(
            QgsProcessingParameterRasterDestination(
                "OUTPUT_BLOCKS", tr("Blocks used"), optional=True, createByDefault=False
            ),
            "Where to write the blocks when the stack is segmented here (default: next to "
            "the model).",
        )
        self.add_runtime_parameters()

    def job_parameters(self, parameters, context, feedback):
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        params: dict = {
            "METHOD": METHODS[self.parameterAsEnum(parameters, "METHOD", context)],
            "SEED": self.parameterAsInt(parameters, "SEED", context),
            "OUTPUT": output,
            **block_params(self, parameters, context),
        }
        for name in (
            "ITERATIONS_META",
            "INNER_STEPS",
            "TASKS_PER_BATCH",
            "SUPPORT",
            "QUERY",
            "PRETRAIN_EPOCHS",
            "MIN_BLOCK_SAMPLES",
            "SHOTS",
            "CV_FOLDS",
            "N_ESTIMATORS",
        ):
            params[name] = self.parameterAsInt(parameters, name, context)
        for name in ("INNER_LR", "META_LR"):
            params[name] = self.parameterAsDouble(parameters, name, context)
        params["LEARN_INNER_LR"] = self.parameterAsBool(parameters, "LEARN_INNER_LR", context)
        table = self.parameterAsFile(parameters, "TABLE", context)
        if table:
            params["TABLE"] = table
            label = self.parameterAsString(parameters, "LABEL_FIELD", context)
            if label:
                params["LABEL_FIELD"] = label
        else:
            params.update(factor_stack_params(self, parameters, context))
            params.update(inventory_params(self, parameters, context))
            if "INVENTORY" not in params:
                from qgis.core import QgsProcessingException

                raise QgsProcessingException(
                    tr(
                        "No samples were given: choose a landslide inventory (INVENTORY) with "
                        "the factor stack, or a sample table (TABLE)."
                    )
                )
        if parameters.get("BLOCKS"):
            params["BLOCKS"] = self.raster_path(parameters, "BLOCKS", context, tr("blocks"))
        blocks_out = self.parameterAsOutputLayer(parameters, "OUTPUT_BLOCKS", context)
        if blocks_out:
            params["OUTPUT_BLOCKS"] = blocks_out
        return params, [output, blocks_out or ""]
