"""Parameter groups of the imagery algorithms: labelled datasets and how labels are read."""

from __future__ import annotations

from slidewise.contract.spec import Param

#: Dataset readers of the mapping jobs (engine: ``slidewise.engine.imagery.datasets``).
DATASET_TYPES = ("pairs", "l4s_h5", "geotiff")
#: What the dialog shows for :data:`DATASET_TYPES`.
DATASET_TYPE_LABELS = (
    "Image and mask files with the same names",
    "Landslide4Sense HDF5 (image_N.h5 / mask_N.h5)",
    "Georeferenced images with labels or polygons",
)
#: Per-band normalisations of imagery models (fit on the data, Landslide4Sense, none).
NORMALISATIONS = ("fit", "l4s", "none")

#: How label files are read: shared by trainmapping, addregion and pretrainencoder.
LABEL_READING: tuple[Param, ...] = (
    Param(
        "LANDSLIDE_VALUES",
        "Landslide values",
        "text",
        "Mask or label values meaning landslide, e.g. 2; empty: 1 in 0/1 masks, 255 in 0/255.",
        advanced=True,
    ),
    Param(
        "IGNORE_VALUES",
        "Ignored values",
        "text",
        "Label values not counted, e.g. 0 for unlabelled.",
        advanced=True,
    ),
    Param(
        "MASK_COLOR",
        "Landslide colour in colour masks",
        "text",
        "RGB of landslide pixels in colour masks, e.g. 255,255,0 (Bijie yellow); empty: auto.",
        advanced=True,
    ),
    Param(
        "BANDS",
        "Bands",
        "text",
        "Bands to use, 1-based numbers or names (e.g. 4,3,2); empty: all. Stored in the "
        "model and checked when mapping.",
        advanced=True,
    ),
)

#: A labelled mapping dataset with optional validation data (trainmapping, addregion).
MAPPING_DATASET: tuple[Param, ...] = (
    Param(
        "DATASET_TYPE",
        "Dataset type",
        "choice",
        "How the training data is stored: image and mask files with the same names "
        "('pairs'); Landslide4Sense image_N.h5 / mask_N.h5 ('l4s_h5'); georeferenced images "
        "with label rasters or landslide polygons ('geotiff').",
        default="pairs",
        choices=DATASET_TYPES,
        choice_labels=DATASET_TYPE_LABELS,
    ),
    Param(
        "TRAIN_IMAGES",
        "Training images (folder or file)",
        "folder",
        "Folder (or one file) of training images.",
        required=True,
    ),
    Param(
        "TRAIN_MASKS",
        "Training masks (folder or file)",
        "folder",
        "Masks or label rasters with the images' file names (Landslide4Sense: mask_N.h5).",
    ),
    Param(
        "VALID_IMAGES",
        "Validation images",
        "folder",
        "Optional separate validation images; otherwise a spatial split of the training data "
        "is used.",
    ),
    Param("VALID_MASKS", "Validation masks", "folder", "Masks of the validation images."),
    Param(
        "LABEL_POLYGONS",
        "Landslide polygons",
        "polygons",
        "For geotiff datasets: landslide polygons rasterised on each image grid.",
    ),
    *LABEL_READING,
)
