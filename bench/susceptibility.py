"""Benchmark: few-shot block-wise adaptation vs global models on held-out blocks of a table.

Usage::

    python -m slidewise.bench.susceptibility --table CSV --label COLUMN --x COLUMN \\
        --y COLUMN --shots K --blocks N --repeats R --seed S --json OUT \\
        [--methods meta,hybrid,rf,...] [--kshot 1,2,5,10,20]

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
``paired`` compares each block-wise method with the best global method fold by
fold (mean and sd of the AUC difference, folds won). ``--kshot`` adds
``kshot``: for each K, the same evaluation with K support samples per held-out
block (meta-training tasks use K support samples too) for the block-wise
methods and the best global method of the main table (``--kshot-methods``
overrides). The JSON is rewritten after every repeat and every K, so an
interrupted run keeps what it measured (``settings.complete`` says whether it
finished). ``--first-repeat R`` runs only repeats R.. of ``--repeats`` (same blocks,
same fold seeds as the full run), and ``fold_auc`` lists each fold's AUC per method, so
the repeats of two runs can be pooled.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

METHODS = ("meta", "hybrid", "rf", "lr", "mlp", "svm", "gbm")
#: Methods that adapt to each held-out block.
BLOCKWISE = ("meta", "hybrid")


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
    ap.add_argument(
        "--first-repeat",
        type=int,
        default=0,
        help="skip the repeats before this one (0-based; resumes an interrupted run)",
    )
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    ap.add_argument("--json", required=True, help="output JSON")
    ap.add_argument("--folds", type=int, default=5, help="folds per repeat (default 5)")
    ap.add_argument("--meta-iterations", type=int, default=None, help="override meta-iterations")
    ap.add_argument("--timing-iterations", type=int, default=20, help="iterations per timing")
    ap.add_argument(
        "--methods", default=",".join(METHODS), help="comma-separated methods (default: all)"
    )
    ap.add_argument("--kshot", default="", help="comma-separated K values of a K-shot curve")
    ap.add_argument(
        "--kshot-methods",
        default="",
        help="methods of the K-shot curve (default: the block-wise methods and the best global)",
    )
    ap.add_argument("--kshot-repeats", type=int, default=1, help="repeats per K (default 1)")
    return ap.parse_args(argv)


def split_words(text: str) -> list[str]:
    """``a, b`` -> ``["a", "b"]``."""
    return [w.strip() for w in text.split(",") if w.strip()]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark and return the JSON document (rewritten to ``--json`` as it goes)."""
    import torch

    from slidewise.engine.geo.sampletables import read_sample_table
    from slidewise.engine.susceptibility.blocks import kmeans_blocks
    from slidewise.engine.susceptibility.crossval import LabelledSamples
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
    methods = split_words(args.methods)
    started = time.time()
    doc: dict[str, Any] = {"methods": {}, "timing": {}, "settings": {}}

    def save(records: list[dict[str, Any]], complete: bool) -> None:
        doc["methods"] = summarise_records(records, methods)
        doc["paired"] = paired(records, methods)
        doc["fold_auc"] = fold_aucs(records, methods)
        doc["settings"] = settings_doc(args, labels.size, names, meta, records, started)
        doc["settings"]["complete"] = complete
        write_json(args.json, doc)

    records = evaluate(data, meta, args, methods, lambda r: save(r, False))
    save(records, not args.kshot)
    if args.kshot:
        kshot_curve(data, meta, args, kshot_methods(args, doc), doc, lambda: save(records, False))
        save(records, True)
    doc["timing"] = timing(data, meta, args)
    write_json(args.json, doc)
    return doc


def summarise_records(records: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """Per-method means and sds (the crossval summary)."""
    from slidewise.engine.susceptibility.crossval import summarise

    return summarise(records, methods) if records else {}


def settings_doc(
    args: argparse.Namespace,
    n_samples: int,
    names: list[str],
    meta: Any,
    records: list[dict[str, Any]],
    started: float,
) -> dict[str, Any]:
    """The ``settings`` record of the JSON document."""
    import torch

    return {
        "table": str(Path(args.table).name),
        "samples": int(n_samples),
        "factors": names,
        "shots": args.shots,
        "blocks": args.blocks,
        "repeats": args.repeats,
        "first_repeat": args.first_repeat,
        "folds": args.folds,
        "seed": args.seed,
        "folds_scored": len(records),
        "meta": meta.to_dict(),
        "seconds": round(time.time() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }


def write_json(path: str, doc: dict[str, Any]) -> None:
    """Write ``doc`` (JSON-safe) to ``path``."""
    from slidewise.engine.core.protocol import json_safe

    Path(path).write_text(json.dumps(json_safe(doc), indent=2), encoding="utf-8")


def fold_aucs(records: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """Each fold's AUC per method (so runs of different repeats can be pooled)."""
    return [{"fold": r["fold"], **{m: r[m]["auc"] for m in methods if m in r}} for r in records]


def paired(records: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """Each block-wise method against the best global method, fold by fold."""
    import numpy as np

    summary = summarise_records(records, methods)
    globals_ = [m for m in methods if m not in BLOCKWISE and m in summary]
    if not globals_:
        return {}
    best = max(globals_, key=lambda m: summary[m]["auc_mean"])
    out = {}
    for m in methods:
        if m not in BLOCKWISE:
            continue
        diff = np.array([r[m]["auc"] - r[best]["auc"] for r in records if m in r])
        diff = diff[np.isfinite(diff)]
        if diff.size:
            out[m] = {
                "versus": best,
                "auc_diff_mean": float(diff.mean()),
                "auc_diff_sd": float(diff.std()),
                "folds_won": int((diff > 0).sum()),
                "folds": int(diff.size),
            }
    return out


def evaluate(
    data: Any,
    meta: Any,
    args: argparse.Namespace,
    methods: list[str] | tuple[str, ...] = METHODS,
    after_repeat: Any = None,
    shots: int | None = None,
    repeats: int | None = None,
) -> list[dict[str, Any]]:
    """Fold records of ``repeats`` leave-blocks-out evaluations of every method."""
    from slidewise.engine.susceptibility.crossval import leave_blocks_out
    from slidewise.engine.susceptibility.models import TrainSettings

    records: list[dict[str, Any]] = []
    first = args.first_repeat if repeats is None else 0
    for r in range(first, args.repeats if repeats is None else repeats):
        seed = args.seed + 1000 * r
        records += leave_blocks_out(
            data,
            list(methods),
            TrainSettings(meta=meta, seed=seed),
            shots=args.shots if shots is None else shots,
            n_folds=args.folds,
            seed=seed,
            log=lambda m: print(m, file=sys.stderr),
        )
        if after_repeat is not None:
            after_repeat(records)
    return records


def kshot_methods(args: argparse.Namespace, doc: dict[str, Any]) -> list[str]:
    """``--kshot-methods``, or the block-wise methods and the best global method."""
    if args.kshot_methods:
        return split_words(args.kshot_methods)
    methods = [m for m in split_words(args.methods) if m in BLOCKWISE]
    found = [m for m in doc["methods"] if m not in BLOCKWISE]
    if found:
        methods.append(max(found, key=lambda m: doc["methods"][m]["auc_mean"]))
    return methods


def kshot_curve(
    data: Any,
    meta: Any,
    args: argparse.Namespace,
    methods: list[str],
    doc: dict[str, Any],
    save: Any,
) -> None:
    """AUC by K support samples per held-out block into ``doc["kshot"]``.

    ``doc["kshot"][K]`` = ``{"methods", "paired", "folds"}``; ``save()`` runs after every K.
    """
    doc["kshot"] = {}
    for k in (int(w) for w in split_words(args.kshot)):
        meta_k = replace(meta, support=k)
        records = evaluate(data, meta_k, args, methods, shots=k, repeats=args.kshot_repeats)
        doc["kshot"][str(k)] = {
            "methods": summarise_records(records, methods),
            "paired": paired(records, methods),
            "folds": len(records),
        }
        save()


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
    sampler = TaskSampler(
        x, data.labels, data.blocks, meta.support, meta.query, args.seed, meta.min_query
    )
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
    print(f"{'method':<6} {'AUC':>7} {'sd':>6} {'F1':>6} {'kappa':>6}")
    for m, s in doc["methods"].items():
        print(
            f"{m:<6} {s['auc_mean']:7.3f} {s['auc_sd']:6.3f} "
            f"{s['f1_mean']:6.3f} {s['kappa_mean']:6.3f}"
        )
    for m, p in doc.get("paired", {}).items():
        print(
            f"{m} - {p['versus']}: {p['auc_diff_mean']:+.3f} ± {p['auc_diff_sd']:.3f} "
            f"(won {p['folds_won']}/{p['folds']} folds)"
        )
    for k, entry in doc.get("kshot", {}).items():
        row = ", ".join(f"{m} {s['auc_mean']:.3f}" for m, s in entry["methods"].items())
        print(f"K={k}: {row}")
    t = doc["timing"]
    print(
        f"meta-iterations/s: vmap {t['meta_iter_per_s_vmap']:.1f}, "
        f"loop {t['meta_iter_per_s_loop']:.1f} "
        f"({t['meta_iter_per_s_vmap'] / max(t['meta_iter_per_s_loop'], 1e-9):.1f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
