"""One module per algorithm, each with its ``SPEC``; :data:`SPEC_MODULES` lists them.

Shared parameter groups (runtime options, factor stacks, inventories, mapping
datasets...) live in :mod:`slidewise.contract.specs.groups`.
"""

from __future__ import annotations

import importlib

from slidewise.contract.spec import AlgorithmSpec

#: Algorithm (and engine job) name -> module holding its ``SPEC``.
SPEC_MODULES: dict[str, str] = {
    "adaptsusceptibility": "slidewise.contract.specs.adaptsusceptibility",
    "addregion": "slidewise.contract.specs.addregion",
    "checkengine": "slidewise.contract.specs.checkengine",
    "detectlandslides": "slidewise.contract.specs.detectlandslides",
    "evaluatemapping": "slidewise.contract.specs.evaluatemapping",
    "evaluatesusceptibility": "slidewise.contract.specs.evaluatesusceptibility",
    "exportlayout": "slidewise.contract.specs.exportlayout",
    "exportmodel": "slidewise.contract.specs.exportmodel",
    "maplandslides": "slidewise.contract.specs.maplandslides",
    "mapscenes": "slidewise.contract.specs.mapscenes",
    "predictsusceptibility": "slidewise.contract.specs.predictsusceptibility",
    "pretrainencoder": "slidewise.contract.specs.pretrainencoder",
    "samplefactors": "slidewise.contract.specs.samplefactors",
    "segmentblocks": "slidewise.contract.specs.segmentblocks",
    "setupengine": "slidewise.contract.specs.setupengine",
    "sleep": "slidewise.contract.specs.sleep",
    "terrainfactors": "slidewise.contract.specs.terrainfactors",
    "traindetection": "slidewise.contract.specs.traindetection",
    "trainmapping": "slidewise.contract.specs.trainmapping",
    "trainsusceptibility": "slidewise.contract.specs.trainsusceptibility",
}

#: Algorithms that run in QGIS's own Python and have no engine job (setup creates the engine).
RUNS_IN_QGIS: frozenset[str] = frozenset({"setupengine", "exportlayout"})


def spec_of(name: str) -> AlgorithmSpec:
    """The specification of algorithm ``name``.

    Raises:
        KeyError: no algorithm of that name has a specification.
    """
    module = importlib.import_module(SPEC_MODULES[name])
    spec: AlgorithmSpec = module.SPEC
    return spec
