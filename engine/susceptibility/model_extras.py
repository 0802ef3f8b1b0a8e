"""What training adds to a fitted susceptibility model: calibrator and bootstrap ensemble.

:func:`calibrate_and_ensemble` is the one call ``trainsusceptibility`` makes
after fitting: out-of-block predictions -> calibrator (:mod:`.calibration`),
bootstrap members for the uncertainty raster (:mod:`.uncertainty`), and the
calibration report next to the model (:mod:`.calibration_report`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext
from slidewise.engine.geo.samples import FeatureEncoder
from slidewise.engine.susceptibility.calibration import (
    CALIBRATION_FOLDS,
    Calibrator,
    calibration_figures,
    fit_calibrator,
    out_of_block_predictions,
)
from slidewise.engine.susceptibility.crossval import LabelledSamples
from slidewise.engine.susceptibility.models import FittedModel, TrainSettings
from slidewise.engine.susceptibility.uncertainty import ensemble_tensors, fit_ensemble


@dataclass
class ModelExtras:
    """Tensors, config entries and figures that training adds to the model file.

    Attributes:
        tensors: Named tensors (calibrator arrays, ensemble members).
        config: Entries of the model's config (``calibration``, ``ensemble``).
        figures: Entries of the job's figures.
    """

    tensors: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def add_to(
        self, tensors: dict[str, Any], config: dict[str, Any], figures: dict[str, Any]
    ) -> None:
        """Merge into the model's tensors and config and the job's figures."""
        tensors.update(self.tensors)
        config.update(self.config)
        figures.update(self.figures)


def calibrate_and_ensemble(
    data: LabelledSamples,
    encoder: FeatureEncoder,
    fitted: FittedModel,
    settings: TrainSettings,
    method: str,
    model_path: str,
    ctx: JobContext,
) -> ModelExtras:
    """Fit the calibrator (``method``) and the bootstrap ensemble of a fitted model.

    The calibration report goes next to ``model_path`` (not with ``method`` none).
    """
    extras = ModelExtras()
    x = encoder.transform(data.values)
    members = fit_ensemble(fitted, (x, data.labels, data.blocks), settings, encoder.groups)
    extras.tensors, extras.config["ensemble"] = ensemble_tensors(members)
    if method == "none":
        extras.config["calibration"] = {"method": "none"}
        return extras
    ctx.log("Calibration: predicting every sample out of its block...")
    try:
        if np.unique(data.blocks).size < 2:
            raise InputError(
                "the samples lie in one block only, and out-of-block predictions need two "
                "or more (use more blocks, or CALIBRATION=none)."
            )
        # a hybrid's refits keep the mix the model chose (not one inner split per fold)
        refit = replace(settings, hybrid_mix=fitted.mix)
        fold_of, p = out_of_block_predictions(data, refit, CALIBRATION_FOLDS, settings.seed)
        ok = np.isfinite(p)  # samples whose fold could be scored
        calibrator: Calibrator = fit_calibrator(data.labels[ok], p[ok], method)
    except InputError as exc:
        ctx.warn(f"The probability is not calibrated: {exc}")
        extras.config["calibration"] = {"method": "none", "skipped": str(exc)}
        return extras
    figures = calibration_figures(data.labels[ok], p[ok], fold_of[ok])
    extras.tensors.update(calibrator.tensors())
    before, after = figures["none"], figures[method]
    extras.config["calibration"] = {
        "method": method,
        "samples": int(ok.sum()),
        "brier_before": before["brier"],
        "brier_after": after["brier"],
        "ece_before": before["ece"],
        "ece_after": after["ece"],
        "ece_fitted": after["ece_fitted"],
        "brier_fitted": after["brier_fitted"],
    }
    from slidewise.engine.susceptibility.calibration_report import write_calibration_report

    figures["predictions"] = {  # the out-of-block predictions themselves, for re-analysis
        "label": data.labels[ok].astype(int).tolist(),
        "probability": [round(float(v), 6) for v in p[ok]],
        "fold": fold_of[ok].astype(int).tolist(),
    }
    report = write_calibration_report(model_path, figures, method)
    extras.figures["calibration"] = {**extras.config["calibration"], "report": str(report)}
    ctx.log(
        f"Calibration ({method}, {int(ok.sum())} out-of-block predictions): ECE "
        f"{before['ece']:.3f} -> {after['ece']:.3f}, Brier {before['brier']:.3f} -> "
        f"{after['brier']:.3f}; report {report}."
    )
    return extras
