"""Per-layer compute floor of a convolutional model: each convolution as the GEMM it is.

A convolution with ``Cin`` input and ``Cout`` output channels and a ``kh x kw``
kernel that produces ``M`` output pixels is, after im2col, ``groups`` matrix
products of an ``M x K`` matrix (``K = Cin / groups * kh * kw``) by a ``K x N``
one (``N = Cout / groups``). A 2048 x 2048 GEMM rate is not what such shapes
reach: a decoder layer with 16 output channels is a GEMM with ``N = 16``. The
per-layer floor times ``torch.matmul`` (MKL / oneDNN under PyTorch) with each
layer's own GEMM shape at the tile side the engine uses and adds the times:
the fastest this model's convolutions can run as GEMMs on this CPU, leaving
out everything else a forward pass does (im2col itself, activations, pooling,
upsampling, concatenation), so it is a floor for a GEMM-based runtime.

For comparison each convolution is also timed alone as the engine runs it
(``torch.nn.functional.conv2d``, channels-last, oneDNN), on an input of its
own shape: ``conv_seconds`` is the convolutions of one forward pass without
the rest of the network. A direct convolution is not bound by the im2col
GEMM shape, so a layer may run faster alone than its GEMM; ``best_seconds``
takes the faster of the two for each layer: the convolutions as fast as this
CPU has been seen to run each of them.

Large ``M`` are timed on row blocks of at most :data:`MAX_BLOCK_ELEMENTS`
elements of the ``M x K`` matrix (a GEMM's time grows linearly with ``M``
once ``M`` is large), so the floor needs no more memory than the model.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

MAX_BLOCK_ELEMENTS = 1 << 23
"""Largest block of an ``M x K`` GEMM operand timed at once (32 MB in float32)."""
MIN_BLOCK_ROWS = 4096
"""Fewest rows of a timed block (when ``M`` has that many)."""
MIN_TIMED_SECONDS = 0.1
"""Short layers are timed over at least this many seconds in all."""
MAX_RUNS = 50
"""Most timed calls per layer."""


@dataclass(frozen=True)
class ConvGemm:
    """One convolution of a forward pass and its im2col GEMM shape.

    Attributes:
        name: The module's name in the model.
        m: Output pixels of one tile (GEMM rows).
        k: Input channels per group x kernel area (GEMM inner dimension).
        n: Output channels per group (GEMM columns).
        groups: Convolution groups (independent GEMMs).
        input_shape: The convolution's input (1, Cin, H, W).
    """

    name: str
    m: int
    k: int
    n: int
    groups: int
    input_shape: tuple[int, ...]

    @property
    def macs(self) -> int:
        """Multiply-adds of the layer on one tile."""
        return self.m * self.k * self.n * self.groups


@dataclass(frozen=True)
class LayerFloor:
    """The per-layer floor of a model at one tile side.

    Attributes:
        side: Tile side (pixels).
        layers: Each convolution with its GEMM and isolated-convolution seconds.
        gemm_seconds: Sum of the layers' GEMM seconds for one tile.
        conv_seconds: Sum of the layers' isolated-convolution seconds for one tile.
        best_seconds: Sum over the layers of the faster of the two.
        macs: Multiply-adds of one tile.
    """

    side: int
    layers: list[dict[str, Any]]
    gemm_seconds: float
    conv_seconds: float
    best_seconds: float
    macs: int

    def px_per_s(self, redundancy: float, seconds: float | None = None) -> float:
        """Raster pixels per second at ``redundancy`` computed pixels per raster pixel."""
        spent = self.gemm_seconds if seconds is None else seconds
        return self.side * self.side / (spent * redundancy)


def conv_gemms(model: Any, in_channels: int, side: int) -> list[ConvGemm]:
    """The convolutions of one forward pass on a ``side`` x ``side`` tile, in call order."""
    import torch
    from torch import nn

    found: list[ConvGemm] = []
    names = {module: name for name, module in model.named_modules()}

    def record(module: Any, inputs: Any, output: Any) -> None:
        weight, groups = module.weight, int(module.groups)
        area = int(weight.shape[2] * weight.shape[3])
        if isinstance(module, nn.ConvTranspose2d):  # weight (Cin, Cout/groups, kh, kw)
            m = int(inputs[0].shape[-2] * inputs[0].shape[-1])
            k, n = int(weight.shape[0]) // groups, int(weight.shape[1]) * area
        else:  # weight (Cout, Cin/groups, kh, kw)
            m = int(output.shape[-2] * output.shape[-1])
            k, n = int(weight.shape[1]) * area, int(weight.shape[0]) // groups
        found.append(ConvGemm(names[module], m, k, n, groups, tuple(inputs[0].shape)))

    convs = (nn.Conv2d, nn.ConvTranspose2d)
    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, convs)]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, in_channels, side, side))
    finally:
        for hook in hooks:
            hook.remove()
    return found


def _best_seconds(func: Any, runs: int) -> float:
    """Best of ``runs`` calls after a warm-up; short calls are repeated for
    :data:`MIN_TIMED_SECONDS` (at most :data:`MAX_RUNS` calls), so that a loaded
    machine's interruptions do not set the floor."""
    func()  # warm-up: kernels chosen, memory allocated
    best, spent, count = float("inf"), 0.0, 0
    while count < max(1, runs) or (spent < MIN_TIMED_SECONDS and count < MAX_RUNS):
        start = time.perf_counter()
        func()
        seconds = time.perf_counter() - start
        best, spent, count = min(best, seconds), spent + seconds, count + 1
    return best


def gemm_seconds(layer: ConvGemm, runs: int = 5) -> float:
    """Best seconds of ``torch.matmul`` with the layer's GEMM shape (row blocks for large M)."""
    import torch

    rows = min(layer.m, max(MIN_BLOCK_ROWS, MAX_BLOCK_ELEMENTS // max(layer.k, layer.n)))
    shape = (rows, layer.k) if layer.groups == 1 else (layer.groups, rows, layer.k)
    a = torch.randn(*shape)
    b = torch.randn(*shape[:-2], layer.k, layer.n)
    with torch.inference_mode():
        seconds = _best_seconds(lambda: torch.matmul(a, b), runs)
    return seconds * layer.m / rows


def conv_seconds(module: Any, layer: ConvGemm, runs: int = 5) -> float:
    """Best seconds of the convolution alone, channels-last, on an input of its shape."""
    import torch

    conv = copy.deepcopy(module).eval().to(memory_format=torch.channels_last)
    x = torch.randn(*layer.input_shape).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return _best_seconds(lambda: conv(x), runs)


def layer_floor(model: Any, in_channels: int, side: int, runs: int = 5) -> LayerFloor:
    """Time every convolution of ``model`` as its GEMM and alone, at tile side ``side``.

    Layers of the same shape are timed once. ``model`` should be the module the
    engine runs (batch norms folded), so that its convolutions are the engine's.
    """
    modules = dict(model.named_modules())
    gemms: dict[tuple[int, int, int, int], float] = {}
    convs: dict[tuple[Any, ...], float] = {}
    layers: list[dict[str, Any]] = []
    for layer in conv_gemms(model, in_channels, side):
        shape = (layer.m, layer.k, layer.n, layer.groups)
        if shape not in gemms:
            gemms[shape] = gemm_seconds(layer, runs)
        module = modules[layer.name]
        conv_key = (repr(module), layer.input_shape)
        if conv_key not in convs:
            convs[conv_key] = conv_seconds(module, layer, runs)
        layers.append(
            {
                "name": layer.name,
                "m": layer.m,
                "k": layer.k,
                "n": layer.n,
                "groups": layer.groups,
                "gemm_ms": round(gemms[shape] * 1000, 3),
                "conv_ms": round(convs[conv_key] * 1000, 3),
                "gemm_gmacs_per_s": round(layer.macs / gemms[shape] / 1e9, 2),
            }
        )
    total_gemm = sum(layer["gemm_ms"] for layer in layers) / 1000
    total_conv = sum(layer["conv_ms"] for layer in layers) / 1000
    best = sum(min(layer["gemm_ms"], layer["conv_ms"]) for layer in layers) / 1000
    macs = sum(r["m"] * r["k"] * r["n"] * r["groups"] for r in layers)
    return LayerFloor(side, layers, total_gemm, total_conv, best, macs)
