"""The catalogue of engine jobs: job name -> the function that runs it.

A job is a function ``run(params: dict, ctx: JobContext) -> JobResult``. The
catalogue maps job names (the same names as the Processing algorithms) to
``"module:function"`` strings so that only the chosen job's imports are paid.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult

JOBS: dict[str, str] = {
    "checkengine": "slidewise.engine.maintenance.checkengine:run_job",
    "terrainfactors": "slidewise.engine.preparation.terrainfactors:run_job",
    "sleep": "slidewise.engine.maintenance.sleep:run_sleep_job",
    # Susceptibility (issue: block-wise few-shot susceptibility)
    "samplefactors": "slidewise.engine.preparation.samplefactors:run_sample_factors",
    "segmentblocks": "slidewise.engine.susceptibility.segmentblocks:run_segment_blocks",
    "trainsusceptibility": "slidewise.engine.susceptibility.train:run_train",
    "predictsusceptibility": "slidewise.engine.susceptibility.predict:run_predict",
    "adaptsusceptibility": "slidewise.engine.susceptibility.adapt:run_adapt",
    "evaluatesusceptibility": "slidewise.engine.susceptibility.evaluate:run_evaluate",
    # Mapping (issue: segmentation models, seam-free tiled mapping)
    "trainmapping": "slidewise.engine.mapping.train:run_train",
    "maplandslides": "slidewise.engine.mapping.apply:run_map",
    "evaluatemapping": "slidewise.engine.mapping.evaluate:run_evaluate",
    # Continual per-region decoders and detection (issue: TSMU and detection)
    "addregion": "slidewise.engine.mapping.addregion:run_add_region",
    "pretrainencoder": "slidewise.engine.detection.pretrain:run_pretrain",
    "traindetection": "slidewise.engine.detection.train:run_train",
    "detectlandslides": "slidewise.engine.detection.apply:run_detect",
    # ONNX export and inference backends (issue 13)
    "exportmodel": "slidewise.engine.mapping.exportmodel:run_export",
    # Many scenes, one landslide inventory (issue 14, item 2)
    "mapscenes": "slidewise.engine.mapping.scenes_batch:run_map_scenes",
}


def resolve(name: str) -> Callable[[dict[str, Any], JobContext], JobResult]:
    """Import and return the function of job ``name``.

    Raises:
        InputError: there is no such job.
    """
    target = JOBS.get(name)
    if target is None:
        raise InputError(f"Unknown engine job '{name}': known jobs are {', '.join(sorted(JOBS))}.")
    module_name, func_name = target.split(":")
    module = importlib.import_module(module_name)
    func: Callable[[dict[str, Any], JobContext], JobResult] = getattr(module, func_name)
    return func
