"""Tests of engine/modelfile.py: safetensors model files, never pickle."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from slidewise.contract.partials import PARTIAL_TAG
from slidewise.engine.core.errors import ModelFileError
from slidewise.engine.core.modelfile import (
    FORMAT_NAME,
    FORMAT_VERSION,
    METADATA_KEY,
    ModelMetadata,
    load_model,
    read_metadata,
    save_model,
)


def _metadata(task: str = "susceptibility") -> ModelMetadata:
    return ModelMetadata(
        task=task,
        architecture="maml-mlp",
        config={"hidden": [32, 16], "dropout": 0.1},
        bands=["slope", "cplan", "cprof", "elev", "log10_carea"],
        normalisation={"mean": [1.0, 2.0, 3.0, 4.0, 5.0], "std": [1.0] * 5},
        pixel_size=[10.0, 10.0],
        tile_size=None,
        provenance={"seed": 7, "data": "ecuador/lsl.csv", "auc": float("nan")},
        metrics={"auc": 0.85},
        extra={"blocks": 12},
    )


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "layer.0.weight": torch.randn(32, 5, generator=generator),
        "layer.0.bias": torch.zeros(32),
        "layer.1.weight": torch.randn(16, 32, generator=generator).t(),  # not contiguous
        "steps": torch.tensor([3], dtype=torch.int64),
    }


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return save_model(tmp_path / "model.safetensors", _tensors(), _metadata())


def test_round_trip(model_path: Path) -> None:
    tensors, metadata = load_model(model_path, task="susceptibility")
    expected = _tensors()
    assert set(tensors) == set(expected)
    for name, value in expected.items():
        assert torch.equal(tensors[name], value), name
        assert tensors[name].dtype == value.dtype
    original = _metadata()
    assert metadata.bands == original.bands and metadata.config == original.config
    assert metadata.normalisation == original.normalisation
    assert metadata.pixel_size == [10.0, 10.0] and metadata.tile_size is None
    assert metadata.class_names == ["background", "landslide"]  # 1 = landslide
    assert metadata.provenance["auc"] is None  # NaN is stored as JSON null
    assert metadata.extra == {"blocks": 12}
    # Several acceptable tasks, or none.
    assert load_model(model_path, task=("mapping", "susceptibility"))[1].task == "susceptibility"
    assert load_model(model_path)[1].architecture == "maml-mlp"
    assert [p for p in model_path.parent.iterdir() if PARTIAL_TAG in p.name] == []


def test_read_metadata_does_not_load_tensors(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("read_metadata loaded the tensors")

    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    metadata = read_metadata(model_path)
    assert metadata.task == "susceptibility" and metadata.metrics == {"auc": 0.85}


def test_wrong_task_names_both_tasks(model_path: Path) -> None:
    with pytest.raises(ModelFileError) as info:
        load_model(model_path, task="mapping")
    message = str(info.value)
    assert "'model.safetensors'" in message
    assert "susceptibility model (maml-mlp)" in message and "needs a mapping model" in message
    assert "choose a model trained for this task" in message


def test_save_refuses_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown task"):
        save_model(tmp_path / "m.safetensors", _tensors(), _metadata(task="weather"))
    assert list(tmp_path.iterdir()) == []


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"No model file was given"):
        load_model("")
    with pytest.raises(ModelFileError, match=r"does not exist: check the path"):
        read_metadata(tmp_path / "nope.safetensors")
    with pytest.raises(ModelFileError, match=r"does not exist"):
        load_model(tmp_path)  # a folder is not a model file


def test_truncated_file(model_path: Path, tmp_path: Path) -> None:
    data = model_path.read_bytes()
    header_size = int.from_bytes(data[:8], "little")

    cut_tensors = tmp_path / "cut_tensors.safetensors"
    cut_tensors.write_bytes(data[: 8 + header_size + 100])  # header intact, tensors cut
    with pytest.raises(ModelFileError, match=r"'cut_tensors.safetensors'.*train"):
        load_model(cut_tensors, task="susceptibility")

    cut_header = tmp_path / "cut_header.safetensors"
    cut_header.write_bytes(data[: 8 + header_size // 2])
    with pytest.raises(
        ModelFileError, match=r"'cut_header.safetensors' is not a valid safetensors"
    ):
        load_model(cut_header)

    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"not a valid safetensors"):
        read_metadata(empty)


def test_random_bytes(tmp_path: Path) -> None:
    noise = tmp_path / "noise.safetensors"
    noise.write_bytes(os.urandom(4096))
    with pytest.raises(ModelFileError, match=r"'noise.safetensors' is not a valid safetensors"):
        load_model(noise)


def test_safetensors_without_slidewise_metadata(tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(3)}, str(plain))
    with pytest.raises(ModelFileError, match=r"has no Slidewise metadata.*Train a model"):
        load_model(plain)

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.ones(3)}, str(other), metadata={METADATA_KEY: json.dumps({"a": 1})})
    with pytest.raises(ModelFileError, match=r"is not a Slidewise model file"):
        read_metadata(other)

    broken = tmp_path / "broken.safetensors"
    save_file({"w": torch.ones(3)}, str(broken), metadata={METADATA_KEY: "{not json"})
    with pytest.raises(ModelFileError, match=r"corrupted metadata header"):
        read_metadata(broken)


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    doc = json.loads(_metadata().to_json())
    assert doc["format"] == FORMAT_NAME and doc["format_version"] == FORMAT_VERSION
    doc["format_version"] = FORMAT_VERSION + 1
    newer = tmp_path / "newer.safetensors"
    save_file({"w": torch.ones(3)}, str(newer), metadata={METADATA_KEY: json.dumps(doc)})
    with pytest.raises(ModelFileError, match=r"newer Slidewise \(format 2\): update the plugin"):
        load_model(newer)


class _Trap:
    """Unpickling this object creates a marker file (as a malicious pickle would run code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_pickle_renamed_safetensors_is_never_unpickled(tmp_path: Path) -> None:
    # The trap works: unpickling it creates the marker.
    probe = tmp_path / "probe.marker"
    pickle.loads(pickle.dumps(_Trap(probe))).close()
    assert probe.exists()

    marker = tmp_path / "unpickled.marker"
    payload = {"state_dict": {"w": torch.ones(2)}, "trap": _Trap(marker)}
    renamed_pickle = tmp_path / "model_pickle.safetensors"
    renamed_pickle.write_bytes(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
    renamed_torch = tmp_path / "model_torch.safetensors"
    torch.save(payload, renamed_torch)  # a PyTorch checkpoint: a zip with a pickle inside

    for path in (renamed_pickle, renamed_torch):
        with pytest.raises(ModelFileError, match=r"is not a valid safetensors file"):
            read_metadata(path)
        with pytest.raises(ModelFileError, match=r"is not a valid safetensors file"):
            load_model(path, task="susceptibility")
        assert not marker.exists(), f"{path.name} was unpickled"
