"""The model card reads a Slidewise model's metadata with the standard library only."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from slidewise.ui.model_card import (
    ModelCardError,
    band_rows,
    card_html,
    card_sections,
    read_model_metadata,
)

MAPPING = {
    "format": "slidewise-model",
    "format_version": 1,
    "task": "mapping",
    "architecture": "unet",
    "config": {"architecture": "unet", "encoder": "resnet18", "in_channels": 3},
    "bands": ["red", "green", "blue"],
    "normalisation": {"kind": "fit", "mean": [86.37, 98.41, 81.41], "std": [39.6, 35.2, 32.8]},
    "pixel_size": None,
    "tile_size": 256,
    "class_names": ["background", "landslide"],
    "provenance": {
        "job": "trainmapping",
        "train_images": "/data/bijie/train/images",
        "created_utc": "2026-12-06T05:33:36Z",
        "recipe": {"name": "default"},
    },
    "metrics": {"validation": {"epoch": 6, "f1": 0.4064, "iou": 0.255, "history": []}},
    "extra": {"band_indices": [1, 2, 3], "threshold": 0.35},
}
SUSCEPTIBILITY = {
    **MAPPING,
    "task": "susceptibility",
    "architecture": "maml-mlp",
    "bands": ["slope", "elev"],
    "normalisation": {"mean": {"slope": 39.0, "elev": 2192.5}, "std": {"slope": 9.3, "elev": 300}},
    "pixel_size": [10.0, 10.0],
    "tile_size": None,
    "provenance": {"seed": 0, "inputs": ["/d/ta.tif", "/d/points.gpkg"]},
    "metrics": {"cv": {"spatial_auc_mean": 0.61}, "train_auc": 0.99},
    "extra": {},
}
REGIONS = {
    **MAPPING,
    "task": "multiregion",
    "extra": {"regions": {"bijie": {"threshold": 0.5}, "nepal": {"threshold": 0.4}}},
}


def write_safetensors(path: Path, metadata: dict | None, slidewise: dict | None) -> Path:
    """A safetensors file as the format defines it: u64 LE header length, JSON header, data."""
    header: dict = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
        if slidewise is not None:
            header["__metadata__"]["slidewise"] = json.dumps(slidewise)
    raw = json.dumps(header).encode("utf-8")
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0\0\0\0")
    return path


def test_reads_the_metadata_of_a_mapping_model(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "m.safetensors", {}, MAPPING)
    meta = read_model_metadata(path)
    assert meta == MAPPING
    sections = dict(card_sections(meta))
    model = dict(sections["Model"])
    assert model["Task"] == "Landslide mapping (segmentation)"
    assert model["Architecture"] == "unet"
    assert model["Encoder"] == "resnet18"
    assert model["Tile size"] == "256 px"
    assert model["Threshold"] == "0.35"
    assert model["Classes"] == "0 = background, 1 = landslide"
    assert model["Pixel size"] == "not recorded"
    training = dict(sections["Training"])
    assert training["Date (UTC)"] == "2026-12-06T05:33:36Z"
    assert training["Training images"] == "/data/bijie/train/images"
    assert training["Recipe"] == "default"
    metrics = dict(sections["Metrics"])
    assert metrics["validation › f1"] == "0.4064"
    assert "validation › history" not in metrics
    html = card_html(meta, path)
    assert "<h2>m.safetensors</h2>" in html and "Bands in order (normalisation: fit)" in html


def test_bands_in_order_with_their_normalisation() -> None:
    assert band_rows(MAPPING) == [
        ("1. red", "raster band 1, mean 86.37, std 39.6"),
        ("2. green", "raster band 2, mean 98.41, std 35.2"),
        ("3. blue", "raster band 3, mean 81.41, std 32.8"),
    ]
    assert band_rows(SUSCEPTIBILITY) == [
        ("1. slope", "mean 39, std 9.3"),
        ("2. elev", "mean 2192, std 300"),
    ]


def test_susceptibility_and_region_models(tmp_path: Path) -> None:
    model = dict(dict(card_sections(SUSCEPTIBILITY))["Model"])
    assert model["Pixel size"] == "10, 10 (CRS units)"
    assert "Tile size" not in model
    metrics = dict(dict(card_sections(SUSCEPTIBILITY))["Metrics"])
    assert metrics == {"cv › spatial_auc_mean": "0.61", "train_auc": "0.99"}
    regions = dict(dict(card_sections(REGIONS))["Model"])
    assert regions["Regions"] == "bijie, nepal"
    assert regions["Threshold"] == "bijie: 0.5, nepal: 0.4"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "does not exist"),
        (b"abc", "too short"),
        (struct.pack("<Q", 10**12) + b"{}", "not a safetensors file"),
        (struct.pack("<Q", 5) + b"nope!", "not a safetensors file"),
    ],
)
def test_refuses_what_is_not_safetensors(tmp_path: Path, content, needle: str) -> None:
    path = tmp_path / "x.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelCardError, match=needle):
        read_model_metadata(path)


def test_refuses_files_without_slidewise_metadata(tmp_path: Path) -> None:
    plain = write_safetensors(tmp_path / "plain.safetensors", None, None)
    with pytest.raises(ModelCardError, match="not written by Slidewise"):
        read_model_metadata(plain)
    other = write_safetensors(tmp_path / "other.safetensors", {}, {"format": "other"})
    with pytest.raises(ModelCardError, match="not a Slidewise model"):
        read_model_metadata(other)
