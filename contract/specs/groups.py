"""Parameter groups shared by several algorithms (one declaration each)."""

from __future__ import annotations

from dataclasses import replace

from slidewise.contract.spec import Param

#: Where and how repeatably a job computes; added to every torch-based algorithm.
RUNTIME: tuple[Param, ...] = (
    Param(
        "DEVICE",
        "Device",
        "choice",
        "Where the engine computes: automatic picks an NVIDIA GPU (CUDA), then an Apple "
        "GPU (MPS), then the CPU.",
        default="auto",
        choices=("auto", "cpu", "cuda", "mps"),
        choice_labels=("Automatic", "CPU", "NVIDIA GPU (CUDA)", "Apple GPU (MPS)"),
        advanced=True,
    ),
    Param(
        "SEED",
        "Random seed",
        "int",
        "Seed for every random generator, so a run can be repeated exactly.",
        default=0,
        minimum=0,
        maximum=2**31 - 1,
        advanced=True,
    ),
    Param(
        "DETERMINISTIC",
        "Deterministic kernels",
        "bool",
        "Ask PyTorch for deterministic kernels (repeatable on GPU, slower).",
        default=False,
        advanced=True,
    ),
)
RUNTIME_NAMES = frozenset(p.name for p in RUNTIME)
#: The seed as a job parameter (jobs that draw random numbers take it).
SEED = RUNTIME[1]
#: The seed as a job parameter that falls back on the runtime seed when unset.
RUNTIME_SEED = replace(
    SEED,
    help="Seed for every random generator of the job; empty: the runtime seed.",
    default=None,
)
#: Side of the windows a raster is processed in.
BLOCK_SIZE = Param(
    "BLOCK_SIZE",
    "Block size",
    "int",
    "Side of the blocks the DEM is processed in; bounds the memory used.",
    default=1024,
    minimum=16,
    maximum=16384,
    unit="px",
    advanced=True,
)

#: How raster outputs are written; the worker applies it to every raster output of a job.
COG = Param(
    "COG",
    "Write rasters as Cloud-Optimized GeoTIFF",
    "bool",
    "Write every raster output as a Cloud-Optimized GeoTIFF (internal 512 px tiles, "
    "overviews, DEFLATE): it opens fast in QGIS from a network share or object storage "
    "(/vsicurl/, /vsis3/). Off: a plain tiled GeoTIFF.",
    default=False,
    advanced=True,
)
#: Output options the worker handles for every job (not the job itself).
OUTPUT_OPTIONS: tuple[Param, ...] = (COG,)
OUTPUT_OPTION_NAMES = frozenset(p.name for p in OUTPUT_OPTIONS)

#: Where window-parallel jobs compute: a local Dask cluster or the user's scheduler.
SCALE_OUT: tuple[Param, ...] = (
    Param(
        "WORKERS",
        "Parallel worker processes",
        "int",
        "Worker processes of a local Dask cluster that compute the windows in parallel "
        "(one thread each); the job's own process writes the outputs in order, so they equal "
        "a one-process run. 1: no cluster, the windows are computed in the job's process.",
        default=1,
        minimum=1,
        maximum=256,
        advanced=True,
    ),
    Param(
        "SCHEDULER",
        "Dask scheduler address",
        "text",
        "Address of a running dask.distributed scheduler (tcp://host:8786): its workers "
        "compute the windows, reading the inputs from their paths, so give paths every worker "
        "can read (a shared folder, /vsicurl/ or /vsis3/). Empty: this machine (WORKERS).",
        advanced=True,
    ),
)
