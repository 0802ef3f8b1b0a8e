"""What the landslide map report costs: evaluatemapping with and without OUTPUT_HTML.

    python -m slidewise.bench.report_cost OUT_DIR MASK_PNG

MASK_PNG is a Bijie mask (yellow = landslide); the reference is the mask tiled 6 x 6, the
"prediction" a blurred copy shifted by 6 pixels (speed only: the figures do not matter).
Runs are alternated so that machine load hits both alike; the ratio is what to read.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin
from scipy import ndimage

from slidewise.engine.core.job import JobContext
from slidewise.engine.core.protocol import Reporter
from slidewise.engine.core.runtime import RuntimeOptions
from slidewise.engine.mapping.evaluate import run_evaluate


def write_inputs(out: Path, mask: Path) -> None:
    """The tiled reference and the blurred, shifted prediction as GeoTIFFs in ``out``."""
    rgb = np.asarray(Image.open(mask).convert("RGB"))
    ref = (rgb[..., 0] > 127) & (rgb[..., 1] > 127) & (rgb[..., 2] < 127)
    prob = ndimage.gaussian_filter(np.roll(ref, 6, axis=1).astype(np.float32), 5)
    for name, band in (("prob", np.tile(prob, (6, 6))), ("ref", np.tile(ref, (6, 6)).astype("u1"))):
        profile = {"driver": "GTiff", "width": band.shape[1], "height": band.shape[0], "count": 1}
        profile |= {"dtype": str(band.dtype), "crs": "EPSG:32648"}
        profile["transform"] = from_origin(5e5, 3e6, 0.8, 0.8)
        with rasterio.open(out / f"{name}.tif", "w", **profile) as dst:
            dst.write(band[None])


def timed(out: Path, html: bool) -> float:
    """Seconds of one evaluatemapping run."""
    params = {"INPUT": str(out / "prob.tif"), "REFERENCE": str(out / "ref.tif")}
    params["OUTPUT"] = str(out / "eval.json")
    if html:
        params["OUTPUT_HTML"] = str(out / "eval.html")
    ctx = JobContext("evaluatemapping", RuntimeOptions(), Reporter(io.StringIO()))
    start = time.perf_counter()
    run_evaluate(params, ctx)
    return time.perf_counter() - start


def main(out: Path, mask: Path) -> None:
    """Write the inputs, warm up, then time JSON-only and with-report runs alternately."""
    out.mkdir(parents=True, exist_ok=True)
    write_inputs(out, mask)
    timed(out, False)
    plain = [timed(out, False), timed(out, False)]
    report = []
    for i in range(2):
        report.append(timed(out, True))
        plain[i] = (plain[i] + timed(out, False)) / 2
    with rasterio.open(out / "ref.tif") as src:
        pixels = src.width * src.height
    print(
        f"pixels {pixels}; JSON only {plain[0]:.2f} {plain[1]:.2f} s; with report "
        f"{report[0]:.2f} {report[1]:.2f} s; ratio {sum(report) / sum(plain):.2f}"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
