"""detectlandslides' detector route on a local Dask cluster writes what one process writes."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio.raw
import pytest
import rasterio
import torch
from engine_helpers import (
    SHARED,
    assert_steady_progress,
    job_context,
    log_messages,
    progress_values,
)
from rasterio.transform import from_origin

from slidewise.engine.detection.annotations import parse_voc_xml
from slidewise.engine.detection.apply import (
    DetectOptions,
    DetectorPlan,
    detect_tiles,
    fit_detector_to_tile,
    run_detect,
    tile_origins,
)
from slidewise.engine.detection.data import read_image
from slidewise.engine.detection.models import (
    DetectorConfig,
    build_detector,
    load_detector,
    save_detector,
)

EVENTS = SHARED / "detection" / "events_rgb" / "train"
TRAIN = EVENTS / "1999 chichi earthquake_patch_3136_1344"  # 37 boxes
SCENE = EVENTS / "1999 chichi earthquake_patch_3584_1792"  # 25 boxes

# One thread in the job's process, as on each Dask worker: the same forward passes.
pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(not EVENTS.is_dir(), reason="detection data not available"),
]


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small Faster R-CNN trained for 2 steps on a real image (its scores vary)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 0.5 s a step; 12 s with 2 threads on a loaded machine
    torch.manual_seed(0)
    image = torch.from_numpy(read_image(TRAIN.with_suffix(".jpg")))
    mean = [float(v) for v in image.mean((1, 2))]
    std = [float(v) for v in image.std((1, 2))]
    config = DetectorConfig(
        min_size=112, max_size=112, fpn_channels=32, image_mean=mean, image_std=std
    )
    model = build_detector(config)
    boxes = torch.from_numpy(parse_voc_xml(TRAIN.with_suffix(".xml"))[2])
    target = {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64)}
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for _ in range(2):
        loss = sum(model([image], [target]).values())
        optimiser.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        optimiser.step()
    torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("detector") / "det.safetensors"
    save_detector(path, model.eval(), config, ["red", "green", "blue"], tile_size=224)
    return str(path)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Another real 224 x 224 image as a georeferenced GeoTIFF (2 m pixels, UTM 51N)."""
    data = read_image(SCENE.with_suffix(".jpg")).astype(np.uint8)
    path = tmp_path_factory.mktemp("scene") / "chichi.tif"
    profile = {"driver": "GTiff", "width": 224, "height": 224, "count": 3, "dtype": "uint8"}
    transform = from_origin(200000.0, 2650000.0, 2.0, 2.0)
    with rasterio.open(path, "w", crs="EPSG:32651", transform=transform, **profile) as dst:
        dst.write(data)
    return str(path)


def _detect(detector: str, scene: str, out: Path, **extra: Any) -> tuple[Any, list[str], Any]:
    params = {"INPUT": scene, "MODEL": detector, "TILE_SIZE": 80, "OVERLAP": 20}
    params |= {"SCORE_THRESHOLD": 0.0, "OUTPUT": str(out), **extra}
    ctx, stream = job_context("detectlandslides")
    result = run_detect(params, ctx)
    return result, log_messages(stream), (pyogrio.raw.read(str(out)), progress_values(stream))


def test_two_local_workers_find_the_boxes_one_process_finds(
    detector: str, scene: str, tmp_path: Path
) -> None:
    one, _, (want, _) = _detect(detector, scene, tmp_path / "one.gpkg")
    two, logs, (got, progress) = _detect(detector, scene, tmp_path / "two.gpkg", WORKERS=2)
    assert any("local Dask cluster of 2 worker" in m for m in logs)
    assert not any("this job's process" in m for m in logs)  # no one-process warning
    assert two.figures["cluster"]["workers"] == 2
    # 16 tiles (80 px, 20 px overlap on 224 px) and many boxes, some merged across tiles.
    assert one.figures["tiles"] == two.figures["tiles"] == 16
    assert one.figures["raw_boxes"] == two.figures["raw_boxes"] > one.figures["boxes"] > 20
    # The same boxes, in the same order, with the same scores.
    assert list(got[2]) == list(want[2])
    got_scores, want_scores = np.asarray(got[3][0]), np.asarray(want[3][0])
    assert np.max(np.abs(got_scores - want_scores)) <= 1e-6
    assert np.all(np.diff(want_scores) <= 0) and np.ptp(want_scores) > 0.01
    # Progress per finished tile batch (1 tile on CPU), up to the stage's 95 %.
    assert_steady_progress(progress, 2, 95, steps=16)
    assert not multiprocessing.active_children()  # the local cluster closed with the job


def test_a_pickled_tile_task_detects_what_this_process_detects(detector: str, scene: str) -> None:
    """The task the workers run, here (no cluster): the boxes of the one-process batches."""
    from slidewise.engine.detection.detect_cluster import DetectorTileTask

    options = DetectOptions(score_threshold=0.0, batch_size=3)
    plan = DetectorPlan(scene, detector, (1, 2, 3), (90.0, 90.0, 80.0), 80, 20, options)
    task = pickle.loads(pickle.dumps(DetectorTileTask(plan)))
    batch = tile_origins(224, 224, 80, 20)[4:7]  # the second row's first three tiles
    remote = task(batch)
    assert "opened" not in pickle.loads(pickle.dumps(task)).__dict__  # never pickled open
    model, meta = load_detector(detector)
    fit_detector_to_tile(model, meta, 80, 0.0)
    with rasterio.open(scene) as src:
        local = detect_tiles(model, src, batch, (1, 2, 3), plan.fill, 80, options)
    assert remote.tiles_run == local.tiles_run == 3 and len(local.boxes) > 10
    assert np.array_equal(remote.boxes, local.boxes)
    assert np.array_equal(remote.scores, local.scores)
    assert np.array_equal(remote.tiles, local.tiles) and set(local.tiles) == {4, 5, 6}
    assert np.array_equal(remote.cut, local.cut) and local.cut.any()


class _Cancelled(BaseException):
    """What the worker raises on Cancel (SIGTERM), raised here from the progress callback."""


def test_a_cancel_mid_way_leaves_no_output_and_no_worker(
    detector: str, scene: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from slidewise.engine.core.protocol import Reporter

    calls: list[float] = []

    def cancel_on_fifth(self: Reporter, value: float) -> None:
        calls.append(value)
        if len(calls) == 5:
            raise _Cancelled

    monkeypatch.setattr(Reporter, "progress", cancel_on_fifth)
    with pytest.raises(_Cancelled):
        _detect(detector, scene, tmp_path / "boxes.gpkg", WORKERS=2)
    assert list(tmp_path.iterdir()) == []  # no output, no partial file
    assert not multiprocessing.active_children()  # the workers are gone
