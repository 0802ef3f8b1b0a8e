"""Inference backends: the runtime that computes a mapping model's forward passes.

The tiled loop (:mod:`slidewise.engine.imagery.tiling`) calls ``model(x)`` on
a batch of standardised tiles and expects logits; a backend is any
:class:`torch.nn.Module` that does that. Besides PyTorch itself:

* ``onnxruntime``: the model is exported to ONNX once
  (:func:`slidewise.engine.imagery.onnxexport.export_onnx`, dynamic batch,
  height and width), cached in the user cache folder under the SHA-256 of the
  model file, and run by an ONNX Runtime CPU session (all graph optimisations,
  intra-op threads = the job's threads);
* ``openvino``: the same ONNX file compiled by OpenVINO for the CPU, in
  float32 (OpenVINO's default on CPUs with AMX or AVX-512 BF16 is bfloat16,
  which changes logits by ~0.1: not the same model any more);
* ``openvino_bf16``: OpenVINO with that bfloat16 precision, on request only
  (2.6-4.8x ONNX Runtime's float32 speed on this project's AMX CPU, landslide
  F1 changed by less than 0.001 on the Bijie and Sichuan test images:
  ``bench/quantisation.py``). ``auto`` never picks it.

``auto`` times each available backend on one tile of the model (a short
probe, once per model file, tile side, thread count and machine; the result
is cached next to the ONNX files) and keeps the fastest. On a GPU, ``auto``
is PyTorch. Outputs agree with PyTorch's within float32 rounding (tested:
1e-4 on probabilities); tiles, blending and memory bound do not change.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slidewise.engine.core.errors import InputError
from slidewise.engine.imagery.onnxexport import INPUT_NAME, export_onnx

BACKENDS = ("torch", "onnxruntime", "openvino")
"""The backends, in the order ``auto`` prefers them on a tie."""
PROBE_SIDE = 1088
"""Largest tile side of the ``auto`` probe (pixels): the CPU's default tile
(:data:`.tiling.CPU_TILE`). The backends' order changes with the tile: on a
384-px probe OpenVINO won, while on the 1088-px tiles the job then ran PyTorch
was 1.13x faster (2-core CPU, quiet), so the probe times the tile the job runs."""
PROBE_RUNS = 2
"""Timed forward passes per backend in the probe (after one warm-up pass)."""
AUTO_MIN_PIXELS = 4_000_000
"""``auto`` on a smaller raster without a cached probe result runs PyTorch: exporting
and probing (seconds) would cost more than they save."""
OPENVINO_SHAPES = 2
"""Input shapes an OpenVINO backend keeps compiled (a tiled run feeds one)."""
CACHE_ENV = "SLIDEWISE_CACHE_DIR"
"""Environment variable overriding the cache folder."""


def cache_dir() -> Path:
    """The user cache folder of Slidewise (``$SLIDEWISE_CACHE_DIR`` when set)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "slidewise" / "cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "slidewise"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slidewise"


def available_backends() -> list[str]:
    """The backends that can run here (``torch`` always; the others when importable)."""
    found = ["torch"]
    for name, module in (("onnxruntime", "onnxruntime"), ("openvino", "openvino")):
        try:
            __import__(module)
        except ImportError:
            continue
        found.append(name)
    return found


def model_key(path: str | os.PathLike[str], region: str | None = None) -> str:
    """Cache key of a model file (and region): SHA-256 of the file, region, torch version."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    digest.update(f"|{region or ''}|torch {torch.__version__}".encode())
    return digest.hexdigest()[:32]


def machine_id(threads: int) -> str:
    """What a timing depends on besides the model: machine, CPU, threads, runtime versions."""
    versions = []
    for module in ("onnxruntime", "openvino"):
        with contextlib.suppress(ImportError):
            versions.append(f"{module} {__import__(module).__version__}")
    parts = [platform.node(), platform.machine(), platform.processor(), str(os.cpu_count())]
    return "|".join([*parts, f"threads {threads}", f"torch {torch.__version__}", *versions])


class OnnxRuntimeModule(nn.Module):
    """An ONNX Runtime CPU session behaving like the model: ``forward(x) -> logits``."""

    def __init__(self, path: str | os.PathLike[str], threads: int) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.fspath(path), options, providers=["CPUExecutionProvider"]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, H, W) of standardised tiles (B, C, H, W)."""
        data = x.detach().cpu().contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {INPUT_NAME: data})[0])


class OpenVinoModule(nn.Module):
    """An OpenVINO CPU model behaving like the model: ``forward(x) -> logits``.

    The ONNX file has a dynamic batch, height and width; OpenVINO is given
    the static shape of each input it sees instead (``reshape``, then compiled
    for that shape: about half a second, once per shape). A tiled run feeds
    one tile shape, and a static graph plans its memory once: a 1088-px tile
    of a ResNet-18 U-Net peaked 290 MB above the compiled model instead of
    690 MB with the dynamic graph, at the same speed. The last
    :data:`OPENVINO_SHAPES` shapes stay compiled.
    """

    def __init__(self, path: str | os.PathLike[str], threads: int, precision: str = "f32") -> None:
        super().__init__()
        import openvino as ov

        self.config = {
            "INFERENCE_NUM_THREADS": int(threads),
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision,
        }
        self.core = ov.Core()
        self.path = os.fspath(path)
        self.requests: dict[tuple[int, ...], Any] = {}

    @property
    def precision(self) -> str:
        """The inference precision asked of OpenVINO (``f32`` or ``bf16``)."""
        return str(self.config["INFERENCE_PRECISION_HINT"])

    def request(self, shape: tuple[int, ...]) -> Any:
        """The infer request of a model compiled for input ``shape`` (compiled on first use)."""
        if shape not in self.requests:
            while len(self.requests) >= OPENVINO_SHAPES:
                self.requests.pop(next(iter(self.requests)))
            model = self.core.read_model(self.path)
            model.reshape(list(shape))
            compiled = self.core.compile_model(model, "CPU", self.config)
            self.requests[shape] = compiled.create_infer_request()
        return self.requests[shape]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, H, W) of standardised tiles (B, C, H, W)."""
        data = x.detach().cpu().contiguous().numpy()
        out = self.request(tuple(data.shape)).infer({0: data})[0]
        return torch.from_numpy(np.array(out, dtype=np.float32, copy=True))


@dataclass
class BackendRequest:
    """What a backend is prepared from.

    Attributes:
        model: The PyTorch model (eval mode).
        in_channels: Number of input bands.
        key: Cache key of the model (:func:`model_key`).
        threads: CPU threads of the job (intra-op threads of the runtimes).
        device: Device of the job; other backends than ``torch`` run on the CPU.
        tile: Tile side of the run (the ``auto`` probe uses at most :data:`PROBE_SIDE`).
        pixels: Raster pixels to map (``auto`` probes only for :data:`AUTO_MIN_PIXELS` or more).
        log: Called with a line for the user.
        timings: Filled by ``auto`` with seconds per probe pass per backend.
    """

    model: nn.Module
    in_channels: int
    key: str
    threads: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    tile: int = PROBE_SIDE
    pixels: int = AUTO_MIN_PIXELS
    log: Callable[[str], None] = print
    timings: dict[str, float] = field(default_factory=dict)

    def cpu_threads(self) -> int:
        """The job's threads, else PyTorch's."""
        return int(self.threads) if self.threads > 0 else torch.get_num_threads()


def onnx_file(request: BackendRequest) -> Path:
    """The cached ONNX export of the model (written once, atomically)."""
    folder = cache_dir() / "onnx"
    path = folder / f"{request.key}.onnx"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{request.key}.{os.getpid()}.onnx.partial"
    try:
        export_onnx(request.model, tmp, request.in_channels)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return path


def build_backend(name: str, request: BackendRequest) -> nn.Module:
    """The module computing the model with backend ``name`` (not ``auto``).

    Raises:
        InputError: the backend is not installed, or a GPU was asked for with a CPU backend.
    """
    if name == "torch":
        return request.model
    if name.split("_")[0] not in available_backends():
        raise InputError(
            f"BACKEND {name} is not installed in the engine environment: choose torch or "
            "auto, or install it (OpenVINO: the engine's optional extra 'openvino')."
        )
    if request.device.type != "cpu":
        raise InputError(
            f"BACKEND {name} runs on the CPU but DEVICE is {request.device.type}: set DEVICE "
            "to cpu, or BACKEND to torch or auto."
        )
    path = onnx_file(request)
    if name == "onnxruntime":
        return OnnxRuntimeModule(path, request.cpu_threads())
    precision = "bf16" if name == "openvino_bf16" else "f32"
    return OpenVinoModule(path, request.cpu_threads(), precision)


def choose_backend(name: str, request: BackendRequest) -> tuple[nn.Module, str]:
    """The module to run and the backend's name; ``auto`` resolves to the fastest here."""
    if name == "auto":
        name = auto_backend(request)
    return build_backend(name, request), name


def auto_backend(request: BackendRequest) -> str:
    """The fastest available backend for the model on this machine (probe result cached).

    On a GPU, and on a raster smaller than :data:`AUTO_MIN_PIXELS` that has no cached
    probe result: ``torch``. A backend that fails to build or run is skipped with a note.
    """
    if request.device.type != "cpu":
        return "torch"
    side = min(int(request.tile), PROBE_SIDE)
    ident = f"{request.key}|{side}|{machine_id(request.cpu_threads())}"
    store = cache_dir() / "auto-backend.json"
    known = _read_json(store)
    if ident in known:
        request.timings.update(known[ident].get("seconds", {}))
        return str(known[ident]["backend"])
    if request.pixels < AUTO_MIN_PIXELS:
        return "torch"
    seconds = probe_backends(request, side)
    best = min(seconds, key=lambda n: (seconds[n], BACKENDS.index(n)))
    request.timings.update(seconds)
    known[ident] = {"backend": best, "seconds": seconds, "side": side, "when": time.time()}
    _write_json(store, known)
    shown = ", ".join(f"{n} {s * 1000:.0f} ms" for n, s in seconds.items())
    request.log(f"BACKEND auto: {best} is the fastest here ({side}-px tile: {shown}); cached.")
    return best


def probe_backends(request: BackendRequest, side: int) -> dict[str, float]:
    """Best seconds per forward pass of each available backend on one ``side`` tile."""
    x = torch.randn(1, request.in_channels, side, side, generator=torch.Generator().manual_seed(0))
    seconds: dict[str, float] = {}
    for name in available_backends():
        try:
            module = build_backend(name, request)
            seconds[name] = _time_passes(module, x, name == "torch")
        except Exception as exc:  # a runtime that cannot run this model is skipped
            request.log(f"BACKEND auto: {name} skipped ({type(exc).__name__}: {exc}).")
    return seconds or {"torch": 0.0}


def _time_passes(module: nn.Module, x: torch.Tensor, channels_last: bool) -> float:
    if channels_last:
        from slidewise.engine.imagery.tiling import make_runner

        runner = make_runner(module, {}, "cpu")
        module, x = runner.model, x.contiguous(memory_format=torch.channels_last)
    best = float("inf")
    with torch.inference_mode():
        module(x)
        for _ in range(PROBE_RUNS):
            started = time.perf_counter()
            module(x)
            best = min(best, time.perf_counter() - started)
    return best


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


class RegionBackends:
    """A multi-region model whose region views run on a backend (duck-types its model).

    :func:`slidewise.engine.mapping.regionmaps.iter_region_predictions` asks the
    model for ``view(region)``; here each view is the backend's module for that
    region's decoder (prepared on first use). Everything else is the model's.
    """

    def __init__(self, multi: Any, backend: str, make_request: Callable[[str], Any]) -> None:
        self.multi, self.backend, self.make_request = multi, backend, make_request
        self.views: dict[str, nn.Module] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["multi"], name)

    def view(self, region: str) -> nn.Module:
        """The backend module of ``region``'s decoder."""
        if region not in self.views:
            self.views[region] = build_backend(self.backend, self.make_request(region))
        return self.views[region]
