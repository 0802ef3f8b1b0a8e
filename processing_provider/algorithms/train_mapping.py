"""slidewise:trainmapping — train a landslide segmentation model."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr
from slidewise.processing_provider.algorithms.options import (
    MAPPING_DATASET,
    add_options,
    option_params,
)

RECIPES = ["default", "l4s_baseline"]
ARCHITECTURES = [
    "(recipe)",
    "unet",
    "unetplusplus",
    "deeplabv3plus",
    "fpn",
    "linknet",
    "manet",
    "pan",
    "segformer",
    "resunet",
]
LOSSES = ["(recipe)", "dice_bce", "bce", "dice", "focal", "lovasz", "lovasz_bce"]
NORMALISATIONS = ["fit", "l4s", "none"]
SELECT_METRICS = ["f1", "iou", "mcc"]

#: Optional text parameters passed on as they are (name, label, help).
TEXT_OPTIONS = (
    (
        "ENCODER",
        "Encoder",
        "segmentation-models-pytorch encoder, e.g. resnet18, resnet34, "
        "efficientnet-b0, mit_b0; empty: the recipe's (random start, nothing is downloaded).",
    ),
    (
        "STREAMS",
        "Input streams (residual U-Net)",
        "Groups of 1-based band positions, each "
        "with its own stem, e.g. 1,2,3;4,5,6;7,8 for pre-event RGB, post-event RGB, terrain.",
    ),
    ("MODEL_OPTIONS", "Model options (JSON)", "Extra architecture options as a JSON object."),
    (
        "THRESHOLD",
        "Threshold",
        "auto (tuned on validation) or a probability stored with the "
        "model and used by Map landslides by default.",
    ),
    (
        "POS_WEIGHT",
        "Landslide weight",
        "auto, none, or a number: weight of landslide pixels in the BCE loss (class imbalance).",
    ),
)
#: Numeric parameters (name, label, type, default or None for the recipe's, help).
NUMBER_OPTIONS = (
    ("EPOCHS", "Epochs", "int", None, "Training epochs; empty: the recipe's (30)."),
    ("BATCH_SIZE", "Batch size", "int", None, "Chips per batch; empty: the recipe's (8)."),
    ("LR", "Learning rate", "float", None, "Adam learning rate; empty: the recipe's."),
    ("WEIGHT_DECAY", "Weight decay", "float", None, "Weight decay; empty: the recipe's."),
    ("CHIP_SIZE", "Chip size (pixels)", "int", 256, "Side of training chips."),
    ("STRIDE", "Chip stride (pixels)", "int", None, "Step between chips; empty: chip size."),
    (
        "VALID_FRACTION",
        "Validation share",
        "float",
        0.2,
        "Share of the training data split off by space for validation when no validation "
        "set is given.",
    ),
    (
        "PATIENCE",
        "Early-stopping patience",
        "int",
        None,
        "Stop after this many epochs without a better validation score (0 = never).",
    ),
    (
        "OVERSAMPLE",
        "Landslide oversampling",
        "float",
        None,
        "Share of chips with landslides drawn per epoch (0 = plain shuffling).",
    ),
    ("CHIPS_PER_EPOCH", "Chips per epoch", "int", None, "0 = as many as there are."),
    ("ENCODER_DEPTH", "Encoder depth", "int", None, "smp encoder depth (3-5)."),
)


class TrainMappingAlgorithm(SlidewiseAlgorithm):
    """Segmentation models (smp or residual U-Net) with model selection on validation."""

    ALG_ID = "trainmapping"
    DISPLAY_NAME = "Train mapping model"
    GROUP = "mapping"
    ICON = "mapping.svg"
    JOB = "trainmapping"
    RUNTIME_PARAMETERS = True
    SHORT_HELP = (
        "Trains or fine-tunes a landslide segmentation model on imagery with landslide "
        "labels: image/mask pairs (PNG or TIFF, 0/1, 0/255 or colour masks), Landslide4Sense "
        "h5 patches, or GeoTIFF images with label rasters or landslide polygons. The model "
        "with the best validation score (landslide-class F1 by default) is kept; validation "
        "precision, recall, F1, IoU and MCC are logged per epoch and stored in the model "
        "file with the bands and normalisation, which mapping re-applies. The default recipe "
        "uses Dice + BCE, D4 augmentation and class-imbalance handling; l4s_baseline is the "
        "Landslide4Sense baseline (plain U-Net, cross-entropy, no augmentation)."
    )

    def initAlgorithm(self, config=None) -> None:
        add_options(self, MAPPING_DATASET)
        self.add(
            QgsProcessingParameterEnum("RECIPE", tr("Recipe"), options=RECIPES, defaultValue=0),
            "default: the engine's recipe; l4s_baseline: the Landslide4Sense baseline.",
        )
        self.add(
            QgsProcessingParameterEnum(
                "ARCHITECTURE", tr("Architecture"), options=ARCHITECTURES, defaultValue=0
            ),
            "Segmentation architecture; resunet is the residual U-Net with deep supervision "
            "(Prakash et al. 2021).",
        )
        self.add(
            QgsProcessingParameterEnum("LOSS", tr("Loss"), options=LOSSES, defaultValue=0),
            "Training loss; (recipe) keeps the recipe's.",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterEnum(
                "NORMALISATION", tr("Normalisation"), options=NORMALISATIONS, defaultValue=0
            ),
            "fit: per-band mean/std from the training split; l4s: the Landslide4Sense "
            "constants (14-band data); none.",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterEnum(
                "SELECT_METRIC",
                tr("Model selection metric"),
                options=SELECT_METRICS,
                defaultValue=0,
            ),
            "Landslide-class metric used to pick the epoch and tune the threshold.",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterEnum(
                "AUGMENT",
                tr("D4 augmentation"),
                options=["(recipe)", "yes", "no"],
                defaultValue=0,
            ),
            "Random rotations and mirrors of each chip.",
            advanced=True,
        )
        for name, label, help_text in TEXT_OPTIONS:
            self.add(
                QgsProcessingParameterString(name, tr(label), optional=True, defaultValue=""),
                help_text,
                advanced=True,
            )
        for name, label, kind, default, help_text in NUMBER_OPTIONS:
            self.add(
                QgsProcessingParameterNumber(
                    name,
                    tr(label),
                    QgsProcessingParameterNumber.Integer
                    if kind == "int"
                    else QgsProcessingParameterNumber.Double,
                    defaultValue=default,
                    optional=default is None,
                    minValue=0,
                ),
                help_text,
                advanced=True,
            )
        self.add(
            QgsProcessingParameterFile(
                "ENCODER_WEIGHTS",
                tr("Encoder weights"),
                optional=True,
                fileFilter="Slidewise encoder (*.safetensors)",
            ),
            "Optional local encoder weights (for example from Pre-train encoder), loaded with "
            "strict key checking.",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterFileDestination(
                "CHECKPOINT",
                tr("Checkpoint"),
                fileFilter="Checkpoint (*.safetensors)",
                optional=True,
                createByDefault=False,
            ),
            "Checkpoint written every epoch (weights, optimiser and random state; no pickle).",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterBoolean(
                "RESUME", tr("Resume from checkpoint"), defaultValue=False
            ),
            "Continue training from the checkpoint up to the number of epochs.",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterFileDestination(
                "OUTPUT", tr("Model file"), fileFilter="Slidewise model (*.safetensors)"
            ),
            "The trained model (safetensors with JSON metadata: architecture, bands, "
            "normalisation, tile size, threshold, validation metrics).",
        )
        self.add_runtime_parameters()

    def job_parameters(self, parameters, context, feedback):
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        params: dict = {
            **option_params(self, parameters, context, MAPPING_DATASET),
            "RECIPE": RECIPES[self.parameterAsEnum(parameters, "RECIPE", context)],
            "NORMALISATION": NORMALISATIONS[
                self.parameterAsEnum(parameters, "NORMALISATION", context)
            ],
            "SELECT_METRIC": SELECT_METRICS[
                self.parameterAsEnum(parameters, "SELECT_METRIC", context)
            ],
            "SEED": self.parameterAsInt(parameters, "SEED", context),
            "RESUME": self.parameterAsBool(parameters, "RESUME", context),
            "OUTPUT": output,
        }
        weights = self.parameterAsFile(parameters, "ENCODER_WEIGHTS", context)
        if weights:
            params["ENCODER_WEIGHTS"] = weights
        architecture = ARCHITECTURES[self.parameterAsEnum(parameters, "ARCHITECTURE", context)]
        if not architecture.startswith("("):
            params["ARCHITECTURE"] = architecture
        loss = LOSSES[self.parameterAsEnum(parameters, "LOSS", context)]
        if not loss.startswith("("):
            params["LOSS"] = loss
        augment = self.parameterAsEnum(parameters, "AUGMENT", context)
        if augment:
            params["AUGMENT"] = augment == 1
        for name, _label, _help in TEXT_OPTIONS:
            value = self.parameterAsString(parameters, name, context).strip()
            if value:
                params[name] = value
        for name, _label, kind, _default, _help in NUMBER_OPTIONS:
            if parameters.get(name) not in (None, ""):
                params[name] = (self.parameterAsInt if kind == "int" else self.parameterAsDouble)(
                    parameters, name, context
                )
        checkpoint = self.parameterAsFileOutput(parameters, "CHECKPOINT", context)
        if checkpoint:
            params["CHECKPOINT"] = checkpoint
        return params, [output]
