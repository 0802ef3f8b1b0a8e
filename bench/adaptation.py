"""Benchmark: adaptsusceptibility on the south of Ecuador, as the demo, over several splits.

Usage::

    python -m slidewise.bench.adaptation --data tests/data/ecuador --out DIR \\
        --shots 5 --iterations 1000 --seeds 0 1 2 3 4 [--method hybrid] --json OUT

The block-wise model (``--method``: ``meta``, the default, or ``hybrid``) is
trained once (run seed 0) on the sample points north of y = 9558766
(``lsl.csv``), over 24 SLIC blocks of the whole stack, as
``scripts/demo.d/20-susceptibility.sh`` does. For each seed, ``adaptsusceptibility``
adapts it to the southern blocks with at most K class-balanced samples per
block from the southern inventory (``landslides.csv``), and every southern point
it did not adapt on is scored with:

* ``<method>_before`` (``meta_before``, ``hybrid_before``): the same model without adaptation;
* ``<method>_adapted``: the adapted model;
* ``rf_north``: a random forest (trainsusceptibility ``rf``) on the north alone;
* ``rf_north_plus_k``: the random forest on the north plus the same K samples per block;
* ``lr_north_plus_k``: logistic regression on the same samples.

``OUT`` gets the ROC-AUC of each per seed, their mean and standard deviation.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

SPLIT_Y = 9558766
BASELINES = ("rf_north", "rf_north_plus_k", "lr_north_plus_k")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    ap = argparse.ArgumentParser(
        prog="python -m slidewise.bench.adaptation", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--data", default="tests/data/ecuador", help="folder of ta.tif and the CSVs")
    ap.add_argument("--out", required=True, help="work folder")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--json", default="", help="where to write the figures")
    ap.add_argument(
        "--method",
        default="meta",
        choices=("meta", "hybrid"),
        help="block-wise method of the trained model (default meta)",
    )
    return ap.parse_args(argv)


def context(seed: int = 0) -> Any:
    """A quiet CPU job context."""
    from slidewise.engine.core.job import JobContext
    from slidewise.engine.core.protocol import Reporter
    from slidewise.engine.core.runtime import RuntimeOptions

    return JobContext("bench", RuntimeOptions(device="cpu", seed=seed), Reporter(io.StringIO()))


def write_points(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """A CSV of x, y, lslpts."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["x", "y", "lslpts"])
        writer.writerows(rows)
    return path


def halves(data: Path, out: Path) -> tuple[Path, Path]:
    """North training points and the southern inventory, as the demo splits them."""
    with open(data / "lsl.csv", newline="") as fh:
        north = [(r["x"], r["y"], r["lslpts"]) for r in csv.DictReader(fh)]
    with open(data / "landslides.csv", newline="") as fh:
        south = [(r["x"], r["y"], r["lslpts"]) for r in csv.DictReader(fh)]
    return (
        write_points(out / "north.csv", [r for r in north if float(r[1]) > SPLIT_Y]),
        write_points(out / "south.csv", [r for r in south if float(r[1]) <= SPLIT_Y]),
    )


def train(stack: Path, points: Path, method: str, output: Path, extra: dict[str, Any]) -> str:
    """trainsusceptibility on ``points`` (x, y, lslpts in the stack's CRS)."""
    from slidewise.engine.susceptibility.train import run_train

    params = {
        "INPUT": str(stack),
        "INVENTORY": str(points),
        "LABEL_FIELD": "lslpts",
        "INVENTORY_CRS": "EPSG:32717",
        "METHOD": method,
        "CV_FOLDS": 0,
        "IMPORTANCE_SAMPLES": 0,
        "OUTPUT": str(output),
        **extra,
    }
    return str(run_train(params, context()).outputs["OUTPUT"])


def global_probability(model: str, stack: Path, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """A global model's probability at map points (the stack sampled there)."""
    import rasterio

    from slidewise.engine.core.modelfile import load_model
    from slidewise.engine.geo.samples import FeatureEncoder
    from slidewise.engine.susceptibility.models import model_from_tensors

    tensors, meta = load_model(model, task="susceptibility")
    fitted = model_from_tensors(tensors, meta.config)
    encoder = FeatureEncoder.from_dict(meta.normalisation)
    with rasterio.open(stack) as src:
        names = list(src.descriptions)
        raw = np.array(list(src.sample(zip(xs, ys, strict=True))), dtype=np.float64)
    order = [names.index(b) for b in encoder.bands]
    return fitted.predict(encoder.transform(raw[:, order]))


def one_split(
    seed: int, args: argparse.Namespace, stack: Path, model: str, blocks: str
) -> dict[str, float]:
    """Adapt with one seed's split; ROC-AUC of every model on the held-out points."""
    from sklearn.metrics import roc_auc_score

    from slidewise.engine.susceptibility.adapt import run_adapt

    out, south, method = Path(args.out), Path(args.out) / "south.csv", args.method
    samples = out / f"samples_{seed}.csv"
    params = {
        "MODEL": model,
        "INPUT": str(stack),
        "INVENTORY": str(south),
        "LABEL_FIELD": "lslpts",
        "INVENTORY_CRS": "EPSG:32717",
        "BLOCKS": blocks,
        "SHOTS": args.shots,
        "SEED": seed,
        "OUTPUT": str(out / f"adapted_{seed}.safetensors"),
        "OUTPUT_SAMPLES": str(samples),
    }
    figures = run_adapt(params, context(seed)).figures
    with open(samples, newline="") as fh:
        rows = list(csv.DictReader(fh))
    held = [r for r in rows if r["role"] == "holdout"]
    y = np.array([int(r["label"]) for r in held])
    xs, ys = (np.array([float(r[k]) for r in held]) for k in ("x", "y"))
    support = [(r["x"], r["y"], r["label"]) for r in rows if r["role"] == "support"]
    with open(out / "north.csv", newline="") as fh:
        north = [(r["x"], r["y"], r["lslpts"]) for r in csv.DictReader(fh)]
    plus = write_points(out / f"north_plus_k_{seed}.csv", north + support)
    result = {
        f"{method}_before": float(roc_auc_score(y, [float(r["p_before"]) for r in held])),
        f"{method}_adapted": float(roc_auc_score(y, [float(r["p_after"]) for r in held])),
        "support": figures["support_samples"],
        "holdout": figures["holdout_samples"],
        "adaptation_seconds": figures["adaptation_seconds"],
    }
    for name, points, method in (
        ("rf_north", out / "north.csv", "rf"),
        ("rf_north_plus_k", plus, "rf"),
        ("lr_north_plus_k", plus, "lr"),
    ):
        m = train(stack, points, method, out / f"{name}_{seed}.safetensors", {"SEED": seed})
        result[name] = float(roc_auc_score(y, global_probability(m, stack, xs, ys)))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print and return (and optionally write) the figures."""
    from slidewise.engine.susceptibility.segmentblocks import run_segment_blocks

    args = parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stack = data / "ta.tif"
    north, _ = halves(data, out)
    blocks = str(out / "blocks.tif")
    seg = {"INPUT": str(stack), "N_BLOCKS": 24, "INVENTORY": str(north), "LABEL_FIELD": "lslpts"}
    run_segment_blocks({**seg, "INVENTORY_CRS": "EPSG:32717", "OUTPUT": blocks}, context())
    meta_extra = {"BLOCKS": blocks, "ITERATIONS_META": args.iterations}
    model = train(stack, north, args.method, out / f"{args.method}.safetensors", meta_extra)
    splits = {s: one_split(s, args, stack, model, blocks) for s in args.seeds}
    names = (f"{args.method}_before", f"{args.method}_adapted", *BASELINES)
    summary = {
        n: {
            "auc_mean": float(np.mean([r[n] for r in splits.values()])),
            "auc_sd": float(np.std([r[n] for r in splits.values()])),
        }
        for n in names
    }
    doc = {
        "settings": {
            "method": args.method,
            "shots": args.shots,
            "iterations": args.iterations,
            "seeds": args.seeds,
        },
        "splits": {str(k): v for k, v in splits.items()},
        "summary": summary,
    }
    for n in names:
        print(f"{n:18s} AUC {summary[n]['auc_mean']:.3f} +- {summary[n]['auc_sd']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return doc


if __name__ == "__main__":
    main()
