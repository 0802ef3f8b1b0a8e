"""Benchmark: held-out AUC and seams of block blending over several meta seeds (issue 12).

Usage::

    OMP_NUM_THREADS=1 python -m slidewise.bench.susceptibility_blending_seeds --json OUT \\
        --workdir DIR [--seeds 0 1 2 3 4] [--widths 0 4 8 16] [--iterations 1000]

For each seed, the demo's honest split of the southern-Ecuador data (see
:mod:`.susceptibility_calibration`): blocks and a ``meta`` model trained on the
north with that seed (kept in ``DIR/s<seed>``; a folder that already holds
them, e.g. from ``susceptibility_calibration --workdir``, is reused), then the
calibrated probability predicted with every BLEND_WIDTH and scored on the
southern inventory: held-out ROC-AUC and the seam statistic. The paired
difference of each width's AUC to the hard borders (width 0) of the same model
is summarised as mean ± sample standard deviation over the seeds, with the
held-out points split by their distance to a block border.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.bench.susceptibility_calibration import (
    held_out_auc,
    measure,
    predict_variant,
)


def trained(folder: Path, seed: int, iterations: int) -> Path:
    """The seed's model in ``folder`` (trained unless already there)."""
    model = folder / "model.safetensors"
    if not (model.is_file() and (folder / "blocks.tif").is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        measure(folder, iterations, [], seed)
    return model


def border_distance(blocks: np.ndarray) -> np.ndarray:
    """Distance in pixels from every pixel to the nearest pixel of another block."""
    from scipy.ndimage import distance_transform_edt

    edge = np.zeros(blocks.shape, dtype=bool)
    for a, b in ((np.s_[:, :-1], np.s_[:, 1:]), (np.s_[:-1, :], np.s_[1:, :])):
        jump = blocks[a] != blocks[b]
        edge[a] |= jump
        edge[b] |= jump
    return np.asarray(distance_transform_edt(~edge))


def point_aucs(prob: Path, points: Path, near: np.ndarray) -> dict[str, float]:
    """Held-out ROC-AUC of all points, and of those near / far from a block border."""
    import csv

    import rasterio
    from sklearn.metrics import roc_auc_score

    with open(points, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    y = np.array([int(float(r["lslpts"])) for r in rows])
    with rasterio.open(prob) as src:
        p = np.array([v[0] for v in src.sample([(float(r["x"]), float(r["y"])) for r in rows])])
    ok = np.isfinite(p)
    out = {"all": held_out_auc(prob, points)}
    for name, sel in (("near", ok & near), ("far", ok & ~near)):
        out[name] = float(roc_auc_score(y[sel], p[sel]))
    return out


def measure_seed(folder: Path, seed: int, widths: list[int], iterations: int) -> dict[str, Any]:
    """Every width's AUCs and seams for one seed's model."""
    import csv

    import rasterio

    from slidewise.engine.susceptibility.blending import seam_statistic

    model = trained(folder, seed, iterations)
    with rasterio.open(folder / "blocks.tif") as src:
        ids = src.read(1)
        dist = border_distance(ids)
        with open(folder / "validation.csv", newline="", encoding="utf-8") as fh:
            xy = [(float(r["x"]), float(r["y"])) for r in csv.DictReader(fh)]
        near = np.array([dist[src.index(x, y)] < max(widths) for x, y in xy])
    rows = []
    for width in widths:
        out = folder / f"blend_w{width}.tif"
        predict_variant(model, out, width, True)
        with rasterio.open(out) as src:
            seams = seam_statistic(src.read(1), ids)
        row = {
            "seed": seed,
            "blend_width": width,
            "auc": point_aucs(out, folder / "validation.csv", near),
        }
        row["seams"] = {k: seams[k] for k in ("ratio", "excess")}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"seed": seed, "near_points": int(near.sum()), "points": int(near.size), "rows": rows}


def summary(seeds: list[dict[str, Any]], widths: list[int]) -> list[dict[str, Any]]:
    """Per width: mean ± sd over seeds of the AUC difference to width 0, and of the seams."""
    out = []
    for width in widths:
        diffs: dict[str, list[float]] = {"all": [], "near": [], "far": []}
        ratio, excess, auc = [], [], []
        for s in seeds:
            by_width = {r["blend_width"]: r for r in s["rows"]}
            row, base = by_width[width], by_width[0]
            for key in diffs:
                diffs[key].append(row["auc"][key] - base["auc"][key])
            ratio.append(row["seams"]["ratio"])
            excess.append(row["seams"]["excess"])
            auc.append(row["auc"]["all"])
        line: dict[str, Any] = {"blend_width": width, "auc_mean": float(np.mean(auc))}
        for key, values in diffs.items():
            line[f"diff_{key}_mean"] = float(np.mean(values))
            line[f"diff_{key}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        line["diff_all"] = diffs["all"]
        line["seam_ratio_mean"] = float(np.mean(ratio))
        line["seam_excess_mean"] = float(np.mean(excess))
        out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--widths", type=int, nargs="+", default=[0, 4, 8, 16])
    parser.add_argument("--iterations", type=int, default=1000)
    args = parser.parse_args(argv)
    widths = sorted(set([0, *args.widths]))
    work = Path(args.workdir)
    seeds = [measure_seed(work / f"s{s}", s, widths, args.iterations) for s in args.seeds]
    doc = {"settings": vars(args), "seeds": seeds, "summary": summary(seeds, widths)}
    for line in doc["summary"]:
        print(json.dumps({k: v for k, v in line.items() if k != "diff_all"}), flush=True)
    Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
