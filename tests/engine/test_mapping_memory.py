"""Peak memory of a real maplandslides job: the outputs are written strip by strip.

The jobs run in the engine worker's code (``worker.run``) in one subprocess: a small
raster first (imports, model, GDAL reach their working size), then a short (1024 x 4096:
four rows of the CPU's 1088-px tiles, so that it already holds what a streaming job holds;
with one tile row, 1024 x 1024, it held 14 MB less than any taller raster)
and a tall (1024 x 8192) one, nodata but for one real Bijie patch (so the model runs on a
few tiles only and the jobs stay short). Holding the tall job's probability (float32)
whole takes 4 bytes per pixel (32 MB), its mask 1 more.

Two measures of each job, both reset before it:

- the peak of what numpy and Python allocate (``tracemalloc``; numpy reports its arrays
  to it): exact, and blind to allocator slack. Streaming, the tall job peaks where the
  short one does (24 and 27 MB measured: strips, tiles, the model's state); gathering
  the strips adds 4 bytes per extra pixel. Bound: 1 byte per extra pixel (7 MB).
- the peak RSS (``VmHWM`` of ``/proc/self/status``, reset through ``clear_refs``) over
  the RSS the job started with: it also sees torch and GDAL, but freed memory the
  allocator keeps hides growth up to its size (a gather of 64 MB raised it by 9 MB only),
  so its bound is loose: the tall job may grow it by 6 bytes per extra pixel more than the
  short job did (the first job with whole 1088-px tiles grows it by their working set,
  which the allocator may or may not hand back before the next job): it catches a job
  that reads the whole input (12 bytes per pixel as float32).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from engine_helpers import REPO
from PIL import Image

BIJIE_IMAGE = REPO / "tests" / "data" / "bijie" / "train" / "images" / "10009.png"
WIDTH, WARM, SHORT, TALL = 1024, 256, 4096, 8192
#: Bytes per extra pixel the tall job's numpy/Python peak may exceed the short one's by.
TRACED_BYTES_PER_PIXEL = 1.0
#: Bytes per extra pixel the tall job may add to its RSS beyond what the short job added.
RSS_BYTES_PER_PIXEL = 6.0

MEASURE = """
import io, json, sys, tracemalloc
from pathlib import Path
from slidewise.engine import worker
from slidewise.engine.core.protocol import Reporter

def status(key):
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key))
    return int(line.split()[1]) * 1024

measures = []
for job in json.loads(sys.argv[1]):
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    start = status("VmRSS:")
    tracemalloc.start()
    stream = io.StringIO()
    code = worker.run(job, Reporter(stream))
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert code == 0, stream.getvalue()[-2000:]
    measures.append({"traced_peak": traced, "rss_growth": status("VmHWM:") - start})
print(json.dumps(measures))
"""


def _raster(path: Path, height: int) -> str:
    """WIDTH x ``height`` RGB, nodata 0 except one real 256 x 256 patch at the top."""
    patch = np.asarray(Image.open(BIJIE_IMAGE))[:256, :256, :3]
    profile = {
        "driver": "GTiff",
        "width": WIDTH,
        "height": height,
        "count": 3,
        "dtype": "uint8",
        "nodata": 0,
        "crs": "EPSG:32648",
        "transform": rasterio.transform.from_origin(500000, 3000000, 1, 1),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(patch, -1, 0), window=rasterio.windows.Window(0, 0, 256, 256))
    return str(path)


def _model(path: Path) -> str:
    import torch

    from slidewise.engine.imagery.segmodels import SegModelConfig, build_model, save_mapping_model

    torch.manual_seed(0)
    config = SegModelConfig(architecture="linknet", encoder="mobilenet_v2", in_channels=3)
    norm = {"kind": "fit", "mean": [100.0] * 3, "std": [50.0] * 3}
    model = build_model(config).eval()
    save_mapping_model(path, model, config, ["r", "g", "b"], norm, tile_size=128)
    return str(path)


@pytest.mark.slow
def test_maplandslides_peak_memory_does_not_grow_with_the_raster(tmp_path: Path) -> None:
    model = _model(tmp_path / "model.safetensors")
    jobs = [
        {
            "job": "maplandslides",
            "params": {
                "INPUT": _raster(tmp_path / f"{name}.tif", height),
                "MODEL": model,
                # PyTorch on every job: BACKEND auto probes the runtimes (an ONNX export)
                # on rasters of 4 Mpx or more only, a one-off cost the tall job alone would pay.
                "BACKEND": "torch",
                "OUTPUT_PROBABILITY": str(tmp_path / f"{name}_probability.tif"),
                "OUTPUT_MASK": str(tmp_path / f"{name}_mask.tif"),
            },
        }
        for name, height in (("warm", WARM), ("short", SHORT), ("tall", TALL))
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO.parent),
        "GDAL_CACHEMAX": "4",
        "OMP_NUM_THREADS": "1",
    }
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("this kernel does not let a process reset its peak RSS")
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, short, tall = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"numpy/Python peak {short['traced_peak'] / 2**20:.0f} MB (short) -> "
        f"{tall['traced_peak'] / 2**20:.0f} MB (tall); the tall job's RSS grew "
        f"{tall['rss_growth'] / 2**20:.0f} MB"
    )
    extra = WIDTH * (TALL - SHORT)
    grown = tall["traced_peak"] - short["traced_peak"]
    assert grown < TRACED_BYTES_PER_PIXEL * extra, (
        f"the job's arrays grew by {grown / extra:.2f} bytes per extra pixel of the raster: "
        "it holds its outputs whole instead of writing them strip by strip"
    )
    # Against the short job, not zero: the first job with whole 1088-px tiles grows the
    # RSS by their working set (~150 MB), and whether the allocator hands it back before
    # the tall job starts varies from run to run; what must not happen is growth with height.
    assert tall["rss_growth"] < short["rss_growth"] + RSS_BYTES_PER_PIXEL * extra, (short, tall)
    with rasterio.open(tmp_path / "tall_probability.tif") as src:
        assert (src.width, src.height) == (WIDTH, TALL)
