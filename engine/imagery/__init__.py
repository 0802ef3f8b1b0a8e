"""Floor 3: imagery and deep learning shared by mapping and detection (datasets, models,
tiling, augmentation, losses, metrics, torchvision compatibility, band matching, the
multi-region model). Imports ``core`` and ``geo``."""
