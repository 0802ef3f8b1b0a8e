"""One prediction window for a model that standardises each tile (issue 16).

A ``resunet`` with ``input_norm: "tile"`` answers differently on a 64-px chip and
on a whole image. Its validation (epoch, calibration, threshold), *Map landslides*
and the accuracy benchmark must see the same probabilities, or the stored threshold
is chosen on statistics it is never applied to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from engine_helpers import job_context
from PIL import Image
from rasterio.transform import from_origin

from slidewise.engine.core.modelfile import read_metadata
from slidewise.engine.imagery.chips import ChipDataset, make_chips
from slidewise.engine.imagery.labels import IGNORE, LabelMapping
from slidewise.engine.imagery.scenes import PairScene
from slidewise.engine.imagery.segmodels import SegModelConfig, build_model, save_mapping_model
from slidewise.engine.imagery.tiling import STANDARDISED_TILE, default_tile_size
from slidewise.engine.mapping.apply import run_map
from slidewise.engine.mapping.validation import validation_outputs, validation_tiling

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NORM = {"kind": "fit", "mean": [110.0, 100.0, 90.0], "std": [40.0, 35.0, 30.0]}
TILE_NORM = {"widths": [4, 8, 16], "residual": False, "deep_supervision": False}


def _pair(folder: Path, name: str, seed: int, shape: tuple[int, int] = (150, 170)) -> Path:
    """An RGB picture with a bright blob on a darker gradient, and its 0/255 mask."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    blob = (rows - 60 - 10 * seed) ** 2 + (cols - 90) ** 2 < 30**2
    base = 60 + 0.4 * rows[..., None] + rng.normal(0, 12, (*shape, 3))
    rgb = np.clip(base + 90 * blob[..., None], 0, 255).astype(np.uint8)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(folder / "images" / f"{name}.png")
    Image.fromarray((blob * 255).astype(np.uint8)).save(folder / "masks" / f"{name}.png")
    return folder / "images" / f"{name}.png"


def _tile_model(tmp_path: Path) -> tuple[torch.nn.Module, SegModelConfig, str]:
    torch.manual_seed(0)
    config = SegModelConfig("resunet", "", 3, extra={**TILE_NORM, "input_norm": "tile"})
    model = build_model(config).eval()
    with torch.no_grad():  # a random net's scores barely vary: spread them like a trained one
        model.head.weight.mul_(40.0)
    tiling = validation_tiling(config, "cpu")
    assert tiling is not None
    path = str(tmp_path / "tile.safetensors")
    extra = {"band_indices": [1, 2, 3], "threshold": 0.5, "predict_window": tiling.tile}
    bands = ["red", "green", "blue"]
    save_mapping_model(path, model, config, bands, NORM, tile_size=64, extra=extra)
    return model, config, path


def _mapped(tmp_path: Path, image: Path, model_path: str) -> np.ndarray:
    """What *Map landslides* writes for ``image`` (as a GeoTIFF) with its default tiles."""
    rgb = np.moveaxis(np.asarray(Image.open(image)), -1, 0)
    raster = str(tmp_path / f"{image.stem}.tif")
    rows, cols = rgb.shape[1:]
    profile = {"driver": "GTiff", "width": cols, "height": rows, "count": 3, "dtype": "uint8"}
    with rasterio.open(raster, "w", **profile, transform=from_origin(0, rows, 1, 1)) as dst:
        dst.write(rgb)
    out = str(tmp_path / f"{image.stem}-prob.tif")
    run_map({"INPUT": raster, "MODEL": model_path, "OUTPUT_PROBABILITY": out}, job_context("m")[0])
    with rasterio.open(out) as src:
        return src.read(1)


def test_validation_sees_the_probabilities_maplandslides_writes(tmp_path):
    """Validation's probabilities of a tile-standardised model are the mapping job's."""
    model, config, path = _tile_model(tmp_path)
    image = _pair(tmp_path, "a", 0)
    scene = PairScene(image, tmp_path / "masks" / "a.png", LabelMapping())
    chips = make_chips([scene], 64, 64, exclusive=True)
    data = ChipDataset([scene], chips, [0, 1, 2], NORM, 64)
    cpu = torch.device("cpu")

    tiled = list(validation_outputs(model, data, 4, cpu, validation_tiling(config, cpu)))
    assert len(tiled) == 1  # one validation scene, predicted as a whole
    logits, labels = tiled[0]
    assert labels.shape == (1, 150, 170) and not (labels == IGNORE).any()
    validated = torch.sigmoid(logits[0]).numpy()

    mapped = _mapped(tmp_path, image, path)
    np.testing.assert_allclose(validated, mapped, atol=1e-4)

    # Chip by chip (the training chips' statistics) the same model answers otherwise:
    # what the threshold used to be chosen on.
    chip_logits = torch.cat([z for z, _ in validation_outputs(model, data, 4, cpu, None)])
    by_chip = np.full((150, 170), np.nan, np.float32)
    for c, z in zip(chips, chip_logits, strict=True):
        by_chip[c.row : c.row + c.height, c.col : c.col + c.width] = torch.sigmoid(z).numpy()
    assert np.nanmax(np.abs(by_chip - mapped)) > 0.05


def test_the_window_is_stored_and_does_not_depend_on_the_device(tmp_path):
    """Training stores the validation tile; mapping takes it on a CPU, a GPU or an export."""
    from slidewise.engine.mapping.train import run_train

    for k in range(3):
        _pair(tmp_path / "data", f"p{k}", k)
    out = tmp_path / "default.safetensors"
    params = {
        "DATASET_TYPE": "pairs",
        "TRAIN_IMAGES": str(tmp_path / "data" / "images"),
        "TRAIN_MASKS": str(tmp_path / "data" / "masks"),
        "RECIPE": "default",
        "MODEL_OPTIONS": '{"widths": [4, 8, 16]}',
        "EPOCHS": 1,
        "BATCH_SIZE": 2,
        "CHIPS_PER_EPOCH": 2,
        "CHIP_SIZE": 64,
        "OUTPUT": str(out),
    }
    run_train(params, job_context("trainmapping")[0])
    meta = read_metadata(out)
    assert meta.config["extra"]["input_norm"] == "tile"
    window = meta.extra["predict_window"]
    assert window == STANDARDISED_TILE
    assert window == validation_tiling(meta.config, "cpu").tile  # type: ignore[union-attr]
    for device in ("cpu", "cuda", None):
        assert default_tile_size(meta, device) == window
    meta.extra.pop("predict_window")  # a file written before the window was stored
    assert default_tile_size(meta, "cuda") == STANDARDISED_TILE
    meta.config["extra"]["input_norm"] = "none"  # not tile-standardised: free again
    assert validation_tiling(meta.config, "cpu") is None
    assert default_tile_size(meta, "cuda") != default_tile_size(meta, "cpu")


def test_the_benchmark_scores_what_maplandslides_maps(tmp_path):
    """``evaluate_pairs`` counts the pixels of the mapping job's probabilities."""
    from slidewise.bench.mapping_accuracy import evaluate_pairs
    from slidewise.engine.imagery.segmetrics import Confusion

    path = _tile_model(tmp_path)[2]
    image = _pair(tmp_path, "b", 1)
    mask = tmp_path / "masks" / "b.png"
    threshold = 0.3
    figures = evaluate_pairs(Path(path), [(image, mask)], 1.0, threshold=threshold)

    mapped = _mapped(tmp_path, image, path)
    truth = np.asarray(Image.open(mask)) > 0
    expected = Confusion()
    expected.update(mapped >= threshold, truth, np.ones_like(truth))
    assert figures["f1"] == pytest.approx(expected.f1, abs=2e-3)
    assert figures["precision"] == pytest.approx(expected.precision, abs=2e-3)

    # Another TILE_SIZE changes what the model sees: the job says so.
    ctx, stream = job_context("maplandslides")
    params = {"INPUT": str(tmp_path / "b.tif"), "MODEL": path, "TILE_SIZE": 96}
    run_map({**params, "OUTPUT_MASK": str(tmp_path / "m.tif")}, ctx)
    assert "TILE_SIZE 96 changes its probabilities" in stream.getvalue()
