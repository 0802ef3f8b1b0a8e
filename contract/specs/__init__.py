"""One module per algorithm, each with its ``SPEC``; :data:`SPEC_MODULES` lists them.

Shared parameter groups (runtime options, factor stacks, inventories, mapping
datasets...) live in :mod:`slidewise.contract.specs.groups`.
"""

from __future__ import annotations

import importlib

from slidewise.contract.spec import AlgorithmSpec

#: Algorithm (and engine job) name -> module holding its ``SPEC``.
SPEC_MODULES: dict[str, str] = {
    "checkengine": "slidewise.contract.specs.checkengine",
    "sleep": "slidewise.contract.specs.sleep",
    "evaluatesusceptibility": "slidewise.contract.specs.evaluatesusceptibility",
    "terrainfactors": "slidewise.contract.specs.terrainfactors",
    "maplandslides": "slidewise.contract.specs.maplandslides",
    "evaluatemapping": "slidewise.contract.specs.evaluatemapping",
    "samplefactors": "slidewise.contract.specs.samplefactors",
    "segmentblocks": "slidewise.contract.specs.segmentblocks",
    "trainsusceptibility": "slidewise.contract.specs.trainsusceptibility",
    "predictsusceptibility": "slidewise.contract.specs.predictsusceptibility",
    "setupengine": "slidewise.contract.specs.setupengine",
}

#: Algorithms that run in QGIS's own Python and have no engine job (setup creates the engine).
RUNS_IN_QGIS: frozenset[str] = frozenset({"setupengine"})


def spec_of(name: str) -> AlgorithmSpec:
    """The specification of algorithm ``name``.

    Raises:
        KeyError: no algorithm of that name has a specification.
    """
    module = importlib.import_module(SPEC_MODULES[name])
    spec: AlgorithmSpec = module.SPEC
    return spec
