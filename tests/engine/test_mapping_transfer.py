"""Mapping across sensors (issue 16): per-tile input standardisation of the resunet."""

from __future__ import annotations

import pytest
import torch

from slidewise.engine.core.errors import InputError
from slidewise.engine.imagery.segmodels import SegModelConfig, build_model

TINY = {"widths": [8, 16, 32], "residual": False, "deep_supervision": False}


def _model(input_norm: str) -> torch.nn.Module:
    torch.manual_seed(0)
    extra = {**TINY, "input_norm": input_norm}
    return build_model(SegModelConfig(architecture="resunet", in_channels=3, extra=extra)).eval()


def test_tile_standardisation_ignores_the_sensors_gain_and_offset() -> None:
    # Bijie's images are darker and flatter than Sichuan's (band std 25 vs 60 grey
    # levels): with input_norm "tile" both look the same to the network.
    x = torch.randn(2, 3, 48, 40)
    gain = torch.tensor([0.4, 0.45, 0.38]).view(1, 3, 1, 1)
    offset = torch.tensor([-0.7, -0.4, -0.5]).view(1, 3, 1, 1)
    tile, plain = _model("tile"), _model("none")
    with torch.no_grad():
        assert torch.allclose(tile(x), tile(x * gain + offset), atol=1e-4)
        assert not torch.allclose(plain(x), plain(x * gain + offset), atol=1e-2)
        # A uniform tile (water, nodata) is not blown up into noise.
        flat = torch.full((1, 3, 32, 32), 0.3) + 1e-4 * torch.randn(1, 3, 32, 32)
        assert torch.isfinite(tile(flat)).all()
        assert tile.input_norm(flat).abs().max() < 0.01


def test_tile_standardisation_adds_no_weights_and_checks_its_name() -> None:
    # Model files written before the option load into either network.
    assert _model("tile").state_dict().keys() == _model("none").state_dict().keys()
    with pytest.raises(InputError, match="input_norm"):
        _model("image")
