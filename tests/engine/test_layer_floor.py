"""The per-layer compute floor of ``mapping_throughput --floor`` (bench/layer_floor.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slidewise.bench.layer_floor import conv_gemms, layer_floor
from slidewise.bench.mapping_throughput import macs_per_pixel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(14, 16, 3, padding=1),  # M = 32 x 32, K = 14 x 9, N = 16
        nn.Conv2d(16, 32, 3, stride=2, padding=1),  # M = 16 x 16, K = 16 x 9, N = 32
        nn.Conv2d(32, 32, 3, padding=1, groups=4),  # 4 GEMMs: K = 8 x 9, N = 8
        nn.ConvTranspose2d(32, 8, 2, stride=2),  # M = input 16 x 16, K = 32, N = 8 x 4
        nn.Conv2d(8, 1, 1),
    ).eval()


def test_each_convolution_is_its_im2col_gemm() -> None:
    shapes = [(g.name, g.m, g.k, g.n, g.groups) for g in conv_gemms(_net(), 14, 32)]
    assert shapes == [
        ("0", 1024, 126, 16, 1),
        ("1", 256, 144, 32, 1),
        ("2", 256, 72, 8, 4),
        ("3", 256, 32, 32, 1),
        ("4", 1024, 8, 1, 1),
    ]
    # The GEMMs hold exactly the model's multiply-adds (the GEMM floor's count).
    total = sum(g.macs for g in conv_gemms(_net(), 14, 32))
    assert total == round(macs_per_pixel(_net(), side=32) * 32 * 32)


def test_layer_floor_adds_the_layers_of_one_tile() -> None:
    found = layer_floor(_net(), 14, 32, runs=1)
    assert found.side == 32 and len(found.layers) == 5
    assert found.macs == sum(g.macs for g in conv_gemms(_net(), 14, 32))
    assert found.gemm_seconds == pytest.approx(sum(r["gemm_ms"] for r in found.layers) / 1000)
    best = sum(min(r["gemm_ms"], r["conv_ms"]) for r in found.layers) / 1000
    assert found.best_seconds == pytest.approx(best)
    assert found.best_seconds <= min(found.gemm_seconds, found.conv_seconds)
    # Raster pixels per second: one tile's pixels over its time and the redundancy.
    assert found.px_per_s(2.0) == pytest.approx(32 * 32 / (found.gemm_seconds * 2.0))
