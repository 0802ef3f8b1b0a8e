"""Benchmark: few-shot meta-learning vs global models on held-out blocks of a table.

Usage::

    python -m slidewise.bench.susceptibility --table CSV --label COLUMN --x COLUMN \\
        --y COLUMN --shots K --blocks N --repeats R --seed S --json OUT

Blocks are k-means clusters of the coordinates (N blocks). Each repeat runs a
5-fold leave-blocks-out evaluation
(:func:`slidewise.engine.susceptibility.crossval.leave_blocks_out`): in each fold
the held-out blocks give K support samples each and the rest of their samples
are the query; ``meta`` is meta-trained on the other blocks and
adapted per held-out block on its support samples; ``rf``, ``lr`` and ``mlp``
train on the other blocks plus the support samples; all are scored on the same
query samples. Columns other than the label and coordinates are factors.

``OUT`` gets ``{"methods": {m: {"auc_mean", "auc_sd", "f1_mean", "kappa_mean"}},
"timing": {"meta_iter_per_s_vmap", "meta_iter_per_s_loop"}}`` plus a
``settings`` record; the timings are measured in the same run on the first
fold's tasks (CPU, torch.func ``vmap`` vs a Python loop over tasks, same maths).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

METHODS = ("meta", "rf", "lr", "mlp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    ap = argparse.ArgumentParser(
        prog="python -m slidewise.bench.susceptibility", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--table", required=True, help="CSV or XLSX sample table")
    ap.add_argument("--label", required=True, help="label column (1 landslide, 0 not)")
    ap.add_argument("--x", required=True, help="x coordinate column")
    ap.add_argument("--y", required=True, help="y coordinate column")
    ap.add_argument("--shots", type=int, default=5, help="support samples per held-out block")
    ap.add_argument("--blocks", type=int, default=64, help="k-means blocks")
    ap.add_argument("--repeats", type=int, default=1, help="repeats of the 5-fold evaluation")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    ap.add_argument("--json", required=True, help="output JSON")
    ap.add_argument("--folds", type=int, default=5, help="folds per repeat (default 5)")
    ap.add_argument("--meta-iterations", type=int, default=None, help="override meta-iterations")
    ap.add_argument("--timing-iterations", type=int, default=20, help="iterations per timing")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark and return the JSON document."""
    import torch

    from slidewise.engine.geo.sampletables import read_sample_table
    from slidewise.engine.susceptibility.blocks import kmeans_blocks
    from slidewise.engine.susceptibility.crossval import LabelledSamples, summarise
    from slidewise.engine.susceptibility.maml import MetaConfig

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # small models: one thread is fastest and timings are steadier
    values, labels, xs, ys, names = read_sample_table(
        args.table, args.label, args.x, args.y, warn=lambda m: print(m, file=sys.stderr)
    )
    blocks, _ = kmeans_blocks(xs, ys, args.blocks, args.seed)
    data = LabelledSamples(values, labels, blocks, names)
    meta = MetaConfig(support=args.shots)
    if args.meta_iterations is not None:
        meta = replace(meta, iterations=args.meta_iterations)
    started = time.time()
    records = evaluate(data, meta, args)
    return {
        "methods": summarise(records, METHODS),
        "timing": timing(data, meta, args),
        "settings": {
            "table": str(Path(args.table).name),
            "samples": int(labels.size),
            "factors": names,
            "shots": args.shots,
            "blocks": args.blocks,
            "repeats": args.repeats,
            "folds": args.folds,
            "seed": args.seed,
            "folds_scored": len(records),
            "meta": meta.to_dict(),
            "seconds": round(time.time() - started, 1),
            "torch_threads": torch.get_num_threads(),
        },
    }


def evaluate(data: Any, meta: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fold records of ``args.repeats`` leave-blocks-out evaluations of every method."""
    from slidewise.engine.susceptibility.crossval import leave_blocks_out
    from slidewise.engine.susceptibility.models import TrainSettings

    records: list[dict[str, Any]] = []
    for r in range(args.repeats):
        seed = args.seed + 1000 * r
        records += leave_blocks_out(
            data,
            METHODS,
            TrainSettings(meta=meta, seed=seed),
            shots=args.shots,
            n_folds=args.folds,
            seed=seed,
            log=lambda m: print(m, file=sys.stderr),
        )
    return records


def timing(data: Any, meta: Any, args: argparse.Namespace) -> dict[str, float]:
    """Meta-iterations per second, ``vmap`` vs a loop over tasks, on the same tasks."""
    import torch

    from slidewise.engine.geo.samples import FeatureEncoder
    from slidewise.engine.susceptibility.maml import (
        MetaState,
        SusceptibilityMLP,
        TaskSampler,
        init_params,
        time_iterations,
    )

    x = FeatureEncoder.fit(data.values, data.bands).transform(data.values)
    sampler = TaskSampler(x, data.labels, data.blocks, meta.support, meta.query, seed=args.seed)
    skeleton = SusceptibilityMLP(x.shape[1], meta.hidden)
    state = MetaState(
        init_params(skeleton),
        {k: torch.tensor(meta.inner_lr) for k, _ in skeleton.named_parameters()},
    )
    return {
        f"meta_iter_per_s_{mode}": time_iterations(
            skeleton, state, sampler, meta, mode, args.timing_iterations
        )
        for mode in ("vmap", "loop")
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    doc = run(args)
    from slidewise.engine.core.protocol import json_safe

    Path(args.json).write_text(json.dumps(json_safe(doc), indent=2), encoding="utf-8")
    print(f"{'method':<6} {'AUC':>7} {'sd':>6} {'F1':>6} {'kappa':>6}")
    for m, s in doc["methods"].items():
        print(
            f"{m:<6} {s['auc_mean']:7.3f} {s['auc_sd']:6.3f} "
            f"{s['f1_mean']:6.3f} {s['kappa_mean']:6.3f}"
        )
    t = doc["timing"]
    print(
        f"meta-iterations/s: vmap {t['meta_iter_per_s_vmap']:.1f}, "
        f"loop {t['meta_iter_per_s_loop']:.1f} "
        f"({t['meta_iter_per_s_vmap'] / max(t['meta_iter_per_s_loop'], 1e-9):.1f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
