"""Predict susceptibility's UNCERTAINTY output and BLEND_WIDTH in the dialog, and its style."""

from __future__ import annotations

from pathlib import Path

from plugin_helpers import styled_ramp


def _algorithm():
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById("slidewise:predictsusceptibility")
    assert alg is not None
    return alg


def test_uncertainty_output_is_created_by_default_and_styled(qgis_app, tmp_path: Path) -> None:
    alg = _algorithm()
    unc = alg.parameterDefinition("UNCERTAINTY")
    assert unc is not None and unc.createByDefault()
    blend = alg.parameterDefinition("BLEND_WIDTH")
    assert blend.defaultValue() == 2 and blend.minimum() == 0
    items = styled_ramp(alg, "UNCERTAINTY", tmp_path, top=0.4)
    # susceptibility_uncertainty.qml: light (agree) to dark purple (unsure) over 0-0.3.
    assert [round(i.value, 2) for i in items] == [0.0, 0.05, 0.1, 0.2, 0.3]
    assert items[-1].color.name() == "#4d004b"
