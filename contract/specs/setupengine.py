"""slidewise:setupengine: create, repair or remove the engine environment (runs in QGIS's Python).

This algorithm has no engine job: there is no engine yet when it runs. The plugin
carries it out with :mod:`slidewise.processing_provider.engine_setup`.
"""

from __future__ import annotations

from slidewise.contract.spec import AlgorithmSpec, Param

SPEC = AlgorithmSpec(
    "setupengine",
    (
        Param(
            "ACTION",
            "Action",
            "choice",
            "Install: create the environment (if missing) and install torch and the engine in "
            "it, then check the engine. Repair: empty the environment and install again. "
            "Remove: delete the environment folder. Build wheelhouse: download every wheel the "
            "engine needs into the wheelhouse folder, for a setup on a machine with no network "
            "(same operating system and Python version).",
            default="install",
            choices=("install", "repair", "remove", "wheelhouse"),
            choice_labels=(
                "Install",
                "Repair (empty the environment and install again)",
                "Remove the environment",
                "Build an offline wheelhouse",
            ),
        ),
        Param(
            "ENV_PATH",
            "Environment folder",
            "folder",
            "Folder of the engine environment; a new or empty folder, or an existing "
            "environment. Empty: the environment Slidewise uses now (the SLIDEWISE_PYTHON "
            "environment variable, then Settings, then ~/.local/share/slidewise/engine-venv).",
        ),
        Param(
            "TORCH",
            "PyTorch build",
            "choice",
            "Which PyTorch to install. Automatic: the CUDA build matching the NVIDIA driver when "
            "nvidia-smi finds a GPU, else the CPU build. Package index: torch from the URL "
            "below (a mirror, or another CUDA or ROCm build). Ignored when installing from a "
            "wheelhouse; used when building one.",
            default="auto",
            choices=("auto", "cpu", "cuda", "index"),
            choice_labels=(
                "Automatic (CUDA if an NVIDIA GPU is found)",
                "CPU only",
                "CUDA (NVIDIA GPU)",
                "From the package index below",
            ),
        ),
        Param(
            "INDEX_URL",
            "Package index of PyTorch",
            "text",
            "Package index URL torch is installed from when the build is 'From the package "
            "index', e.g. https://download.pytorch.org/whl/cu126.",
        ),
        Param(
            "WHEELHOUSE",
            "Wheelhouse folder (offline)",
            "folder",
            "Folder of wheels made by 'Build an offline wheelhouse' (or 'make wheelhouse'): "
            "setup installs only from it, with no network. Empty: install from the internet.",
        ),
        Param(
            "PYTHON",
            "Python used to create the environment",
            "file",
            "Python 3.10 or newer with the venv module. Empty: the first suitable one found "
            "(QGIS's own Python, python3 on the PATH, /usr/bin/python3).",
            advanced=True,
        ),
    ),
)
