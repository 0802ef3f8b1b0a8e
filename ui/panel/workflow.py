"""The panel's workflows, without Qt: steps, chaining, output places, layer order.

Each step of the panel runs one Slidewise Processing algorithm. This module says
which algorithms a workflow chains, which output (or input) of a step fills which
input of a later step, where the outputs of a run are written (models in a
persistent folder, never a temporary file), and how the results are shown: the
QML style, the opacity and the place in the run's layer group.

Parameter names come from the contract specs (:func:`slidewise.contract.specs.spec_of`)
where an algorithm has one; :func:`check_links` verifies every link against them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from slidewise.contract.specs.mapscenes import MAPPING_NAMES, PLACEMENT_NAMES

#: Folder of a saved project that holds its models.
PROJECT_MODELS = "slidewise_models"
#: Folder of a saved project that holds its runs (one sub-folder per run).
PROJECT_RUNS = "slidewise_runs"
#: Folder under the QGIS profile when the project is not saved.
PROFILE_FOLDER = "slidewise"


@dataclass(frozen=True)
class Step:
    """One step of a workflow: a Processing algorithm with a title.

    Attributes:
        alg: Algorithm name (``slidewise:<alg>``).
        title: Title in the panel.
        description: One sentence saying what the step does.
    """

    alg: str
    title: str
    description: str

    @property
    def alg_id(self) -> str:
        """Full Processing id, for example ``slidewise:terrainfactors``."""
        return f"slidewise:{self.alg}"


@dataclass(frozen=True)
class Link:
    """A value of one step (an output, or an input it was given) that fills a later input."""

    source_alg: str
    source: str
    target_alg: str
    target: str


@dataclass(frozen=True)
class OutputSlot:
    """An output parameter of an algorithm: name, spec kind, file filter, written by default."""

    name: str
    kind: str
    file_filter: str = ""
    by_default: bool = True


@dataclass(frozen=True)
class Presentation:
    """How an output is shown: style, opacity, place (higher rank: higher in the group).

    Attributes:
        qml: File name in ``resources/styles`` ('' = QGIS's default style).
        rank: Order in the run's group; polygons and outlines rank above rasters.
        opacity: Layer opacity, 0-1.
        visible: Whether the layer is switched on when added.
        layer_param: Parameter naming the layer to show inside a file of several layers
            ('' = the file's only layer).
    """

    qml: str
    rank: int
    opacity: float = 1.0
    visible: bool = True
    layer_param: str = ""


#: Tabs of the panel and their steps, in the order of the work.
WORKFLOWS: dict[str, tuple[Step, ...]] = {
    "susceptibility": (
        Step(
            "terrainfactors",
            "Terrain factors",
            "Slope, aspect, curvatures, hillshade and wetness index from a DEM.",
        ),
        Step(
            "segmentblocks",
            "Terrain blocks",
            "Cut the factor stack into terrain blocks and count the landslides in each.",
        ),
        Step(
            "trainsusceptibility",
            "Train",
            "Train a susceptibility model on the factors and the landslide inventory.",
        ),
        Step(
            "adaptsusceptibility",
            "Adapt to new blocks",
            "Adapt a meta-learning model to the blocks of an area with a few new samples "
            "per block (optional; seconds, no training).",
        ),
        Step(
            "predictsusceptibility",
            "Predict and classify",
            "Probability of landslide and susceptibility classes over the factor stack.",
        ),
        Step(
            "evaluatesusceptibility",
            "Evaluate",
            "Metrics, rate curves and class statistics against a validation inventory.",
        ),
    ),
    "mapping": (
        Step(
            "trainmapping",
            "Train from a folder",
            "Train a segmentation model on images with landslide masks.",
        ),
        Step(
            "maplandslides",
            "Map a raster",
            "Landslide probability, mask and polygons over a raster of the project.",
        ),
        Step(
            "evaluatemapping",
            "Evaluate",
            "Compare the mapped probability with reference landslides.",
        ),
        Step(
            "mapscenes",
            "Map many scenes",
            "Map every scene of a folder, a list or a footprint layer (give one of the three) "
            "with one model into one landslide inventory: polygons of overlapping scenes are "
            "merged, scenes already in the inventory are skipped.",
        ),
    ),
    "detection": (
        Step(
            "traindetection",
            "Train a detector",
            "Train a landslide box detector on annotated images.",
        ),
        Step(
            "detectlandslides",
            "Detect",
            "Landslide boxes on an image, or from a mapped probability raster.",
        ),
    ),
}

#: Tab titles.
TAB_TITLES = {"susceptibility": "Susceptibility", "mapping": "Mapping", "detection": "Detection"}

#: What a finished step hands on to later steps.
LINKS: tuple[Link, ...] = (
    Link("terrainfactors", "OUTPUT", "segmentblocks", "INPUT"),
    Link("terrainfactors", "OUTPUT", "trainsusceptibility", "INPUT"),
    Link("terrainfactors", "OUTPUT", "predictsusceptibility", "INPUT"),
    Link("segmentblocks", "INPUT", "trainsusceptibility", "INPUT"),
    Link("segmentblocks", "INPUT", "predictsusceptibility", "INPUT"),
    Link("segmentblocks", "OUTPUT", "trainsusceptibility", "BLOCKS"),
    Link("segmentblocks", "INVENTORY", "trainsusceptibility", "INVENTORY"),
    Link("segmentblocks", "LABEL_FIELD", "trainsusceptibility", "LABEL_FIELD"),
    Link("segmentblocks", "NEGATIVES", "trainsusceptibility", "NEGATIVES"),
    Link("trainsusceptibility", "INPUT", "predictsusceptibility", "INPUT"),
    Link("trainsusceptibility", "OUTPUT", "predictsusceptibility", "MODEL"),
    Link("trainsusceptibility", "INVENTORY", "evaluatesusceptibility", "TRAINING"),
    Link("trainsusceptibility", "INPUT", "adaptsusceptibility", "INPUT"),
    Link("trainsusceptibility", "OUTPUT", "adaptsusceptibility", "MODEL"),
    Link("adaptsusceptibility", "INPUT", "predictsusceptibility", "INPUT"),
    Link("adaptsusceptibility", "OUTPUT", "predictsusceptibility", "MODEL"),
    Link("predictsusceptibility", "OUTPUT", "evaluatesusceptibility", "INPUT"),
    Link("predictsusceptibility", "CLASSED", "evaluatesusceptibility", "CLASSED"),
    Link("trainsusceptibility", "OUTPUT", "evaluatesusceptibility", "MODEL"),
    Link("terrainfactors", "INPUT", "evaluatesusceptibility", "DEM"),
    Link("trainmapping", "OUTPUT", "maplandslides", "MODEL"),
    Link("maplandslides", "OUTPUT_PROBABILITY", "evaluatemapping", "INPUT"),
    Link("trainmapping", "OUTPUT", "mapscenes", "MODEL"),
    Link("maplandslides", "MODEL", "mapscenes", "MODEL"),
    Link("traindetection", "OUTPUT", "detectlandslides", "MODEL"),
)

#: How outputs are shown; outputs absent here are not loaded (they still chain).
PRESENTATIONS: dict[tuple[str, str], Presentation] = {
    ("terrainfactors", "OUTPUT"): Presentation("terrain_factors.qml", 0),
    ("segmentblocks", "OUTPUT_POLYGONS"): Presentation("blocks.qml", 50),
    ("predictsusceptibility", "OUTPUT"): Presentation("susceptibility_probability.qml", 10, 0.6),
    ("predictsusceptibility", "CLASSED"): Presentation("susceptibility_classes.qml", 20, 0.8),
    ("maplandslides", "OUTPUT_PROBABILITY"): Presentation("landslide_probability.qml", 10, 0.6),
    ("maplandslides", "OUTPUT_MASK"): Presentation("landslide_mask.qml", 20, 1.0, False),
    ("maplandslides", "OUTPUT_POLYGONS"): Presentation("landslide_polygons.qml", 40),
    ("detectlandslides", "OUTPUT"): Presentation("detection_boxes.qml", 45),
    ("mapscenes", "INVENTORY"): Presentation(
        "landslide_polygons.qml", 40, layer_param="INVENTORY_LAYER"
    ),
}

#: Optional outputs the panel leaves unset (the algorithm then skips them).
SKIPPED_OUTPUTS: dict[str, frozenset[str]] = {
    "trainsusceptibility": frozenset({"OUTPUT_BLOCKS"}),
    "adaptsusceptibility": frozenset({"OUTPUT_BLOCKS"}),
    "trainmapping": frozenset({"CHECKPOINT"}),
}

#: Optional outputs off by default that the panel asks for (the reports users read).
WANTED_OUTPUTS: dict[str, frozenset[str]] = {
    "evaluatemapping": frozenset({"OUTPUT_HTML"}),
    "trainsusceptibility": frozenset({"OUTPUT_REPORT"}),
    "traindetection": frozenset({"OUTPUT_REPORT"}),
}


@dataclass(frozen=True)
class KeptOutputs:
    """Outputs a step adds to when it runs again in the same run, instead of new files.

    Attributes:
        outputs: The outputs kept.
        key: Parameters that decide what is written: when one of them changed since the
            step's last run, the step starts new outputs (a scene mapped again with
            another threshold would otherwise add its new polygons to its old ones).
    """

    outputs: frozenset[str]
    key: tuple[str, ...]


#: The inventory of Map many scenes and its scenes' folder: a second run with the same
#: mapping parameters skips the scenes already mapped and adds those new in the folder,
#: list or footprints (the parameters that only place the work are not in the key).
KEPT_OUTPUTS: dict[str, KeptOutputs] = {
    "mapscenes": KeptOutputs(
        frozenset({"INVENTORY", "OUTPUT_FOLDER"}),
        tuple(name for name in MAPPING_NAMES if name not in PLACEMENT_NAMES),
    ),
}

#: What a cancel leaves of a step whose kept outputs are whole after each part of the work.
KEPT_ON_CANCEL: dict[str, str] = {
    "mapscenes": "Cancelled: the inventory keeps the scenes finished before; Run continues "
    "with the others.",
}

#: File names of outputs whose parameter name makes a poor one (``<alg>_<name>``).
OUTPUT_FILE_NAMES: dict[tuple[str, str], str] = {
    ("mapscenes", "OUTPUT_FOLDER"): "scenes",
}

#: What an empty input means, shown in its empty widget (the algorithm's default).
EMPTY_MEANS: dict[tuple[str, str], str] = {
    ("maplandslides", "MODEL"): "[the shipped landslide model]",
    ("mapscenes", "MODEL"): "[the shipped landslide model]",
}

#: Where a map is computed (Map a raster): the whole raster, the canvas, or an AOI layer.
EXTENTS = ("whole", "canvas", "aoi")
EXTENT_LABELS = {
    "whole": "Whole raster",
    "canvas": "Current map canvas extent",
    "aoi": "Area of interest layer",
}

_SUFFIX = {"output_raster": ".tif", "output_vector": ".gpkg", "output_folder": ""}


def steps_of(workflow: str) -> tuple[Step, ...]:
    """The steps of a workflow (``susceptibility``, ``mapping`` or ``detection``)."""
    return WORKFLOWS[workflow]


def workflow_of(alg: str) -> str:
    """The workflow (tab) that holds algorithm ``alg``."""
    for name, steps in WORKFLOWS.items():
        if any(step.alg == alg for step in steps):
            return name
    raise KeyError(alg)


def spec_names(alg: str) -> frozenset[str] | None:
    """Parameter names of ``alg`` from its contract spec; ``None`` if it has none yet."""
    from slidewise.contract.specs import SPEC_MODULES, spec_of

    if alg not in SPEC_MODULES:
        return None
    return spec_of(alg).names


def spec_outputs(alg: str) -> list[OutputSlot] | None:
    """Output slots of ``alg`` from its spec (skipping outputs off by default)."""
    from slidewise.contract.spec import OUTPUTS
    from slidewise.contract.specs import SPEC_MODULES, spec_of

    if alg not in SPEC_MODULES:
        return None
    spec = spec_of(alg)
    return [
        OutputSlot(p.name, p.kind, p.file_filter, p.create_by_default or p.required)
        for p in spec.params
        if p.kind in OUTPUTS and p.name not in spec.hidden
    ]


def check_links(known: Mapping[str, Iterable[str]] | None = None) -> list[str]:
    """Problems with :data:`LINKS` and :data:`PRESENTATIONS` (empty: all names exist).

    Args:
        known: Parameter and output names per algorithm, for algorithms without a spec
            (the panel passes the registered algorithms'); spec names win.
    """
    problems = []
    names: dict[str, frozenset[str]] = {}
    for alg in {link.source_alg for link in LINKS} | {link.target_alg for link in LINKS}:
        found = spec_names(alg)
        if found is None and known is not None and alg in known:
            found = frozenset(known[alg])
        if found is not None:
            names[alg] = found
    pairs = [(ln.source_alg, ln.source) for ln in LINKS] + [
        (ln.target_alg, ln.target) for ln in LINKS
    ]
    pairs += list(PRESENTATIONS)
    for alg, name in pairs:
        if alg in names and name not in names[alg]:
            problems.append(f"{alg} has no parameter {name}")
    return problems


def is_model_output(slot: OutputSlot) -> bool:
    """Whether an output is a model file (it goes to the models folder)."""
    return "safetensors" in slot.file_filter.lower()


def models_folder(project_home: str, profile_dir: str) -> Path:
    """Where trained models go: the project's folder when saved, else the profile's.

    Args:
        project_home: Folder of the saved project ('' when unsaved).
        profile_dir: The QGIS profile folder (``QgsApplication.qgisSettingsDirPath()``).
    """
    if project_home:
        return Path(project_home) / PROJECT_MODELS
    return Path(profile_dir) / PROFILE_FOLDER / "models"


def runs_folder(project_home: str, profile_dir: str) -> Path:
    """The folder holding one sub-folder per run (outputs and reports)."""
    if project_home:
        return Path(project_home) / PROJECT_RUNS
    return Path(profile_dir) / PROFILE_FOLDER / "runs"


def run_stamp(when: datetime) -> str:
    """A sortable, file-safe stamp of a run's start, for example ``20260312-141502``."""
    return when.strftime("%Y%m%d-%H%M%S")


def run_group_name(when: datetime) -> str:
    """Name of the layer group of a run: ``Slidewise run 14:15:02``."""
    return f"Slidewise run {when.strftime('%H:%M:%S')}"


def _file_suffix(slot: OutputSlot) -> str:
    if slot.kind in _SUFFIX:
        return _SUFFIX[slot.kind]
    found = re.search(r"\*(\.[A-Za-z0-9_]+)", slot.file_filter)
    return found.group(1).lower() if found else ""


def unique_path(path: Path) -> Path:
    """``path``, or ``name_2.ext``, ``name_3.ext``... if it exists."""
    if not path.exists():
        return path
    for number in range(2, 10_000):
        candidate = path.with_name(f"{path.stem}_{number}{path.suffix}")
        if not candidate.exists():
            return candidate
    return path


def default_outputs(
    alg: str, slots: Sequence[OutputSlot], run_dir: Path, models_dir: Path, stamp: str
) -> dict[str, str]:
    """Output paths of one step: models in ``models_dir``, the rest in ``run_dir``.

    Optional outputs that are off by default are left out, except those of
    :data:`WANTED_OUTPUTS`. Model names carry the algorithm and the run stamp
    (``trainmapping_20260312-141502``) so that they never overwrite an earlier
    model; other outputs are named
    ``<alg>_<output>`` inside the run's folder.
    """
    skipped = SKIPPED_OUTPUTS.get(alg, frozenset())
    wanted = WANTED_OUTPUTS.get(alg, frozenset())
    paths: dict[str, str] = {}
    for slot in slots:
        if slot.name in skipped or not (slot.by_default or slot.name in wanted):
            continue
        if is_model_output(slot):
            path = unique_path(models_dir / f"{alg}_{stamp}.safetensors")
        else:
            suffix = _file_suffix(slot)
            name = slot.name.lower().replace("output_", "").replace("output", "")
            if name and name == suffix.lstrip("."):
                name = "report"  # OUTPUT_HTML: evaluatemapping_report.html
            name = OUTPUT_FILE_NAMES.get((alg, slot.name), name)
            stem = f"{alg}_{name}" if name else alg
            path = unique_path(run_dir / f"{stem}{suffix}")
        paths[slot.name] = str(path)
    return paths


def kept_output(alg: str, name: str) -> bool:
    """Whether output ``name`` of ``alg`` is added to when the step runs again in a run."""
    return alg in KEPT_OUTPUTS and name in KEPT_OUTPUTS[alg].outputs


def _plain(value: Any) -> str | None:
    """A widget value for comparison: unset values (None, '', Qt's NULL) are ``None``."""
    text = None if value is None else str(value)
    return None if text in (None, "", "NULL", "[]") else text


def keeps_outputs(alg: str, previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> bool:
    """Whether a run of ``alg`` with ``current`` adds to the kept outputs of ``previous``.

    Args:
        alg: The step's algorithm.
        previous: The parameters of its last run in this run (``None``: none yet).
        current: The parameters it is about to run with.
    """
    kept = KEPT_OUTPUTS.get(alg)
    if kept is None or previous is None:
        return False
    return all(_plain(previous.get(name)) == _plain(current.get(name)) for name in kept.key)


def layer_source(alg: str, name: str, path: str, parameters: Mapping[str, Any]) -> str:
    """The data source of the layer to show for output ``name``: ``path``, or one of its layers.

    A GeoPackage of several tables (the inventory of Map many scenes holds its polygons
    and the table of the scenes mapped) is shown by the layer that the parameter named
    in the output's :class:`Presentation` gives (its spec default when unset):
    ``inventory.gpkg|layername=landslide_inventory``.
    """
    presentation = PRESENTATIONS.get((alg, name))
    if presentation is None or not presentation.layer_param:
        return path
    layer = parameters.get(presentation.layer_param)
    if layer in (None, ""):
        from slidewise.contract.specs import spec_of

        layer = spec_of(alg)[presentation.layer_param].default
    return f"{path}|layername={layer}"


def chained_values(
    alg: str, parameters: Mapping[str, Any], results: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Inputs of later steps filled by a finished step.

    Args:
        alg: The step that finished.
        parameters: The parameters it ran with.
        results: Its Processing results.

    Returns:
        Target algorithm -> parameter name -> value (outputs from ``results``,
        inputs from ``parameters``); unset values are left out.
    """
    values: dict[str, dict[str, Any]] = {}
    for link in LINKS:
        if link.source_alg != alg:
            continue
        value = results.get(link.source)
        if value in (None, ""):
            value = parameters.get(link.source)
        if value in (None, "", [], ()):
            continue
        values.setdefault(link.target_alg, {})[link.target] = value
    return values


def insert_index(ranks_top_down: Sequence[int], rank: int) -> int:
    """Where a layer of ``rank`` goes in a group whose layers (top first) have these ranks.

    Layers of higher rank stay above; among equal ranks the newest goes on top.
    """
    for index, existing in enumerate(ranks_top_down):
        if existing <= rank:
            return index
    return len(ranks_top_down)


def report_outputs(alg: str, results: Mapping[str, Any]) -> list[str]:
    """HTML reports among a step's results."""
    return [
        str(value)
        for value in results.values()
        if isinstance(value, str) and value.lower().endswith((".html", ".htm"))
    ]


def find_files(folder: Path, suffix: str, limit: int = 50) -> list[Path]:
    """Files with ``suffix`` under ``folder`` (one level of sub-folders), newest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob(f"*{suffix}") if p.is_file()]
    found += [p for p in folder.glob(f"*/*{suffix}") if p.is_file()]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return found[:limit]


def extent_polygon_wkt(xmin: float, ymin: float, xmax: float, ymax: float) -> str:
    """WKT of the rectangle of an extent (the canvas, as an area of interest)."""
    if xmax <= xmin or ymax <= ymin:
        raise ValueError("The extent is empty.")
    ring = [(xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax), (xmin, ymin)]
    return "POLYGON((" + ", ".join(f"{x!r} {y!r}" for x, y in ring) + "))"
