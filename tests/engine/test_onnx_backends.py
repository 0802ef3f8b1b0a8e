"""ONNX export (exportmodel, Deepness metadata) and the inference backends of maplandslides.

Real data: a crop of a Bijie image (RGB, 8-bit). The models are small and
randomly initialised: these tests check that ONNX Runtime computes what
PyTorch computes and that Deepness reads the metadata right, not accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from engine_helpers import BIJIE, job_context
from PIL import Image
from rasterio.transform import from_origin

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.modelfile import ModelMetadata, save_model
from slidewise.engine.imagery import backends
from slidewise.engine.imagery.segmodels import SegModelConfig, build_model, save_mapping_model
from slidewise.engine.imagery.tiling_cluster import backend_name
from slidewise.engine.mapping.apply import run_map
from slidewise.engine.mapping.exportmodel import run_export

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BANDS = ["red", "green", "blue"]
NORM = {"kind": "fit", "mean": [110.0, 105.0, 95.0], "std": [45.0, 40.0, 38.0]}
CROP = 192


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test has its own backend cache (ONNX files and probe results)."""
    monkeypatch.setenv(backends.CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def bijie_crop() -> np.ndarray:
    """A CROP x CROP RGB crop of a real Bijie image, (3, rows, cols) uint8."""
    path = BIJIE / "images" / "10009.png"
    if not path.exists():
        pytest.skip(f"real data not found: {path}")
    image = np.asarray(Image.open(path).convert("RGB"))[100 : 100 + CROP, 120 : 120 + CROP]
    return np.ascontiguousarray(image.transpose(2, 0, 1))


@pytest.fixture(scope="module")
def unet_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small smp U-Net (3 levels, ResNet-18 encoder), stored threshold 0.4, 2 m pixels."""
    torch.manual_seed(0)
    config = SegModelConfig(
        architecture="unet",
        encoder="resnet18",
        in_channels=3,
        encoder_depth=3,
        extra={"decoder_channels": [32, 16, 8]},
    )
    path = tmp_path_factory.mktemp("model") / "unet.safetensors"
    save_mapping_model(
        path,
        build_model(config).eval(),
        config,
        BANDS,
        NORM,
        tile_size=128,
        pixel_size=[2.0, 2.0],
        extra={"threshold": 0.4},
    )
    return str(path)


def _deepness_input(image: np.ndarray, meta: dict[str, str]) -> np.ndarray:
    """What Deepness feeds a model: pixels / 255, then standardised with the metadata."""
    mean = np.asarray(json.loads(meta["standardization_mean"]), np.float32)[:, None, None]
    std = np.asarray(json.loads(meta["standardization_std"]), np.float32)[:, None, None]
    return ((image.astype(np.float32) / 255.0 - mean) / std)[None].astype(np.float32)


def _torch_probability(model_path: str, image: np.ndarray) -> np.ndarray:
    from slidewise.engine.imagery.segmodels import load_mapping_model, normalise

    net, meta = load_mapping_model(model_path)
    x = normalise(torch.from_numpy(image.astype(np.float32))[None], meta.normalisation)
    with torch.inference_mode():
        return torch.sigmoid(net(x)).numpy()


def test_export_runs_in_onnx_runtime_as_deepness_reads_it(unet_file, bijie_crop, tmp_path) -> None:
    import onnxruntime as ort

    out = tmp_path / "landslides.onnx"
    ctx, _ = job_context("exportmodel")
    result = run_export({"MODEL": unet_file, "DYNAMIC_SIZE": True, "OUTPUT": str(out)}, ctx)
    assert result.figures["max_abs_difference"] <= 1e-4
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    # Deepness: every value is JSON; model_type capitalised; classes keyed 0, 1, ...
    assert json.loads(meta["model_type"]).capitalize() == "Segmentation"
    names = json.loads(meta["class_names"])
    assert [names[k] for k in sorted(names, key=int)] == ["background", "landslide"]
    assert int(json.loads(meta["tile_size"])) == 576  # fully convolutional: at least 576
    assert int(json.loads(meta["tiles_overlap"])) == round(100 * 64 / 576)
    assert float(json.loads(meta["resolution"])) == pytest.approx(200.0)  # cm/px
    assert float(json.loads(meta["seg_thresh"])) == pytest.approx(0.4)
    assert int(json.loads(meta["seg_small_segment"])) == 0
    assert json.loads(meta["slidewise"])["bands"] == BANDS
    # The graph fed the Deepness way gives PyTorch's probabilities on a real Bijie tile.
    got = session.run(None, {session.get_inputs()[0].name: _deepness_input(bijie_crop, meta)})[0]
    expected = _torch_probability(unet_file, bijie_crop)
    assert got.shape == expected.shape == (1, 1, CROP, CROP)
    assert np.max(np.abs(got - expected)) <= 1e-4


def test_fixed_tile_export_has_the_square_shape_deepness_requires(unet_file, tmp_path) -> None:
    import onnx

    out = tmp_path / "fixed.onnx"
    run_export(
        {"MODEL": unet_file, "TILE_SIZE": 200, "OVERLAP": 40, "OUTPUT": str(out)},
        job_context("exportmodel")[0],
    )
    graph = onnx.load(str(out)).graph

    def dims(value) -> list:
        return [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]

    assert dims(graph.input[0]) == ["batch", 3, 224, 224]  # 200 rounded up to the stride 32
    assert dims(graph.output[0]) == ["batch", 1, 224, 224]
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["tile_size"]) == 224
    assert json.loads(meta["tiles_overlap"]) == round(100 * 64 / 224)


def test_export_refuses_what_it_cannot_export(unet_file, tmp_path) -> None:
    ctx, _ = job_context("exportmodel")
    with pytest.raises(InputError, match=r"must be an \.onnx file"):
        run_export({"MODEL": unet_file, "OUTPUT": str(tmp_path / "m.tif")}, ctx)
    with pytest.raises(InputError, match="single decoder"):
        run_export({"MODEL": unet_file, "REGION": "x", "OUTPUT": str(tmp_path / "m.onnx")}, ctx)
    detector = tmp_path / "detector.safetensors"
    save_model(detector, {"w": torch.zeros(1)}, ModelMetadata("detection", "fasterrcnn"))
    with pytest.raises(InputError, match="YOLO-style"):
        run_export({"MODEL": str(detector), "OUTPUT": str(tmp_path / "d.onnx")}, ctx)
    assert not list(tmp_path.glob("*.onnx*"))


def test_multiregion_export_needs_a_region_and_matches_its_decoder(
    unet_file, bijie_crop, tmp_path
) -> None:
    import onnxruntime as ort

    from slidewise.engine.imagery.regions import from_mapping_model, save_multiregion
    from slidewise.engine.imagery.segmodels import normalise

    multi = from_mapping_model(unet_file, "bijie")
    multi.add_region("east", init_from="bijie")
    torch.manual_seed(1)
    with torch.no_grad():  # make the new decoder differ from the first
        for p in multi.heads["east"].parameters():
            p.add_(0.1 * torch.randn_like(p))
    multi.records["east"] = dict(multi.records["bijie"])
    path = save_multiregion(tmp_path / "regions.safetensors", multi)
    ctx, _ = job_context("exportmodel")
    with pytest.raises(InputError, match="choose the REGION"):
        run_export({"MODEL": str(path), "OUTPUT": str(tmp_path / "r.onnx")}, ctx)
    out = tmp_path / "east.onnx"
    params = {"MODEL": str(path), "REGION": "east", "DYNAMIC_SIZE": True, "OUTPUT": str(out)}
    run_export(params, ctx)
    x = normalise(torch.from_numpy(bijie_crop.astype(np.float32))[None], NORM)
    with torch.inference_mode():
        expected = torch.sigmoid(multi.eval()(x, "east")).numpy()
        other = torch.sigmoid(multi(x, "bijie")).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    assert np.max(np.abs(got - expected)) <= 1e-4 < np.max(np.abs(got - other))
    # maplandslides runs the region's decoder on ONNX Runtime like on PyTorch.
    raster = _geotiff(tmp_path / "bijie.tif", bijie_crop)
    probs = {}
    for backend in ("torch", "onnxruntime"):
        target = str(tmp_path / f"{backend}.tif")
        params = {"INPUT": raster, "MODEL": str(path), "REGION": "east", "BACKEND": backend}
        result = run_map({**params, "OUTPUT_PROBABILITY": target}, ctx)
        assert result.figures["backend"] == backend
        with rasterio.open(target) as src:
            probs[backend] = src.read(1)
    assert np.nanmax(np.abs(probs["onnxruntime"] - probs["torch"])) <= 1e-4


def _geotiff(path: Path, image: np.ndarray) -> str:
    profile = {
        "driver": "GTiff",
        "width": image.shape[2],
        "height": image.shape[1],
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32648",
        "transform": from_origin(500000, 3000000, 2, 2),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
        for i, name in enumerate(BANDS, start=1):
            dst.set_band_description(i, name)
    return str(path)


def test_backends_give_the_torch_probabilities(unet_file, bijie_crop, tmp_path, monkeypatch):
    raster = _geotiff(tmp_path / "bijie.tif", bijie_crop)
    probs, figures = {}, {}
    have = backends.available_backends()
    for backend in ["torch", "auto", *(b for b in ("onnxruntime", "openvino") if b in have)]:
        out = str(tmp_path / f"{backend}.tif")
        params = {"INPUT": raster, "MODEL": unet_file, "BACKEND": backend, "TILE_SIZE": 128}
        result = run_map({**params, "OUTPUT_PROBABILITY": out}, job_context("maplandslides")[0])
        figures[backend] = result.figures
        with rasterio.open(out) as src:
            probs[backend] = src.read(1)
    assert "onnxruntime" in have  # an engine dependency
    assert figures["auto"]["backend"] == "torch"  # small raster, nothing cached: no probe
    for backend in probs:
        assert figures[backend]["backend"] == backend or backend == "auto"
        assert np.nanmax(np.abs(probs[backend] - probs["torch"])) <= 1e-4, backend
    assert list((tmp_path / "cache" / "onnx").glob("*.onnx"))  # exported once, cached

    # With a probe: the choice is timed once, cached, and read back the next time.
    monkeypatch.setattr(backends, "AUTO_MIN_PIXELS", 0)
    calls = []
    real_probe = backends.probe_backends
    monkeypatch.setattr(backends, "probe_backends", lambda *a: calls.append(1) or real_probe(*a))
    request = backends.BackendRequest(
        torch.nn.Identity(), 3, "key", threads=1, tile=64, log=lambda _m: None
    )
    first = backends.auto_backend(request)
    assert first in backends.available_backends() and set(request.timings) >= {"torch"}
    assert backends.auto_backend(request) == first and len(calls) == 1
    stored = json.loads((tmp_path / "cache" / "auto-backend.json").read_text())
    assert [v["backend"] for v in stored.values()] == [first]


def test_backend_errors_are_clear(unet_file, bijie_crop, tmp_path, monkeypatch) -> None:
    raster = _geotiff(tmp_path / "bijie.tif", bijie_crop)
    params = {"INPUT": raster, "MODEL": unet_file, "OUTPUT_MASK": str(tmp_path / "m.tif")}
    monkeypatch.setattr(backends, "available_backends", lambda: ["torch"])
    with pytest.raises(InputError, match="BACKEND openvino is not installed"):
        run_map({**params, "BACKEND": "openvino"}, job_context("maplandslides")[0])
    assert not (tmp_path / "m.tif").exists()


def test_openvino_compiles_each_tile_shape_statically(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from slidewise.engine.imagery.onnxexport import export_onnx

    torch.manual_seed(0)
    config = SegModelConfig("unet", "resnet18", 3, 3, {"decoder_channels": [16, 8, 4]})
    net = build_model(config).eval()
    path = export_onnx(net, tmp_path / "net.onnx", 3)
    module = backends.OpenVinoModule(path, 1)
    for shape in ((1, 3, 64, 96), (2, 3, 32, 32), (1, 3, 96, 64)):
        x = torch.randn(*shape)
        with torch.inference_mode():
            want = torch.sigmoid(net(x))
        assert torch.allclose(torch.sigmoid(module(x)), want, atol=1e-4), shape
        shapes = [
            tuple(int(d) for d in r.get_compiled_model().input(0).get_shape())
            for r in module.requests.values()
        ]
        assert shapes[-1] == shape  # compiled for this shape, not a dynamic graph
    assert len(module.requests) == backends.OPENVINO_SHAPES  # the oldest shape was dropped
    # the name the job logs and hands to Dask workers (this read the old single
    # compiled model and crashed every OpenVINO mapping job)
    assert backend_name(module) == "openvino"
    assert backend_name(backends.OpenVinoModule(path, 1, "bf16")) == "openvino_bf16"


def test_auto_probes_the_tile_side_a_cpu_job_runs(monkeypatch, tmp_path) -> None:
    # On a 384-px probe OpenVINO won while the job's 1088-px tiles ran faster in PyTorch.
    from slidewise.engine.imagery.tiling import CPU_TILE

    monkeypatch.setenv(backends.CACHE_ENV, str(tmp_path))
    sides: list[int] = []
    monkeypatch.setattr(
        backends, "probe_backends", lambda _r, side: sides.append(side) or {"torch": 1.0}
    )
    request = backends.BackendRequest(
        torch.nn.Identity(), 3, "key", threads=1, tile=CPU_TILE, log=lambda _m: None
    )
    assert backends.auto_backend(request) == "torch"
    assert sides == [CPU_TILE]
