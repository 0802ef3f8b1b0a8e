"""Per-region decoders (TSMU): model files, frozen and distill modes, errors, mapping by region."""

from __future__ import annotations

import copy
import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import BIJIE, assert_steady_progress, bijie_subset, job_context, log_messages

from slidewise.engine.core.errors import InputError, ModelFileError
from slidewise.engine.core.job import JobContext
from slidewise.engine.core.modelfile import read_metadata
from slidewise.engine.core.protocol import Reporter
from slidewise.engine.core.runtime import RuntimeOptions
from slidewise.engine.imagery.datasets import (
    ChipRequest,
    DatasetSpec,
    MappingData,
    prepare_mapping_data,
)
from slidewise.engine.imagery.regions import (
    MultiRegionModel,
    distillation_loss,
    load_multiregion,
    load_or_convert,
    save_multiregion,
)
from slidewise.engine.imagery.segmodels import SegModelConfig, build_model, save_mapping_model
from slidewise.engine.mapping.addregion import AddRegionParams, run_add_region
from slidewise.engine.mapping.forgetting import (
    forgetting_table,
    format_table,
    parse_old_region_data,
)
from slidewise.engine.mapping.regionmaps import predict_regions
from slidewise.engine.mapping.regiontraining import RegionSettings, train_region

TINY = SegModelConfig("unet", "resnet18", 3, 3, extra={"decoder_channels": [16, 8, 8]})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pairs(root: Path, n: int, seed: int, colour: tuple[int, int, int]) -> tuple[str, str]:
    """Synthetic 64 x 64 image/mask pairs: textured ground with coloured landslide blobs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    img, msk = root / "images", root / "masks"
    img.mkdir(parents=True)
    msk.mkdir(parents=True)
    for i in range(n):
        a = rng.integers(0, 110, (64, 64, 3)).astype(np.uint8)
        m = np.zeros((64, 64), np.uint8)
        for _ in range(2):
            r, c = rng.integers(4, 48, 2)
            h, w = rng.integers(6, 14, 2)
            m[r : r + h, c : c + w] = 255
        a[m > 0] = np.clip(np.asarray(colour) + rng.integers(-30, 30, 3), 0, 255)
        Image.fromarray(a).save(img / f"{i}.png")
        Image.fromarray(m).save(msk / f"{i}.png")
    return str(img), str(msk)


def _data(root: Path, seed: int, colour: tuple[int, int, int]) -> MappingData:
    img, msk = _pairs(root, 6, seed, colour)
    return prepare_mapping_data(ChipRequest(DatasetSpec("pairs", img, msk), chip_size=64, seed=0))


def _record(data: MappingData) -> dict:
    return {
        "bands": data.band_names,
        "band_indices": data.band_indices,
        "normalisation": data.normalisation,
        "threshold": 0.5,
        "tile_size": 64,
    }


def _ctx(seed: int = 0) -> tuple[JobContext, io.StringIO]:
    return job_context("addregion", seed)


def _probs(model: MultiRegionModel, region: str, data: MappingData) -> torch.Tensor:
    model.eval()
    x = torch.stack([data.valid[i][0] for i in range(len(data.valid))])
    with torch.no_grad():
        return torch.sigmoid(model(x, region))


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, MappingData]:
    root = tmp_path_factory.mktemp("regions")
    return {
        "a": _data(root / "a", 0, (230, 210, 60)),
        "b": _data(root / "b", 1, (60, 220, 230)),
    }


# --------------------------------------------------------------------------- model files


def test_round_trip_two_regions_and_region_mapping(
    tmp_path: Path, regions: dict[str, MappingData]
) -> None:
    import rasterio
    from rasterio.transform import from_origin

    from slidewise.engine.geo.vectors import write_vector
    from slidewise.engine.imagery.tiling import TilingOptions, predict_raster

    torch.manual_seed(0)
    model = MultiRegionModel(TINY, ["a"])
    model.add_region("b", init_from="a")
    assert torch.equal(model.heads["b"][0].weight, model.heads["a"][0].weight)
    with torch.no_grad():
        model.heads["b"][0].weight.mul_(-1.0)  # two decoders that differ
    model.records = {"a": _record(regions["a"]), "b": _record(regions["b"])}
    model.records["b"]["normalisation"] = {"kind": "fit", "mean": [0.0] * 3, "std": [200.0] * 3}
    path = save_multiregion(tmp_path / "two.safetensors", model)
    meta = read_metadata(path)
    assert meta.task == "multiregion"
    assert meta.extra["region_order"] == ["a", "b"]
    assert set(meta.extra["regions"]) == {"a", "b"}

    loaded, meta = load_multiregion(path)
    assert loaded.regions == ["a", "b"]
    assert loaded.records["b"]["normalisation"]["std"] == [200.0] * 3
    ref = model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.state_dict().items())
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    for r in ("a", "b"):
        assert torch.equal(loaded(x, r), model(x, r))
        assert torch.equal(loaded.view(r)(x), model(x, r))

    # Mapping: a raster, left half in a polygon of region a, right half of region b.
    image = np.random.default_rng(0).integers(0, 255, (3, 64, 96)).astype(np.float32)
    raster = tmp_path / "scene.tif"
    transform = from_origin(500000, 4000000, 10, 10)
    profile = {"driver": "GTiff", "width": 96, "height": 64, "count": 3, "dtype": "float32"}
    with rasterio.open(raster, "w", crs="EPSG:32648", transform=transform, **profile) as dst:
        dst.write(image)
    import shapely

    left = shapely.box(500000, 4000000 - 640, 500000 + 480, 4000000)
    right = shapely.box(500000 + 640, 4000000 - 640, 500000 + 960, 4000000)
    polygons = tmp_path / "regions.gpkg"
    write_vector(
        polygons,
        np.array([left, right], dtype=object),
        {"Region": np.array(["a", "b"], dtype=object)},
        crs="EPSG:32648",
    )
    whole = {
        r: predict_raster(
            loaded.view(r),
            str(raster),
            TilingOptions(tile=64, overlap=32),
            normalisation=loaded.records[r]["normalisation"],
        )
        for r in ("a", "b")
    }
    stats: dict = {}
    mixed = predict_regions(
        loaded, str(raster), None, polygons, "region", tile=64, overlap=32, stats=stats
    )
    assert mixed is not None and mixed.shape == (64, 96)
    assert stats["regions"] == ["a", "b"]
    np.testing.assert_allclose(mixed[:, :48], whole["a"][:, :48], atol=1e-6)
    np.testing.assert_allclose(mixed[:, 64:], whole["b"][:, 64:], atol=1e-6)
    assert np.isnan(mixed[:, 48:64]).all()  # outside every polygon, no default region
    filled = predict_regions(loaded, str(raster), "a", polygons, "region", tile=64, overlap=32)
    assert filled is not None
    np.testing.assert_allclose(filled[:, 48:64], whole["a"][:, 48:64], atol=1e-6)
    only_b = predict_regions(loaded, str(raster), "b", tile=64, overlap=32)
    np.testing.assert_allclose(only_b, whole["b"], atol=1e-6)

    with pytest.raises(InputError, match=r"no region 'c': its regions are a, b"):
        predict_regions(loaded, str(raster), "c")
    with pytest.raises(InputError, match="has regions a, b"):
        predict_regions(loaded, str(raster))
    with pytest.raises(InputError, match="no field 'zone'"):
        predict_regions(loaded, str(raster), None, polygons, "zone")
    bad = tmp_path / "bad.gpkg"
    write_vector(
        bad, np.array([left], dtype=object), {"region": np.array(["x"], dtype=object)},
        crs="EPSG:32648",
    )  # fmt: skip
    with pytest.raises(InputError, match=r"region\(s\) x that the model does not have"):
        predict_regions(loaded, str(raster), None, bad)

    # The maplandslides job picks decoders the same way, with each region's threshold.
    from slidewise.engine.mapping.apply import run_map

    ctx = JobContext("maplandslides", RuntimeOptions(device="cpu"), Reporter(io.StringIO()))
    loaded.records["a"]["threshold"], loaded.records["b"]["threshold"] = 0.2, 0.9
    save_multiregion(path, loaded)
    prob_tif, mask_tif = tmp_path / "prob.tif", tmp_path / "mask.tif"
    job = {
        "INPUT": str(raster),
        "MODEL": str(path),
        "REGION_POLYGONS": str(polygons),
        "REGION_FIELD": "REGION",
        "TILE_SIZE": 64,
        "OVERLAP": 32,
        "OUTPUT_PROBABILITY": str(prob_tif),
        "OUTPUT_MASK": str(mask_tif),
    }
    result = run_map(job, ctx)
    assert result.figures["regions"] == "a, b"
    assert result.figures["region_thresholds"] == {"a": pytest.approx(0.2), "b": 0.9}
    with rasterio.open(prob_tif) as src:
        np.testing.assert_allclose(src.read(1), mixed, atol=1e-6)
    with rasterio.open(mask_tif) as src:
        written = src.read(1)
    np.testing.assert_array_equal(written[:, :48], (mixed[:, :48] >= 0.2).astype(np.uint8))
    np.testing.assert_array_equal(written[:, 64:], (mixed[:, 64:] >= 0.9).astype(np.uint8))
    assert (written[:, 48:64] == 255).all()
    one = run_map({**job, "REGION": "b", "REGION_POLYGONS": "", "THRESHOLD": 0.5}, ctx)
    assert one.figures["regions"] == "b"
    with rasterio.open(prob_tif) as src:
        np.testing.assert_allclose(src.read(1), whole["b"], atol=1e-6)
    with rasterio.open(mask_tif) as src:
        np.testing.assert_array_equal(src.read(1), (whole["b"] >= 0.5).astype(np.uint8))
    with pytest.raises(InputError, match="choose the REGION"):
        run_map({**job, "REGION_POLYGONS": ""}, ctx)
    with pytest.raises(InputError, match="no region 'c'"):
        run_map({**job, "REGION": "c"}, ctx)
    single = tmp_path / "single.safetensors"
    unet = build_model(TINY)
    save_mapping_model(single, unet, TINY, ["red", "green", "blue"], {"kind": "none"})
    with pytest.raises(InputError, match="has a single decoder"):
        run_map({**job, "MODEL": str(single), "REGION": "a"}, ctx)


def test_region_errors_and_other_tasks(tmp_path: Path, regions: dict[str, MappingData]) -> None:
    model = MultiRegionModel(TINY, ["a"])
    with pytest.raises(InputError, match=r"has no region 'zz': its regions are a\."):
        model(torch.randn(1, 3, 32, 32), "zz")
    with pytest.raises(InputError, match=r"already has a region 'a'.*REPLACE"):
        model.add_region("a")
    model.add_region("a", replace=True)
    for bad in ("", "a.b", " ", "x" * 65):
        with pytest.raises(InputError, match="Invalid region name"):
            model.add_region(bad)
    with pytest.raises(InputError, match="reserved"):
        model.add_region("update")
    with pytest.raises(InputError, match="smp U-Net"):
        MultiRegionModel(SegModelConfig("fpn", "resnet18", 3, 3), ["a"])

    # A mapping model is converted; any other task, and a mapping model as multiregion, fail.
    unet = build_model(TINY)
    mapping = tmp_path / "mapping.safetensors"
    save_mapping_model(
        mapping, unet, TINY, ["red", "green", "blue"], regions["a"].normalisation,
        tile_size=64, extra={"threshold": 0.4, "band_indices": [1, 2, 3]},
    )  # fmt: skip
    converted, kind = load_or_convert(mapping, "bijie")
    assert kind == "mapping" and converted.regions == ["bijie"]
    assert converted.records["bijie"]["threshold"] == 0.4
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(converted(x, "bijie"), unet.eval()(x))
    with pytest.raises(ModelFileError, match=r"holds a mapping model.*needs a multiregion model"):
        load_multiregion(mapping)
    from slidewise.engine.detection.pretrain import save_encoder

    encoder = tmp_path / "encoder.safetensors"
    save_encoder(encoder, unet.encoder.state_dict(), "resnet18", 3)
    with pytest.raises(
        ModelFileError, match=r"holds a encoder model.*multiregion model or a mapping"
    ):
        load_or_convert(encoder)
    resunet = SegModelConfig("resunet", extra={"widths": [8, 16], "deep_supervision": False})
    other = tmp_path / "resunet.safetensors"
    save_mapping_model(other, build_model(resunet), resunet, ["r", "g", "b"], {})
    with pytest.raises(InputError, match="only smp U-Net mapping models"):
        load_or_convert(other)

    with pytest.raises(InputError, match=r"names the region 'x'.*its regions are a"):
        parse_old_region_data('{"x": {"images": "i", "masks": "m"}}', ["a"])
    with pytest.raises(InputError, match="must be a JSON object"):
        parse_old_region_data("images=foo", ["a"])
    listed = parse_old_region_data('[{"Region": "a", "IMAGES": "i", "masks": "m"}]', ["a"])
    assert listed == {"a": {"images": "i", "masks": "m"}}


def test_distillation_loss_and_table() -> None:
    z = torch.randn(2, 1, 8, 8)
    assert float(distillation_loss(z, z, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(z + 1.0, z, 2.0)) > 0.0
    rows = forgetting_table(
        {"a": {"f1": 0.5, "iou": 0.4}, "b": None},
        {"a": {"f1": 0.45, "iou": 0.38}, "b": {"f1": 0.7, "iou": 0.6}},
        new_region="b",
    )
    assert rows[0]["f1_delta"] == pytest.approx(-0.05)
    assert rows[1]["f1_before"] is None and rows[1]["new"]
    text = format_table(rows)
    assert "b (new)" in text and "-0.050" in text


# --------------------------------------------------------------------------- training modes


def test_frozen_mode_keeps_encoder_and_old_decoder_bit_identical(
    regions: dict[str, MappingData],
) -> None:
    torch.manual_seed(0)
    model = MultiRegionModel(TINY, ["a"])
    model.records["a"] = _record(regions["a"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = RegionSettings(mode="frozen", epochs=1, chips_per_epoch=4, init_from="a")
    outcome = train_region(model, "b", regions["b"], settings, log=lambda _: None)
    after = model.state_dict()
    kept = [k for k in before if k.startswith(("encoder.", "decoders.a.", "heads.a."))]
    assert len(kept) == len(before)
    assert all(torch.equal(before[k], after[k]) for k in kept)  # BN buffers included
    new = [k for k in after if k.startswith("decoders.b.") and after[k].is_floating_point()]
    assert any(not torch.equal(after[k], before[k.replace(".b.", ".a.", 1)]) for k in new)
    assert outcome.best_epoch == 1 and outcome.start_metrics is not None


def test_region_training_progress_advances_per_batch(regions: dict[str, MappingData]) -> None:
    # Two epochs of four batches: a fraction after every batch, never back, ending at 1.
    model = MultiRegionModel(TINY, ["a"])
    model.records["a"] = _record(regions["a"])
    settings = RegionSettings(mode="frozen", epochs=2, chips_per_epoch=8, batch_size=2)
    values: list[float] = []
    train_region(model, "b", regions["b"], settings, log=lambda _: None, progress=values.append)
    assert_steady_progress(values, 0, 1, steps=2 * 4)


def test_distill_changes_encoder_but_old_outputs_stay_close(
    regions: dict[str, MappingData],
) -> None:
    torch.manual_seed(0)
    base = MultiRegionModel(TINY, ["a"])
    base.records["a"] = _record(regions["a"])
    reference = _probs(base, "a", regions["a"])
    changes = {}
    for name, lam in (("distill", 1.0), ("finetune", 0.0)):
        model = copy.deepcopy(base)
        settings = RegionSettings(
            mode="distill",
            epochs=2,
            chips_per_epoch=4,
            lr=3e-3,
            encoder_lr_scale=1.0,  # the full rate: a clear drift to measure
            distill_lambda=lam,
            temperature=2.0,
            init_from="a",
            augment=False,
        )
        train_region(model, "b", regions["b"], settings, log=lambda _: None)
        moved = max(
            float((model.state_dict()[k] - v).abs().max())
            for k, v in base.state_dict().items()
            if k.startswith("encoder.") and v.is_floating_point()
        )
        assert moved > 0.0, "the encoder must be fine-tuned in distill mode"
        changes[name] = float((_probs(model, "a", regions["a"]) - reference).abs().mean())
    # Measured on region a's own validation chips: distillation keeps the old decoder's
    # outputs much closer than fine-tuning the encoder without it.
    assert changes["distill"] < 0.5 * changes["finetune"], changes


# --------------------------------------------------------------------------- the job


def test_parameters_follow_the_contract() -> None:
    fields = {f.name for f in dataclasses.fields(AddRegionParams)}
    assert fields == {p.name.lower() for p in AddRegionParams.SPEC.params} - {"lambda"} | {
        "lambda_"
    }
    base = {"REGION": "east", "TRAIN_IMAGES": "images", "OUTPUT": "m.safetensors"}
    options = AddRegionParams.from_params(dict(base, LAMBDA="0.5", LOSS="0", MODE=1))
    assert (options.lambda_, options.task_loss, options.mode) == (0.5, "dice", "distill")
    assert AddRegionParams.from_params(dict(base, LOSS="1")).task_loss == "dice"
    assert AddRegionParams.from_params(base).mode is None
    with pytest.raises(InputError, match="WARMUP_EPOCHS must be between 0 and 100000"):
        AddRegionParams.from_params(dict(base, WARMUP_EPOCHS=-1))


def test_job_first_region_then_add_and_replace(tmp_path: Path) -> None:
    a_img, a_msk = _pairs(tmp_path / "a", 6, 0, (230, 210, 60))
    b_img, b_msk = _pairs(tmp_path / "b", 6, 1, (60, 220, 230))
    common = {"DATASET_TYPE": "pairs", "CHIP_SIZE": 64, "EPOCHS": 1, "SEED": 0}
    first = tmp_path / "a.safetensors"
    ctx, _ = _ctx()
    result = run_add_region(
        {
            **common,
            "REGION": "a",
            "TRAIN_IMAGES": a_img,
            "TRAIN_MASKS": a_msk,
            "ENCODER_DEPTH": 3,
            "BATCH_SIZE": 4,
            "OUTPUT": str(first),
        },
        ctx,
    )
    assert result.figures["regions"] == ["a"]
    meta = load_multiregion(first)[1]
    assert meta.extra["regions"]["a"]["data"]["train_images"] == a_img

    two = tmp_path / "ab.safetensors"
    ctx, stream = _ctx()
    params = {
        **common,
        "MODEL": str(first),
        "REGION": "b",
        "MODE": "frozen",
        "TRAIN_IMAGES": b_img,
        "TRAIN_MASKS": b_msk,
        "CHIPS_PER_EPOCH": 2,
        "OUTPUT": str(two),
    }
    result = run_add_region(params, ctx)
    logs = "\n".join(log_messages(stream))
    assert "validation split of its training data" in logs  # rebuilt from the stored data
    assert "Forgetting table" in logs and "b (new)" in logs
    row = result.figures["forgetting"][0]
    assert row["region"] == "a" and row["f1_delta"] == 0.0 and row["iou_delta"] == 0.0
    loaded, meta = load_multiregion(two)
    assert loaded.regions == ["a", "b"]
    assert meta.extra["events"][-1]["forgetting"][0]["f1_before"] == row["f1_before"]
    assert meta.extra["regions"]["b"]["training"]["mode"] == "frozen"

    again = two.with_name("two_again.safetensors")
    with pytest.raises(InputError, match=r"already has a region 'b'.*REPLACE"):
        run_add_region({**params, "MODEL": str(two), "OUTPUT": str(again)}, _ctx()[0])
    with pytest.raises(InputError, match="no region 'q'"):
        run_add_region(
            {**params, "MODEL": str(two), "OUTPUT": str(again), "REGION": "c", "INIT_FROM": "q"},
            _ctx()[0],
        )
    with pytest.raises(InputError, match=r"OUTPUT is the input MODEL .*never overwrites"):
        run_add_region({**params, "MODEL": str(two), "REPLACE": True}, _ctx()[0])
    replaced = run_add_region(
        {**params, "MODEL": str(two), "REPLACE": True, "OUTPUT": str(again)}, _ctx()[0]
    )
    assert [r["region"] for r in replaced.figures["forgetting"]] == ["a", "b"]
    assert load_multiregion(again)[0].regions == ["a", "b"]


@pytest.mark.slow
@pytest.mark.skipif(not BIJIE.is_dir(), reason="Bijie pairs not available")
def test_distill_mode_on_real_pairs(tmp_path: Path) -> None:
    """MODE distill on the real Bijie pairs: the encoder moves, the old decoder does not."""
    names = sorted(p.name for p in (BIJIE / "images").glob("*.png"))
    a_img, a_msk = bijie_subset(tmp_path / "a", names[:4])
    b_img, b_msk = bijie_subset(tmp_path / "b", names[4:7])
    common = {
        "DATASET_TYPE": "pairs",
        "MASK_COLOR": "255,255,0",
        "CHIP_SIZE": 128,
        "EPOCHS": 1,
        "CHIPS_PER_EPOCH": 8,
        "SEED": 0,
    }
    first = tmp_path / "a.safetensors"
    run_add_region(
        {
            **common,
            "REGION": "west",
            "TRAIN_IMAGES": str(a_img),
            "TRAIN_MASKS": str(a_msk),
            "ENCODER_DEPTH": 3,
            "OUTPUT": str(first),
        },
        _ctx()[0],
    )
    two = tmp_path / "ab.safetensors"
    result = run_add_region(
        {
            **common,
            "MODEL": str(first),
            "REGION": "east",
            "MODE": "distill",
            "TRAIN_IMAGES": str(b_img),
            "TRAIN_MASKS": str(b_msk),
            "OUTPUT": str(two),
        },
        _ctx()[0],
    )
    row = result.figures["forgetting"][0]
    assert row["region"] == "west" and 0.0 <= row["f1_after"] <= 1.0
    assert result.figures["west_f1_delta"] == row["f1_delta"]
    before, after = load_multiregion(first)[0], load_multiregion(two)[0]
    assert after.records["east"]["training"]["mode"] == "distill"
    old, new = before.state_dict(), after.state_dict()
    assert any(not torch.equal(v, new[k]) for k, v in old.items() if k.startswith("encoder."))
    assert all(torch.equal(v, new[k]) for k, v in old.items() if k.startswith("decoders.west."))
