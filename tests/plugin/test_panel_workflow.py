"""The panel's workflow logic (no Qt, no engine): steps, links, output places, order."""

from __future__ import annotations

import ast
from datetime import datetime
from pathlib import Path

import pytest
from plugin_helpers import REPO

from slidewise.contract.specs import SPEC_MODULES
from slidewise.ui.panel import workflow
from slidewise.ui.panel.workflow import OutputSlot

STYLES = REPO / "resources" / "styles"
ALGORITHMS = REPO / "processing_provider" / "algorithms"


def _names_in_module(alg: str) -> set[str]:
    """Upper-case string constants of the module that defines ``alg`` (no spec yet)."""
    for path in ALGORITHMS.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        if f'ALG_ID = "{alg}"' in text:
            tree = ast.parse(text)
            # OUTPUT of option algorithms is declared by base.add_output_file
            return {"OUTPUT"} | {
                node.value
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.isupper()
            }
    return set()


def test_every_step_is_a_slidewise_algorithm() -> None:
    for steps in workflow.WORKFLOWS.values():
        for step in steps:
            assert step.alg in SPEC_MODULES or _names_in_module(step.alg), step.alg
            assert step.alg_id == f"slidewise:{step.alg}"


def test_links_and_presentations_name_real_parameters() -> None:
    known = {
        alg: _names_in_module(alg)
        for steps in workflow.WORKFLOWS.values()
        for alg in (s.alg for s in steps)
        if alg not in SPEC_MODULES
    }
    assert workflow.check_links(known) == []


def test_check_links_reports_a_wrong_name(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = (*workflow.LINKS, workflow.Link("terrainfactors", "NOPE", "segmentblocks", "INPUT"))
    monkeypatch.setattr(workflow, "LINKS", broken)
    assert workflow.check_links() == ["terrainfactors has no parameter NOPE"]


def test_susceptibility_chain_fills_the_next_steps() -> None:
    values = workflow.chained_values("terrainfactors", {"INPUT": "dem"}, {"OUTPUT": "/r/f.tif"})
    assert values["segmentblocks"]["INPUT"] == "/r/f.tif"
    assert values["predictsusceptibility"]["INPUT"] == "/r/f.tif"
    values = workflow.chained_values(
        "segmentblocks",
        {"INPUT": "stack", "INVENTORY": "inv", "LABEL_FIELD": "", "NEGATIVES": None},
        {"OUTPUT": "/r/blocks.tif", "OUTPUT_POLYGONS": "/r/blocks.gpkg"},
    )
    assert values["trainsusceptibility"] == {
        "INPUT": "stack",
        "BLOCKS": "/r/blocks.tif",
        "INVENTORY": "inv",
    }
    values = workflow.chained_values(
        "predictsusceptibility", {}, {"OUTPUT": "/r/p.tif", "CLASSED": "/r/c.tif"}
    )
    assert values == {"evaluatesusceptibility": {"INPUT": "/r/p.tif", "CLASSED": "/r/c.tif"}}


def test_mapping_and_detection_chain_the_model() -> None:
    model = {"OUTPUT": "/m/trainmapping.safetensors"}
    assert workflow.chained_values("trainmapping", {}, model) == {
        "maplandslides": {"MODEL": "/m/trainmapping.safetensors"},
        "mapscenes": {"MODEL": "/m/trainmapping.safetensors"},
    }
    assert workflow.chained_values("traindetection", {}, {"OUTPUT": "/m/d.safetensors"}) == {
        "detectlandslides": {"MODEL": "/m/d.safetensors"}
    }


def test_map_many_scenes_follows_map_a_raster() -> None:
    """The batch step closes the Mapping tab and maps with the model the raster was mapped with."""
    assert [step.alg for step in workflow.steps_of("mapping")] == [
        "trainmapping",
        "maplandslides",
        "evaluatemapping",
        "mapscenes",
    ]
    assert workflow.workflow_of("mapscenes") == "mapping"
    values = workflow.chained_values(
        "maplandslides", {"INPUT": "img", "MODEL": "/m/a.safetensors"}, {"OUTPUT_PROBABILITY": "p"}
    )
    assert values["mapscenes"] == {"MODEL": "/m/a.safetensors"}
    shipped = workflow.chained_values("maplandslides", {"INPUT": "img"}, {})
    assert "mapscenes" not in shipped, "no MODEL: both steps map with the shipped model"
    assert workflow.EMPTY_MEANS[("mapscenes", "MODEL")] == "[the shipped landslide model]"


def test_map_many_scenes_writes_one_inventory_per_run(tmp_path: Path) -> None:
    run, models = tmp_path / "run", tmp_path / "models"
    slots = workflow.spec_outputs("mapscenes")
    assert slots is not None
    paths = workflow.default_outputs("mapscenes", slots, run, models, "s")
    assert paths == {
        "OUTPUT_FOLDER": str(run / "mapscenes_scenes"),
        "INVENTORY": str(run / "mapscenes_inventory.gpkg"),
    }
    # run again in the same run: the inventory is added to (scenes done are skipped)
    assert workflow.kept_output("mapscenes", "INVENTORY")
    assert workflow.kept_output("mapscenes", "OUTPUT_FOLDER")
    assert not workflow.kept_output("maplandslides", "OUTPUT_POLYGONS")
    # the inventory GeoPackage also holds the table of scenes: the polygons are shown
    inventory = paths["INVENTORY"]
    assert workflow.layer_source("mapscenes", "INVENTORY", inventory, {}) == (
        f"{inventory}|layername=landslide_inventory"
    )
    named = {"INVENTORY_LAYER": "monsoon_2024"}
    assert workflow.layer_source("mapscenes", "INVENTORY", inventory, named).endswith(
        "|layername=monsoon_2024"
    )
    polygons = str(run / "maplandslides_polygons.gpkg")
    assert workflow.layer_source("maplandslides", "OUTPUT_POLYGONS", polygons, named) == polygons
    presentation = workflow.PRESENTATIONS[("mapscenes", "INVENTORY")]
    assert presentation.qml == workflow.PRESENTATIONS[("maplandslides", "OUTPUT_POLYGONS")].qml


def test_map_many_scenes_starts_a_new_inventory_when_the_mapping_changes() -> None:
    """Same mapping, new scenes or workers: the same inventory; another threshold: a new one."""
    first = {"SCENE_FOLDER": "/a", "THRESHOLD": 0.5, "MODEL": None, "WORKERS": 1, "DEM": "NULL"}
    assert not workflow.keeps_outputs("mapscenes", None, first), "no earlier run"
    more_scenes = {**first, "SCENE_FOLDER": "/b", "WORKERS": 2, "SCHEDULER": "tcp://h:8786"}
    assert workflow.keeps_outputs("mapscenes", first, more_scenes)
    assert workflow.keeps_outputs("mapscenes", first, {**first, "MODEL": "", "DEM": None})
    for name, value in {"THRESHOLD": 0.4, "MODEL": "/m/b.safetensors", "MIN_AREA": 50}.items():
        assert not workflow.keeps_outputs("mapscenes", first, {**first, name: value}), name
    assert not workflow.keeps_outputs("maplandslides", first, first), "new files each run"


def test_models_go_to_a_persistent_folder(tmp_path: Path) -> None:
    assert workflow.models_folder(str(tmp_path), "/profile") == tmp_path / "slidewise_models"
    assert workflow.models_folder("", "/profile") == Path("/profile/slidewise/models")
    assert workflow.runs_folder(str(tmp_path), "/p") == tmp_path / "slidewise_runs"
    assert workflow.runs_folder("", "/p") == Path("/p/slidewise/runs")


def test_default_outputs_from_the_specs(tmp_path: Path) -> None:
    run, models = tmp_path / "run", tmp_path / "models"
    slots = workflow.spec_outputs("trainsusceptibility")
    paths = workflow.default_outputs("trainsusceptibility", slots, run, models, "20260101-000000")
    assert paths == {
        "OUTPUT": str(models / "trainsusceptibility_20260101-000000.safetensors"),
        "OUTPUT_REPORT": str(run / "trainsusceptibility_report.html"),  # the training report
    }
    slots = workflow.spec_outputs("predictsusceptibility")
    paths = workflow.default_outputs("predictsusceptibility", slots, run, models, "s")
    assert paths == {
        "OUTPUT": str(run / "predictsusceptibility.tif"),
        "CLASSED": str(run / "predictsusceptibility_classed.tif"),
        "UNCERTAINTY": str(run / "predictsusceptibility_uncertainty.tif"),
    }
    slots = workflow.spec_outputs("maplandslides")
    paths = workflow.default_outputs("maplandslides", slots, run, models, "s")
    assert paths["OUTPUT_POLYGONS"].endswith("maplandslides_polygons.gpkg")
    assert paths["OUTPUT_PROBABILITY"].endswith("maplandslides_probability.tif")
    slots = workflow.spec_outputs("evaluatemapping")
    paths = workflow.default_outputs("evaluatemapping", slots, run, models, "s")
    assert paths["OUTPUT_HTML"].endswith("evaluatemapping_report.html"), "the report is wanted"
    assert paths["OUTPUT"].endswith(".json")


def test_a_model_never_overwrites_an_earlier_one(tmp_path: Path) -> None:
    slot = [OutputSlot("OUTPUT", "output_file", "Slidewise model (*.safetensors)")]
    first = workflow.default_outputs("trainmapping", slot, tmp_path, tmp_path, "s")["OUTPUT"]
    Path(first).write_bytes(b"x")
    second = workflow.default_outputs("trainmapping", slot, tmp_path, tmp_path, "s")["OUTPUT"]
    assert second != first and second.endswith("_2.safetensors")


def test_skipped_and_optional_outputs_are_left_unset(tmp_path: Path) -> None:
    slots = [
        OutputSlot("OUTPUT", "output_file", "Slidewise model (*.safetensors)"),
        OutputSlot("CHECKPOINT", "output_file", "Checkpoint (*.pt)"),
        OutputSlot("EXTRA", "output_raster", "", by_default=False),
    ]
    paths = workflow.default_outputs("trainmapping", slots, tmp_path, tmp_path, "s")
    assert list(paths) == ["OUTPUT"]


def test_layers_keep_polygons_above_rasters() -> None:
    pres = workflow.PRESENTATIONS
    assert (
        pres[("maplandslides", "OUTPUT_POLYGONS")].rank
        > pres[("maplandslides", "OUTPUT_MASK")].rank
    )
    assert (
        pres[("maplandslides", "OUTPUT_MASK")].rank
        > pres[("maplandslides", "OUTPUT_PROBABILITY")].rank
    )
    assert (
        pres[("segmentblocks", "OUTPUT_POLYGONS")].rank
        > pres[("predictsusceptibility", "CLASSED")].rank
    )
    assert 0 < pres[("maplandslides", "OUTPUT_PROBABILITY")].opacity < 1
    assert 0 < pres[("predictsusceptibility", "OUTPUT")].opacity < 1
    assert ("segmentblocks", "OUTPUT") not in pres, "the block-ID raster is not put on top"
    for presentation in pres.values():
        assert (STYLES / presentation.qml).is_file(), presentation.qml


@pytest.mark.parametrize(
    ("ranks", "rank", "index"),
    [([], 10, 0), ([40, 20, 10], 30, 1), ([40, 20, 10], 0, 3), ([40, 20], 40, 0), ([10], 50, 0)],
)
def test_insert_index(ranks: list[int], rank: int, index: int) -> None:
    assert workflow.insert_index(ranks, rank) == index


def test_run_names_and_reports(tmp_path: Path) -> None:
    when = datetime(2026, 3, 12, 14, 15, 2)
    assert workflow.run_group_name(when) == "Slidewise run 14:15:02"
    assert workflow.run_stamp(when) == "20260312-141502"
    results = {"OUTPUT": str(tmp_path / "r.html"), "AUC": 0.8, "JSON": "x.json"}
    assert workflow.report_outputs("evaluatesusceptibility", results) == [str(tmp_path / "r.html")]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "r.html").write_text("<html/>")
    assert workflow.find_files(tmp_path, ".html") == [tmp_path / "a" / "r.html"]
    assert workflow.find_files(tmp_path / "missing", ".html") == []


def test_extent_polygon() -> None:
    wkt = workflow.extent_polygon_wkt(0.0, -720.0, 512.0, 0.0)
    assert wkt.startswith("POLYGON((0.0 -720.0, 512.0 -720.0")
    with pytest.raises(ValueError):
        workflow.extent_polygon_wkt(1.0, 0.0, 0.0, 1.0)


def test_workflow_module_has_no_qt() -> None:
    source = (REPO / "ui" / "panel" / "workflow.py").read_text(encoding="utf-8")
    assert "from qgis" not in source and "import qgis" not in source and "PyQt" not in source
