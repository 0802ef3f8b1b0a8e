"""Threshold transfer: a mapping model's stored threshold vs one chosen on a few labelled images.

A model's threshold is tuned on its own validation images; on a region with a
different landslide share it can be far off (issue 16 item 6). This benchmark
takes trained models (for example those ``bench.mapping_accuracy --loro --keep``
kept) and the labelled pairs of a region they were not trained on, and for
``--draws`` random sets of ``--labelled`` images of that region it chooses the
threshold as *Evaluate mapping* suggests it (:meth:`ReportCollector.best_threshold`:
best pixel F1 on those images), then scores the region's other images at that
threshold and at the stored one. Every model is scored on the same draws::

    python -m slidewise.bench.threshold_transfer \\
        --region sichuan=$D/sichuan/images,$D/sichuan/masks,255:0:255 \\
        --models keep_default/sichuan-default-*.safetensors --labelled 3 --draws 20

The images are predicted as *Map landslides* maps them
(:func:`slidewise.bench.mapping_accuracy.predicted_pairs`, ×0.5 by default).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.bench.mapping_accuracy import SCALE, parse_region, predicted_pairs
from slidewise.engine.mapping.evaluation_report import ReportCollector


def image_collectors(
    model_path: str, pairs: list[Any], scale: float, mapping: Any
) -> tuple[float, list[ReportCollector]]:
    """The model's stored threshold, and one probability histogram per image."""
    from slidewise.engine.imagery.labels import IGNORE
    from slidewise.engine.imagery.segmodels import load_mapping_model

    model, meta = load_mapping_model(model_path)
    collectors = []
    for prob, truth in predicted_pairs(model, meta, pairs, scale, mapping):
        collector = ReportCollector(prob.shape[1], prob.shape[0], 0.5)
        collector.add(0, prob, truth == 1, truth != IGNORE)
        collectors.append(collector)
    return float(meta.extra.get("threshold", 0.5)), collectors


def pooled(collectors: list[ReportCollector]) -> ReportCollector:
    """One collector holding the histograms of ``collectors``."""
    total = ReportCollector(1, 1, 0.5)
    for c in collectors:
        total.slides += c.slides
        total.others += c.others
    total.binary = False
    return total


def f1_at(collector: ReportCollector, threshold: float) -> float:
    """Pixel F1 of the pooled histogram at ``threshold`` (a multiple of 0.01)."""
    thresholds, precision, recall = collector.curve()
    k = int(np.argmin(np.abs(thresholds - threshold)))
    p, r = np.nan_to_num(precision[k]), recall[k]
    return float(2 * p * r / (p + r)) if p + r > 0 else 0.0


def transfer(
    collectors: list[ReportCollector], stored: float, draws: list[np.ndarray]
) -> dict[str, Any]:
    """F1 on the images not drawn: at the stored threshold, and at the drawn images' best."""
    at_stored, at_chosen, chosen = [], [], []
    for drawn in draws:
        rest = pooled([c for i, c in enumerate(collectors) if i not in set(drawn.tolist())])
        best = pooled([collectors[i] for i in drawn]).best_threshold()
        threshold = best[0] if best else stored
        chosen.append(threshold)
        at_chosen.append(f1_at(rest, threshold))
        at_stored.append(f1_at(rest, stored))
    return {
        "stored_threshold": stored,
        "f1_stored": float(np.mean(at_stored)),
        "f1_chosen": float(np.mean(at_chosen)),
        "f1_chosen_sd": float(np.std(at_chosen)),
        "chosen_threshold_median": float(np.median(chosen)),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m slidewise.bench.threshold_transfer``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--region", required=True, help="NAME=IMAGES,MASKS,R:G:B")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--labelled", type=int, default=3, help="labelled images per draw")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=SCALE)
    parser.add_argument("--json", help="output JSON file")
    args = parser.parse_args(argv)
    region = parse_region(args.region)
    pairs = region.pairs()
    rng = np.random.default_rng(args.seed)
    draws = [rng.choice(len(pairs), args.labelled, replace=False) for _ in range(args.draws)]
    results = {}
    print("model                                  stored  F1 stored  F1 chosen (sd)   chosen")
    for path in args.models:
        stored, collectors = image_collectors(path, pairs, args.scale, region.mapping())
        r = transfer(collectors, stored, draws)
        results[Path(path).name] = r
        print(
            f"{Path(path).name:<38} {stored:6.2f}  {r['f1_stored']:9.3f}  "
            f"{r['f1_chosen']:6.3f} ({r['f1_chosen_sd']:.3f})  {r['chosen_threshold_median']:6.2f}",
            flush=True,
        )
    if args.json:
        doc = {"region": region.name, "labelled": args.labelled, "draws": args.draws}
        Path(args.json).write_text(json.dumps(doc | {"models": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
