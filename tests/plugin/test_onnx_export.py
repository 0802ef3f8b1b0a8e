"""slidewise:exportmodel through qgis_process, its file checked in ONNX Runtime.

The model is the session's small model trained on the real Bijie pairs; the
exported file is loaded by ONNX Runtime in the engine's environment, fed the
way Deepness feeds a model (pixels / 255, then the metadata's
standardisation) on a real Bijie test image, and compared with the model in
PyTorch.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from plugin_helpers import BIJIE, run_qgis_process

CHECK = r"""
import json, sys
import numpy as np, onnxruntime as ort, torch
from PIL import Image
from slidewise.engine.imagery.segmodels import load_mapping_model, normalise

onnx_path, model_path, image_path = sys.argv[1:4]
session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
shape = session.get_inputs()[0].shape
side = int(shape[-1])
image = np.asarray(Image.open(image_path).convert("RGB"))[:side, :side].transpose(2, 0, 1)
mean = np.asarray(json.loads(meta["standardization_mean"]), np.float32)[:, None, None]
std = np.asarray(json.loads(meta["standardization_std"]), np.float32)[:, None, None]
feed = ((image.astype(np.float32) / 255.0 - mean) / std)[None].astype(np.float32)
got = session.run(None, {session.get_inputs()[0].name: feed})[0]
net, card = load_mapping_model(model_path)
x = normalise(torch.from_numpy(image.astype(np.float32))[None], card.normalisation)
with torch.inference_mode():
    expected = torch.sigmoid(net(x)).numpy()
print(json.dumps({
    "shape": [str(d) for d in shape],
    "output_shape": [str(d) for d in session.get_outputs()[0].shape],
    "keys": {k: json.loads(v) for k, v in meta.items() if k != "slidewise"},
    "diff": float(np.max(np.abs(got - expected))),
}))
"""


def test_qgis_process_exportmodel_loads_in_onnx_runtime(
    trained, qgis_process_env, engine_python, tmp_path: Path
) -> None:
    model = trained["result"]["OUTPUT"]
    out = tmp_path / "landslides.onnx"
    proc = run_qgis_process(
        qgis_process_env,
        "--json",
        "run",
        "slidewise:exportmodel",
        "--",
        f"MODEL={model}",
        "TILE_SIZE=256",
        f"OUTPUT={out}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout[proc.stdout.index("{") :])["results"]
    assert results["OUTPUT"] == str(out) and results["MAX_ABS_DIFFERENCE"] <= 1e-4
    image = sorted((BIJIE / "test" / "images").glob("*.png"))[0]
    check = subprocess.run(
        [engine_python, "-c", CHECK, str(out), model, str(image)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stderr
    found = json.loads(check.stdout.strip().splitlines()[-1])
    assert found["shape"][1:] == ["3", "256", "256"]
    assert found["output_shape"][1:] == ["1", "256", "256"]
    keys = found["keys"]
    assert keys["model_type"] == "Segmentation" and keys["tile_size"] == 256
    assert keys["class_names"] == {"0": "background", "1": "landslide"}
    assert 0 < keys["seg_thresh"] < 1 and len(keys["standardization_std"]) == 3
    assert found["diff"] <= 1e-4
