"""Desktop bugs of issue 11: styles from Python runs, a safe worker, ungeoreferenced images.

Each test here fails if its fix is undone (checked by hand when it was written).
"""

from __future__ import annotations

import gc
from pathlib import Path

from plugin_helpers import BIJIE, TEST_DATA, real_dem

STACK = TEST_DATA / "ecuador" / "ta.tif"


def _loaded(path: str):
    """The project layer loaded from ``path``."""
    from qgis.core import QgsProject

    layers = [
        layer
        for layer in QgsProject.instance().mapLayers().values()
        if layer.source().split("|")[0] == path
    ]
    assert len(layers) == 1, [
        layer.source() for layer in QgsProject.instance().mapLayers().values()
    ]
    return layers[0]


def test_run_and_load_results_styles_a_raster_output(qgis_app, tmp_path: Path) -> None:
    """processing.runAndLoadResults: the terrain factors come with terrain_factors.qml."""
    import processing
    from qgis.core import QgsProject

    out = str(tmp_path / "factors.tif")
    processing.runAndLoadResults(
        "slidewise:terrainfactors", {"INPUT": str(real_dem()), "OUTPUT": out}
    )
    gc.collect()
    layer = _loaded(out)
    renderer = layer.renderer()
    # Unstyled, QGIS draws a multi-band raster as RGB ("multibandcolor").
    assert renderer.type() == "singlebandpseudocolor"
    assert renderer.band() == 1
    QgsProject.instance().removeAllMapLayers()


def test_run_and_load_results_styles_a_vector_output(qgis_app, tmp_path: Path) -> None:
    """processing.runAndLoadResults: block polygons come with blocks.qml (hollow fill)."""
    import processing
    from qgis.core import QgsProject

    polygons = str(tmp_path / "blocks.gpkg")
    processing.runAndLoadResults(
        "slidewise:segmentblocks",
        {
            "INPUT": str(STACK),
            "N_BLOCKS": 16,
            "OUTPUT": str(tmp_path / "blocks.tif"),
            "OUTPUT_POLYGONS": polygons,
        },
    )
    gc.collect()
    layer = _loaded(polygons)
    symbol = layer.renderer().symbol()
    # blocks.qml: transparent fill, dark grey outline (QGIS would pick a random colour).
    assert symbol.symbolLayer(0).color().alpha() == 0
    assert symbol.symbolLayer(0).strokeColor().name() == "#37474f"
    QgsProject.instance().removeAllMapLayers()


STRAY = 'raise SystemExit("stray {name}.py from the working directory was imported")\n'


def test_stray_modules_in_the_working_directory_do_not_break_the_worker(
    engine_python: str, tmp_path: Path, monkeypatch
) -> None:
    """QGIS's current folder holds inspect.py and json.py: jobs still run.

    Relative paths in a job still mean the caller's working directory.
    """
    from slidewise.processing_provider import engine_client

    for name in ("inspect", "json", "typing", "enum"):
        (tmp_path / f"{name}.py").write_text(STRAY.format(name=name))
    monkeypatch.chdir(tmp_path)
    outcome = engine_client.run_job(
        "sleep", {"OUTPUT": "slow.txt", "SECONDS": 0.1}, python=engine_python
    )
    assert outcome.outputs == {"OUTPUT": "slow.txt"}
    assert (tmp_path / "slow.txt").is_file()
    factors = engine_client.run_job(
        "terrainfactors",
        {"INPUT": str(real_dem()), "OUTPUT": "factors.tif"},
        python=engine_python,
    )
    assert (tmp_path / "factors.tif").is_file(), factors.log


def test_outputs_of_a_png_overlay_it_in_qgis(trained, qgis_app, tmp_path: Path) -> None:
    """Map landslides on a Bijie PNG: QGIS puts the outputs exactly on the image."""
    import processing
    from qgis.core import QgsRasterLayer, QgsVectorLayer

    png = BIJIE / "test" / "images" / "10105.png"
    mapped = processing.run(
        "slidewise:maplandslides",
        {
            "INPUT": str(png),
            "MODEL": trained["result"]["OUTPUT"],
            "THRESHOLD": 0.0,
            "OUTPUT_PROBABILITY": str(tmp_path / "prob.tif"),
            "OUTPUT_MASK": str(tmp_path / "mask.tif"),
            "OUTPUT_POLYGONS": str(tmp_path / "slides.gpkg"),
        },
    )
    image = QgsRasterLayer(str(png)).extent()
    assert image.toString(1) == "0.0,-720.0 : 512.0,0.0"
    for name in ("OUTPUT_PROBABILITY", "OUTPUT_MASK"):
        assert QgsRasterLayer(mapped[name]).extent() == image, name
    # THRESHOLD 0: one polygon covering the whole image.
    assert QgsVectorLayer(mapped["OUTPUT_POLYGONS"]).extent() == image


def _algorithm(name: str):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().createAlgorithmById(f"slidewise:{name}")
    assert alg is not None, name
    return alg


def test_method_choice_shows_plain_names_and_sends_the_words(qgis_app) -> None:
    from qgis.core import QgsProcessingContext

    from slidewise.contract.specs.trainsusceptibility import METHODS, SPEC
    from slidewise.processing_provider.algorithms.spec_parameters import job_values

    alg = _algorithm("trainsusceptibility")
    options = alg.parameterDefinition("METHOD").options()
    assert options == [
        "Block-wise meta-learning (MAML)",
        "Random forest",
        "Logistic regression",
        "Neural network (MLP)",
        "Frequency ratio",
        "Support vector machine (RBF)",
        "Gradient boosting",
        "Block-wise hybrid: meta-learning + a global model, corrected per block",
        "Automatic: the best by leave-blocks-out cross-validation",
    ]
    method = next(p for p in SPEC.params if p.name == "METHOD")
    context = QgsProcessingContext()
    for index, word in enumerate(METHODS):
        assert job_values(alg, [method], {"METHOD": index}, context) == {"METHOD": word}


#: Every choice of these algorithms reads as words in the dialog, not as codes.
LABELLED = {
    "trainsusceptibility": ["METHOD"],
    "predictsusceptibility": ["CLASSIFICATION"],
    "evaluatesusceptibility": ["CLASSIFICATION"],
    "evaluatemapping": ["REFERENCE_KIND"],
    "terrainfactors": ["GEOGRAPHIC"],
}


def test_choices_show_plain_labels(qgis_app) -> None:
    for name, params in LABELLED.items():
        alg = _algorithm(name)
        for param in params:
            options = alg.parameterDefinition(param).options()
            assert all(option[0].isupper() for option in options), (name, param, options)
            assert not any("_" in option for option in options), (name, param, options)
    train = _algorithm("trainsusceptibility")
    device = train.parameterDefinition("DEVICE").options()
    assert device == ["Automatic", "CPU", "NVIDIA GPU (CUDA)", "Apple GPU (MPS)"]


def test_train_susceptibility_says_which_inputs_are_alternatives(qgis_app) -> None:
    alg = _algorithm("trainsusceptibility")
    label = {p.name(): p.description() for p in alg.parameterDefinitions()}
    assert label["INPUT"] == "Factor stack (or single factor rasters below)"
    assert label["FACTORS"] == "Single factor rasters (instead of a factor stack)"
    assert label["INVENTORY"] == "Landslide inventory (or a sample table below)"
    assert label["TABLE"] == "Sample table (instead of stack and inventory)"
    help_text = alg.shortHelpString()
    assert "Needed: a factor stack (or single factor rasters instead) and a landslide" in (
        help_text
    )
    assert "every other input is optional" in help_text


def test_buffer_is_in_map_units(qgis_app) -> None:
    """The engine reads BUFFER in the units of the factor stack's CRS."""
    for name in ("trainsusceptibility", "samplefactors", "segmentblocks", "evaluatesusceptibility"):
        alg = _algorithm(name)
        buffer = alg.parameterDefinition("BUFFER")
        assert buffer.description() == "Buffer around landslides (map units)", name
        assert "Unit: map units." in buffer.help(), name
