"""Bad inputs, one table per algorithm family: each row is refused with a message that
names the problem and the fix, and nothing is written.

To add a case, add a :class:`Row` to the family's table: the parameters (string values
may name the files of the ``files`` fixture as ``{name}``, for example ``{out}/m.tif``),
a fragment of the expected message, and the kind of error. The runner checks the
message and that no file appeared in the output folder or beside the inputs.

Real files: ``tests/data`` (Bijie pairs, the Ecuador rasters); rasters derived from them
(all nodata, a damaged model copy) are written in a temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from engine_helpers import REPO, job_context
from PIL import Image

from slidewise.engine.core.errors import EngineError, InputError, ModelFileError
from slidewise.engine.core.job import JobResult
from slidewise.engine.core.params import INPUT_KINDS
from slidewise.engine.jobs import resolve

DATA = REPO / "tests" / "data"
BIJIE_TRAIN = DATA / "bijie" / "train"
ECUADOR = DATA / "ecuador"
PAIR = "10009.png"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass(frozen=True)
class Row:
    """One bad input: ``params`` of the job are refused with ``fragment`` in the message."""

    case: str
    params: dict[str, Any]
    fragment: str
    error: type[EngineError] = InputError
    also: tuple[str, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------- tables

TRAINMAPPING = [
    Row(
        "MASK_COLOR present in no mask",
        {
            "DATASET_TYPE": "pairs",
            "TRAIN_IMAGES": "{bijie_images}",
            "TRAIN_MASKS": "{bijie_masks}",
            "MASK_COLOR": "1,2,3",
            "EPOCHS": 1,
            "OUTPUT": "{out}/model.safetensors",
        },
        "There is no pixel of colour 1,2,3 in any training mask: check MASK_COLOR",
        also=("colours found: 0,0,0; 255,255,0",),
    ),
    Row(
        "a file of the image folder that is not an image",
        {
            "DATASET_TYPE": "pairs",
            "TRAIN_IMAGES": "{text_images}",
            "TRAIN_MASKS": "{text_masks}",
            "MASK_COLOR": "255,255,0",
            "EPOCHS": 1,
            "OUTPUT": "{out}/model.safetensors",
        },
        "The image 'zz.png' in",
        also=("it is not an image", "move other files out of it"),
    ),
    Row(
        "RESUME from a checkpoint with 40 bytes of its tensors flipped",
        {
            "DATASET_TYPE": "pairs",
            "TRAIN_IMAGES": "{bijie_images}",
            "TRAIN_MASKS": "{bijie_masks}",
            "MASK_COLOR": "255,255,0",
            "EPOCHS": 2,
            "CHECKPOINT": "{damaged_checkpoint}",
            "RESUME": True,
            "OUTPUT": "{out}/model.safetensors",
        },
        "The checkpoint 'damaged_checkpoint.safetensors' is damaged",
        error=ModelFileError,
        also=("Training cannot resume from it", "delete it and train again with RESUME=false"),
    ),
]

EVALUATEMAPPING = [
    Row(
        "LANDSLIDE_VALUES absent from the reference",
        {
            "INPUT": "{bijie_image}",
            "REFERENCE": "{bijie_mask}",
            "LANDSLIDE_VALUES": "7",
            "OUTPUT": "{out}/figures.json",
        },
        "has a value in LANDSLIDE_VALUES (7) where the map has data",
        also=("check LANDSLIDE_VALUES", "values found in the reference: 0, 255"),
    ),
    Row(
        "reference raster on another grid, without a CRS",
        {
            "INPUT": "{rgb}",
            "REFERENCE": "{bijie_mask}",
            "LANDSLIDE_VALUES": "255",
            "OUTPUT": "{out}/figures.json",
        },
        "The reference raster '10009.png' cannot be aligned with the grid of the map 'rgb.tif'",
        also=("Assign one",),
    ),
    Row(
        "OUTPUT on the reference",
        {"INPUT": "{bijie_image}", "REFERENCE": "{mask_copy}", "OUTPUT": "{mask_copy}"},
        "OUTPUT is the input REFERENCE",
        also=("Choose another file name for OUTPUT",),
    ),
]

ADDREGION = [
    Row(
        "OUTPUT equal to the input MODEL",
        {
            "REGION": "b",
            "MODEL": "{model}",
            "DATASET_TYPE": "pairs",
            "TRAIN_IMAGES": "{bijie_images}",
            "TRAIN_MASKS": "{bijie_masks}",
            "OUTPUT": "{model}",
        },
        "OUTPUT is the input MODEL",
        also=("never overwrites its own input", "Choose another file name for OUTPUT"),
    ),
]

MAPLANDSLIDES = [
    Row(
        "all-nodata raster",
        {"INPUT": "{nodata_rgb}", "MODEL": "{model}", "OUTPUT_MASK": "{out}/mask.tif"},
        "has no valid pixel (bands 1, 2, 3 are nodata everywhere): nothing to map",
        also=("Check the raster's nodata value",),
    ),
    Row(
        "model with 100 bytes of its weights flipped",
        {"INPUT": "{rgb}", "MODEL": "{damaged_model}", "OUTPUT_MASK": "{out}/mask.tif"},
        "is damaged: its weights do not match the checksum",
        error=ModelFileError,
        also=("train the model again",),
    ),
    Row(
        "output on the input raster",
        {"INPUT": "{rgb}", "MODEL": "{model}", "OUTPUT_PROBABILITY": "{rgb}"},
        "OUTPUT_PROBABILITY is the input INPUT",
    ),
    Row(
        "DEM that does not exist",
        {
            "INPUT": "{rgb}",
            "MODEL": "{model}",
            "DEM": "{out}/dem.tif",
            "OUTPUT_POLYGONS": "{out}/p.gpkg",
        },
        "dem.tif' does not exist: check the path",
        also=("The DEM '",),
    ),
]

DETECTLANDSLIDES = [
    Row(
        "all-nodata raster, mapping model",
        {
            "SOURCE": "segmentation",
            "INPUT": "{nodata_rgb}",
            "MODEL": "{model}",
            "OUTPUT": "{out}/boxes.gpkg",
        },
        "has no valid pixel (bands 1, 2, 3 are nodata everywhere): nothing to detect",
    ),
    Row(
        "all-nodata probability raster",
        {"SOURCE": "segmentation", "PROBABILITY": "{nodata_prob}", "OUTPUT": "{out}/b.gpkg"},
        "The probability raster 'nodata_prob.tif' has no valid pixel",
    ),
]

PREDICTSUSCEPTIBILITY = [
    Row(
        "all-nodata factor stack",
        {"MODEL": "{susceptibility_model}", "INPUT": "{nodata_ta}", "OUTPUT": "{out}/p.tif"},
        "no pixel where every factor has a value (all nodata): nothing to predict",
    ),
    Row(
        "OUTPUT on a factor raster",
        {"MODEL": "{model}", "INPUT": "{ta_copy}", "OUTPUT": "{ta_copy}"},
        "OUTPUT is the input INPUT",
    ),
]

SEGMENTBLOCKS = [
    Row(
        "N_BLOCKS beyond what the stack's pixels can hold",
        {"INPUT": "{ta_copy}", "N_BLOCKS": 100_000, "OUTPUT": "{out}/blocks.tif"},
        "N_BLOCKS 100000 is more than this factor stack can hold: its segmentation grid of "
        "383 x 415 pixels allows at most 9934 blocks",
        also=("Set N_BLOCKS to 9934 or fewer (0: 256)",),
    ),
]

TABLES = {
    "trainmapping": TRAINMAPPING,
    "evaluatemapping": EVALUATEMAPPING,
    "addregion": ADDREGION,
    "maplandslides": MAPLANDSLIDES,
    "detectlandslides": DETECTLANDSLIDES,
    "predictsusceptibility": PREDICTSUSCEPTIBILITY,
    "segmentblocks": SEGMENTBLOCKS,
}
CASES = [
    pytest.param(job, row, id=f"{job}: {row.case}") for job, rows in TABLES.items() for row in rows
]


# --------------------------------------------------------------------------- files


def _write_geotiff(path: Path, data: np.ndarray, nodata: float | None) -> str:
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": str(data.dtype),
        "crs": "EPSG:32717",
        "transform": rasterio.transform.from_origin(700000, 9560000, 10, 10),
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return str(path)


def _mapping_model(path: Path) -> str:
    import torch

    from slidewise.engine.imagery.segmodels import SegModelConfig, build_model, save_mapping_model

    torch.manual_seed(0)
    config = SegModelConfig(architecture="linknet", encoder="mobilenet_v2", in_channels=3)
    norm = {"kind": "fit", "mean": [100.0] * 3, "std": [50.0] * 3}
    model = build_model(config).eval()
    save_mapping_model(path, model, config, ["red", "green", "blue"], norm, tile_size=128)
    return str(path)


def _nodata_like(source: Path, target: Path) -> str:
    """A raster on the grid of ``source``, same band names, NaN everywhere."""
    with rasterio.open(source) as src:
        profile = {**src.profile, "dtype": "float32", "nodata": None}
        names = src.descriptions
    with rasterio.open(target, "w", **profile) as dst:
        dst.write(np.full((profile["count"], profile["height"], profile["width"]), np.nan, "f4"))
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name or "")
    return str(target)


def _susceptibility_model(path: Path) -> str:
    run = resolve("trainsusceptibility")
    params = {
        "INPUT": str(ECUADOR / "ta.tif"),
        "INVENTORY": str(ECUADOR / "lsl.csv"),
        "LABEL_FIELD": "lslpts",
        "METHOD": "lr",
        "N_BLOCKS": 8,
        "CV_FOLDS": 0,
        "OUTPUT": str(path),
    }
    run(params, job_context("trainsusceptibility")[0])
    return str(path)


def flip_tensor_bytes(source: Path, target: Path, count: int = 100) -> Path:
    """A copy of a model file with ``count`` bytes of its tensor data inverted (header intact)."""
    data = bytearray(source.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    middle = start + (len(data) - start) // 2
    for k in range(middle, middle + count):
        data[k] ^= 0xFF
    target.write_bytes(bytes(data))
    return target


def _checkpoint(path: Path) -> str:
    """A real (small) checkpoint: weights, optimiser state and random state."""
    import torch

    from slidewise.engine.mapping.checkpoints import save_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 1, 3)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.rand(1, 3, 8, 8)).mean().backward()
    optimizer.step()
    save_checkpoint(path, model, None, optimizer, torch.Generator(), {"epoch": 1})
    return str(path)


def _text_image_folder(base: Path) -> tuple[str, str]:
    """An image/mask folder pair of one real pair and a text file named like an image."""
    images, masks = base / "text_images", base / "text_masks"
    images.mkdir()
    masks.mkdir()
    shutil.copy(BIJIE_TRAIN / "images" / PAIR, images)
    shutil.copy(BIJIE_TRAIN / "masks" / PAIR, masks)
    (images / "zz.png").write_text("notes on the field trip, saved as .png\n")
    shutil.copy(BIJIE_TRAIN / "masks" / PAIR, masks / "zz.png")
    return str(images), str(masks)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The inputs the tables name, by name."""
    base = tmp_path_factory.mktemp("inputs")
    rgb = np.moveaxis(np.asarray(Image.open(BIJIE_TRAIN / "images" / PAIR))[..., :3], -1, 0)
    mask = np.asarray(Image.open(BIJIE_TRAIN / "masks" / PAIR))[None, ..., 0]
    model = _mapping_model(base / "model.safetensors")
    checkpoint = Path(_checkpoint(base / "checkpoint.safetensors"))
    text_images, text_masks = _text_image_folder(base)
    return {
        "text_images": text_images,
        "text_masks": text_masks,
        "checkpoint": str(checkpoint),
        "damaged_checkpoint": str(
            flip_tensor_bytes(checkpoint, base / "damaged_checkpoint.safetensors", count=40)
        ),
        "bijie_images": str(BIJIE_TRAIN / "images"),
        "bijie_masks": str(BIJIE_TRAIN / "masks"),
        "bijie_image": str(BIJIE_TRAIN / "images" / PAIR),
        "bijie_mask": str(BIJIE_TRAIN / "masks" / PAIR),
        "rgb": _write_geotiff(base / "rgb.tif", np.ascontiguousarray(rgb), None),
        "nodata_rgb": _write_geotiff(base / "nodata_rgb.tif", np.zeros_like(rgb), 0),
        "nodata_prob": _write_geotiff(
            base / "nodata_prob.tif", np.full((1, 64, 64), np.nan, np.float32), None
        ),
        "reference": _write_geotiff(base / "reference.tif", np.ascontiguousarray(mask), None),
        "model": model,
        "damaged_model": str(flip_tensor_bytes(Path(model), base / "damaged.safetensors")),
        "nodata_ta": _nodata_like(ECUADOR / "ta.tif", base / "nodata_ta.tif"),
        "susceptibility_model": _susceptibility_model(base / "susceptibility.safetensors"),
        "ta_copy": shutil.copy(ECUADOR / "ta.tif", str(base / "ta.tif")),
        "mask_copy": shutil.copy(BIJIE_TRAIN / "masks" / PAIR, str(base / "mask.png")),
    }


def _fill(value: Any, names: dict[str, str]) -> Any:
    return value.format(**names) if isinstance(value, str) else value


def _listing(folders: list[Path]) -> dict[Path, set[str]]:
    return {f: {p.name for p in f.iterdir()} for f in folders if f.is_dir()}


def expect_refused(
    run: Callable[[dict[str, Any], Any], JobResult], job: str, params: dict[str, Any], row: Row
) -> str:
    """Run the job; it must raise ``row.error`` with the fragments and write nothing."""
    paths = [Path(v) for v in params.values() if isinstance(v, str) and os.sep in v]
    watched = sorted({p if p.is_dir() else p.parent for p in paths})
    before = _listing(watched)
    ctx, _ = job_context(job)
    with pytest.raises(EngineError) as info:
        run(params, ctx)
    message = str(info.value)
    assert isinstance(info.value, row.error), message
    for fragment in (row.fragment, *row.also):
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert _listing(watched) == before, "a refused job wrote a file"
    return message


@pytest.mark.parametrize(("job", "row"), CASES)
def test_bad_input_is_refused(job: str, row: Row, files: dict[str, str], tmp_path: Path) -> None:
    names = {**files, "out": str(tmp_path)}
    params = {k: _fill(v, names) for k, v in row.params.items()}
    expect_refused(resolve(job), job, params, row)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- model files


def test_damaged_model_file_is_refused_on_load(files: dict[str, str]) -> None:
    from slidewise.engine.core.modelfile import load_model

    assert load_model(files["model"], task="mapping")[1].architecture == "linknet"
    with pytest.raises(ModelFileError, match=r"'damaged.safetensors' is damaged"):
        load_model(files["damaged_model"], task="mapping")


def test_model_file_without_checksum_loads_with_a_note(
    files: dict[str, str], tmp_path: Path
) -> None:
    """A file written before checksums (no checksum key) loads, with one note."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from slidewise.engine.core.modelfile import (
        CHECKSUM_KEY,
        METADATA_KEY,
        ModelFileNote,
        load_model,
    )

    with safe_open(files["model"], framework="pt") as handle:
        header = handle.metadata()
    assert len(header[CHECKSUM_KEY]) == 64
    old = tmp_path / "old.safetensors"
    save_file(load_file(files["model"]), str(old), metadata={METADATA_KEY: header[METADATA_KEY]})
    with pytest.warns(ModelFileNote, match=r"'old.safetensors' has no checksum") as notes:
        tensors, meta = load_model(old, task="mapping")
    assert len(notes) == 1 and meta.architecture == "linknet" and tensors


def test_damaged_checkpoint_is_refused_and_a_good_one_loads(files: dict[str, str]) -> None:
    from slidewise.contract.checkpoints import checkpoint_epochs
    from slidewise.engine.mapping.checkpoints import load_checkpoint

    tensors, meta = load_checkpoint(files["checkpoint"])
    assert meta["epoch"] == 1 and "optim.0.exp_avg" in tensors
    assert checkpoint_epochs(files["checkpoint"]) == 1  # what the plugin reads, stdlib only
    assert checkpoint_epochs(files["model"]) is None
    with pytest.raises(ModelFileError, match=r"'damaged_checkpoint.safetensors' is damaged"):
        load_checkpoint(files["damaged_checkpoint"])


def test_checkpoint_without_checksum_resumes_with_a_note(
    files: dict[str, str], tmp_path: Path
) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from slidewise.contract.checkpoints import CHECKPOINT_KEY
    from slidewise.engine.core.modelfile import ModelFileNote
    from slidewise.engine.mapping.checkpoints import load_checkpoint

    with safe_open(files["checkpoint"], framework="pt") as handle:
        header = handle.metadata()
    old = tmp_path / "old.safetensors"
    save_file(load_file(files["checkpoint"]), str(old), {CHECKPOINT_KEY: header[CHECKPOINT_KEY]})
    with pytest.warns(ModelFileNote, match=r"'old.safetensors' has no checksum") as notes:
        assert load_checkpoint(old)[1]["epoch"] == 1
    assert len(notes) == 1


# --------------------------------------------------------------------------- what a job says


def test_segmentblocks_says_what_n_blocks_0_means(tmp_path: Path) -> None:
    """N_BLOCKS=0 is the default count (256), and the log says so."""
    from engine_helpers import log_messages

    crop = tmp_path / "ta_crop.tif"
    with rasterio.open(ECUADOR / "ta.tif") as src:
        window = rasterio.windows.Window(0, 0, 120, 120)
        profile = {**src.profile, "width": 120, "height": 120}
        profile["transform"] = src.window_transform(window)
        with rasterio.open(crop, "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.descriptions = src.descriptions
    ctx, stream = job_context("segmentblocks")
    params = {"INPUT": str(crop), "N_BLOCKS": 0, "OUTPUT": str(tmp_path / "b.tif")}
    result = resolve("segmentblocks")(params, ctx)
    assert "N_BLOCKS is 0: 256 blocks asked of SLIC (the default)." in log_messages(stream)
    assert 128 <= result.figures["n_blocks"] <= 512


def test_samplefactors_warns_of_points_merged_in_one_pixel(tmp_path: Path) -> None:
    """Points in one pixel are merged, with a warning that counts them: the real table
    has one such pair (the issue's case), plus three landslides copied 1 m away."""
    from engine_helpers import log_messages

    lines = (ECUADOR / "lsl.csv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    slides = [r.split(",") for r in rows if r.split(",")[2] == "1"][:3]
    copies = [",".join([str(float(r[0]) + 1.0), *r[1:]]) for r in slides]
    table = tmp_path / "lsl_close.csv"
    table.write_text("\n".join([header, *rows, *copies]) + "\n")
    ctx, stream = job_context("samplefactors")
    params = {
        "INPUT": str(ECUADOR / "ta.tif"),
        "INVENTORY": str(table),
        "LABEL_FIELD": "lslpts",
        "OUTPUT": str(tmp_path / "samples.csv"),
    }
    result = resolve("samplefactors")(params, ctx)
    expected = f"4 of {len(rows) + 3} samples of 'lsl_close.csv' fall on a pixel already sampled"
    assert any(expected in m for m in log_messages(stream)), log_messages(stream)
    assert result.figures["counts"]["inventory_merged"] == 4


# --------------------------------------------------------------------------- side files

WORKER = [sys.executable, "-m", "slidewise.engine.worker"]


def _worker(job: dict[str, Any], folder: Path) -> tuple[int, str, str]:
    job_path = folder / "job.json"
    job_path.write_text(json.dumps(job))
    env = {**os.environ, "PYTHONPATH": str(REPO.parent)}
    env.pop("GDAL_PAM_ENABLED", None)
    proc = subprocess.run(
        [*WORKER, str(job_path)], capture_output=True, text=True, timeout=300, env=env
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("read_only", [False, True], ids=["writable", "read-only"])
def test_no_side_file_beside_inputs(files: dict[str, str], tmp_path: Path, read_only: bool) -> None:
    """A real mapping and evaluation leave the input folder as it was; GDAL says nothing."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("rgb", "model", "reference"):
        shutil.copy(files[name], inputs)
    before = sorted(p.name for p in inputs.iterdir())
    out = tmp_path / "out"
    out.mkdir()
    if read_only:
        inputs.chmod(0o555)
    try:
        jobs = [
            {
                "job": "maplandslides",
                "params": {
                    "INPUT": str(inputs / "rgb.tif"),
                    "MODEL": str(inputs / "model.safetensors"),
                    "OUTPUT_PROBABILITY": str(out / "p.tif"),
                },
            },
            {
                "job": "evaluatemapping",
                "params": {
                    "INPUT": str(out / "p.tif"),
                    "REFERENCE": str(inputs / "reference.tif"),
                    "LANDSLIDE_VALUES": "255",
                    "OUTPUT": str(out / "e.json"),
                },
            },
        ]
        for job in jobs:
            code, stdout, stderr = _worker(job, tmp_path)
            assert code == 0, stdout + stderr
            assert sorted(p.name for p in inputs.iterdir()) == before
            text = (stdout + stderr).lower()
            for word in ("aux.xml", "auxiliary", "warning 1:", "error 1:"):
                assert word not in text, f"{word!r} in the worker's output:\n{stdout}{stderr}"
    finally:
        inputs.chmod(0o755)
    assert (out / "p.tif").is_file() and (out / "e.json").is_file()


# --------------------------------------------------------------------------- outputs on inputs

FILE_INPUT_KINDS = INPUT_KINDS
FILE_OUTPUT_KINDS = ("output_raster", "output_vector", "output_file")


def _output_on_input_cases() -> list[Any]:
    """Every (output, input) pair of files of every engine job: one row each."""
    from slidewise.contract.specs import RUNS_IN_QGIS, SPEC_MODULES, spec_of

    cases = []
    for job in sorted(set(SPEC_MODULES) - RUNS_IN_QGIS):
        spec = spec_of(job)
        inputs = [p.name for p in spec.params if p.kind in FILE_INPUT_KINDS]
        outputs = [p.name for p in spec.params if p.kind in FILE_OUTPUT_KINDS]
        cases += [
            pytest.param(job, out, inp, id=f"{job}: {out} on {inp}")
            for out in outputs
            for inp in inputs
        ]
    return cases


def _required_filler(job: str, skip: set[str], tmp_path: Path) -> dict[str, Any]:
    """Values for the job's other required parameters (a real file, a folder, a word)."""
    from slidewise.contract.specs import spec_of

    filler: dict[str, Any] = {}
    for param in spec_of(job).params:
        if not param.required or param.name in skip:
            continue
        if param.kind in FILE_INPUT_KINDS:
            filler[param.name] = str(ECUADOR / "ta.tif")
        elif param.kind == "folder":
            filler[param.name] = str(BIJIE_TRAIN / "images")
        elif param.kind in FILE_OUTPUT_KINDS or param.kind == "output_folder":
            filler[param.name] = str(tmp_path / "other" / param.name.lower())
        else:
            filler[param.name] = "a"
    return filler


@pytest.mark.parametrize(("job", "output", "source"), _output_on_input_cases())
def test_no_output_overwrites_an_input_of_the_run(
    job: str, output: str, source: str, tmp_path: Path
) -> None:
    """Each output of each job, set to the path of each of its file inputs, is refused
    before anything is read or written, and the input file keeps its bytes."""
    from slidewise.contract.specs import spec_of

    victim = Path(shutil.copy(ECUADOR / "ta.tif", tmp_path / "input.tif"))
    before = victim.read_bytes()
    value: Any = [str(victim)] if spec_of(job)[source].kind == "rasters" else str(victim)
    params = {**_required_filler(job, {output, source}, tmp_path), source: value}
    params[output] = str(victim)
    row = Row("output on input", params, f"{output} is the input {source}")
    expect_refused(resolve(job), job, params, row)
    assert victim.read_bytes() == before
