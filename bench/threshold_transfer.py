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
) -> tuple[float, list[ReportCollector], np.ndarray]:
    """The stored threshold, a probability histogram per image, and each image's counts.

    The counts (true positives, false positives, false negatives; one row per
    image) are those of the mask *Map landslides* writes with no THRESHOLD: each
    image at its own ``expected_f1`` threshold when the model is calibrated,
    else at the stored threshold.
    """
    from slidewise.engine.imagery.labels import IGNORE
    from slidewise.engine.imagery.scene_threshold import default_threshold
    from slidewise.engine.imagery.segmodels import load_mapping_model

    model, meta = load_mapping_model(model_path)
    stored = float(meta.extra.get("threshold", 0.5))
    collectors, counts = [], []
    for prob, truth in predicted_pairs(model, meta, pairs, scale, mapping):
        collector = ReportCollector(prob.shape[1], prob.shape[0], 0.5)
        evaluated, slide = truth != IGNORE, truth == 1
        collector.add(0, prob, slide, evaluated)
        collectors.append(collector)
        counts.append(mask_counts(prob >= default_threshold(prob, meta.extra), slide, evaluated))
    return stored, collectors, np.asarray(counts, dtype=np.int64).reshape(-1, 3)


def mask_counts(mapped: np.ndarray, slide: np.ndarray, evaluated: np.ndarray) -> tuple[int, ...]:
    """(true positives, false positives, false negatives) of a mask on the evaluated pixels."""
    mapped, slide = mapped & evaluated, slide & evaluated
    tp = int(np.count_nonzero(mapped & slide))
    return tp, int(np.count_nonzero(mapped)) - tp, int(np.count_nonzero(slide)) - tp


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


def counts_f1(counts: np.ndarray) -> float:
    """Pixel F1 of summed (true positive, false positive, false negative) counts."""
    tp, fp, fn = (int(v) for v in counts.sum(axis=0))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def transfer(
    collectors: list[ReportCollector], stored: float, draws: list[np.ndarray], counts: np.ndarray
) -> dict[str, Any]:
    """F1 on the images not drawn: stored threshold, each image's expected-F1 one, drawn's best."""
    at_stored, at_chosen, at_rule, chosen = [], [], [], []
    for drawn in draws:
        keep = [i for i in range(len(collectors)) if i not in set(drawn.tolist())]
        rest = pooled([collectors[i] for i in keep])
        best = pooled([collectors[i] for i in drawn]).best_threshold()
        threshold = best[0] if best else stored
        chosen.append(threshold)
        at_chosen.append(f1_at(rest, threshold))
        at_stored.append(f1_at(rest, stored))
        at_rule.append(counts_f1(counts[keep]))
    return {
        "stored_threshold": stored,
        "f1_all_stored": f1_at(pooled(collectors), stored),
        "f1_all_rule": counts_f1(counts),
        "f1_rule": float(np.mean(at_rule)),
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
    print(
        "model                                  stored  F1 stored  F1 rule  F1 chosen (sd)   "
        "chosen  | all: stored  rule"
    )
    for path in args.models:
        stored, collectors, counts = image_collectors(path, pairs, args.scale, region.mapping())
        r = transfer(collectors, stored, draws, counts)
        results[Path(path).name] = r
        print(
            f"{Path(path).name:<38} {stored:6.2f}  {r['f1_stored']:9.3f}  {r['f1_rule']:7.3f}  "
            f"{r['f1_chosen']:6.3f} ({r['f1_chosen_sd']:.3f})  {r['chosen_threshold_median']:6.2f}"
            f"  | {r['f1_all_stored']:11.3f}  {r['f1_all_rule']:.3f}",
            flush=True,
        )
    if args.json:
        doc = {"region": region.name, "labelled": args.labelled, "draws": args.draws}
        Path(args.json).write_text(json.dumps(doc | {"models": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
