"""Int8 post-training quantisation of a mapping model: landslide F1 change and speed-up.

Usage::

    python -m slidewise.bench.quantisation --model M.safetensors \\
        --calibration-images DIR [--calibration-masks DIR] \\
        --test IMAGES MASKS [--test IMAGES MASKS ...] --json OUT [--threads T]

The model is exported to ONNX (:func:`slidewise.engine.imagery.onnxexport.export_onnx`,
float32, dynamic size) and quantised with ONNX Runtime's static post-training
quantisation (QDQ format, int8 weights per channel, uint8 activations, MinMax
calibration) on chips of the training images (``--calibration-images``, the
pairs the model was trained on: downscaled like the training, 256 px chips,
standardised with the model's normalisation). Both graphs then map each test
image with the engine's tiling (:func:`slidewise.engine.imagery.tiling.predict_raster`,
the image downscaled by ``--scale`` as in ``mapping_accuracy``, probabilities
upsampled back) and the landslide-class F1 at the model's threshold is
counted over all test pixels. Speed: best of ``--repeats`` forward passes of
one ``--tile`` tile, float32 against int8, same session options as the
``onnxruntime`` backend, on ``--threads`` threads. ``--bf16`` adds OpenVINO
with its bfloat16 inference precision (its default on CPUs with AMX or
AVX512-BF16) to both measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CHIP = 256
"""Calibration chip side (pixels, after downscaling)."""


def calibration_chips(
    images: Path, normalisation: dict[str, Any], scale: float, count: int
) -> list[np.ndarray]:
    """Standardised (1, C, CHIP, CHIP) chips from the training images, a fixed spread."""
    from PIL import Image

    chips: list[np.ndarray] = []
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".tif"))
    mean = np.asarray(normalisation["mean"], np.float32)[:, None, None]
    std = np.asarray(normalisation["std"], np.float32)[:, None, None]
    rng = np.random.default_rng(0)
    for k in range(count):
        with Image.open(files[k % len(files)]) as im:
            rgb = im.convert("RGB")
            size = (max(CHIP, round(rgb.width * scale)), max(CHIP, round(rgb.height * scale)))
            arr = np.asarray(rgb.resize(size, Image.Resampling.BOX), np.float32).transpose(2, 0, 1)
        y = int(rng.integers(0, arr.shape[1] - CHIP + 1))
        x = int(rng.integers(0, arr.shape[2] - CHIP + 1))
        chips.append(((arr[:, y : y + CHIP, x : x + CHIP] - mean) / std)[None])
    return chips


def quantise(float_path: Path, int8_path: Path, chips: list[np.ndarray]) -> None:
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on ``chips``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = iter(chips)

        def get_next(self) -> dict[str, np.ndarray] | None:
            chip = next(self.items, None)
            return None if chip is None else {"input": chip.astype(np.float32)}

    prepared = int8_path.with_suffix(".pre.onnx")
    quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(int8_path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
    )


def landslide_f1(module: Any, meta: Any, pairs: list[tuple[Path, Path]], scale: float) -> dict:
    """Landslide-class figures of ``module`` (logits) over the test pairs at full resolution."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from PIL import Image

    from slidewise.engine.imagery.labels import IGNORE, LabelMapping, decode_mask
    from slidewise.engine.imagery.scenes import read_picture
    from slidewise.engine.imagery.segmetrics import Confusion
    from slidewise.engine.imagery.tiling import TilingOptions, predict_raster

    threshold = float(meta.extra.get("threshold", 0.5))
    total = Confusion()
    for image, mask in pairs:
        truth = decode_mask(read_picture(mask, "mask"), LabelMapping(), mask.name)
        with Image.open(image) as im:
            rgb = im.convert("RGB")
            size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
            arr = np.asarray(rgb.resize(size, Image.Resampling.BOX), np.float32)
        options = TilingOptions(tile=CHIP * 2, overlap=64, channels_last=False)
        prob = predict_raster(
            module, arr.transpose(2, 0, 1), options, normalisation=meta.normalisation
        )
        assert prob is not None
        full = F.interpolate(
            torch.from_numpy(np.nan_to_num(prob))[None, None], size=truth.shape, mode="bilinear"
        )[0, 0].numpy()
        total.update(full >= threshold, truth == 1, truth != IGNORE)
    return {"f1": total.f1, "precision": total.precision, "recall": total.recall}


def tile_seconds(module: Any, bands: int, tile: int, repeats: int) -> float:
    """Best seconds of one forward pass of a ``tile`` x ``tile`` input."""
    import torch

    x = torch.randn(1, bands, tile, tile, generator=torch.Generator().manual_seed(0))
    module(x)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        module(x)
        best = min(best, time.perf_counter() - start)
    return best


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Export, quantise, score and time; the figures."""
    from slidewise.engine.imagery.backends import OnnxRuntimeModule
    from slidewise.engine.imagery.datasets import discover_pairs
    from slidewise.engine.imagery.onnxexport import export_onnx
    from slidewise.engine.imagery.segmodels import load_mapping_model

    net, meta = load_mapping_model(args.model)
    bands = len(meta.bands)
    figures: dict[str, Any] = {"model": str(args.model), "threads": args.threads, "tile": args.tile}
    with tempfile.TemporaryDirectory(prefix="slidewise-quant-") as tmp:
        float_path, int8_path = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        export_onnx(net, float_path, bands)
        scale = args.scale if args.calibration_scale is None else args.calibration_scale
        chips = calibration_chips(args.calibration_images, meta.normalisation, scale, 32)
        quantise(float_path, int8_path, chips)
        modules = {
            "float32": OnnxRuntimeModule(float_path, args.threads),
            "int8": OnnxRuntimeModule(int8_path, args.threads),
        }
        if args.bf16:
            from slidewise.engine.imagery.backends import OpenVinoModule

            modules["openvino_bf16"] = OpenVinoModule(float_path, args.threads, "bf16")
        for label, (images, masks) in zip(args.test_names, args.test, strict=True):
            pairs = sorted(discover_pairs(images, masks))
            if args.last:
                pairs = pairs[-args.last :]
            for kind, module in modules.items():
                figures[f"{label}_{kind}"] = landslide_f1(module, meta, pairs, args.scale)
            for kind in modules:
                change = figures[f"{label}_{kind}"]["f1"] - figures[f"{label}_float32"]["f1"]
                figures[f"{label}_{kind}_f1_change"] = change
        seconds = {k: tile_seconds(m, bands, args.tile, args.repeats) for k, m in modules.items()}
        figures["seconds_per_tile"] = seconds
        figures["speedup_vs_float32"] = {k: seconds["float32"] / v for k, v in seconds.items()}
    return figures


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--calibration-images", type=Path, required=True)
    parser.add_argument("--test", nargs=2, action="append", required=True, metavar=("IMG", "MSK"))
    parser.add_argument("--test-names", nargs="+", default=None)
    parser.add_argument("--last", type=int, default=0, help="only the last N pairs of each set")
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--calibration-scale", type=float, default=None, help="default: --scale")
    parser.add_argument("--tile", type=int, default=576)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--bf16", action="store_true", help="also OpenVINO in bfloat16 (CPUs with AMX/AVX512-BF16)"
    )
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    args.test_names = args.test_names or [f"set{k}" for k in range(len(args.test))]
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    figures = run(args)
    args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
