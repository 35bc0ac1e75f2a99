"""Checkpoints: round trips and clear errors for damaged or foreign files."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from coordgate.models import build_model
from coordgate.training import (
    CheckpointConfig,
    CheckpointError,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from coordgate.training.checkpoint import (
    load_training_state,
    read_checkpoint_config,
    restore_rng_state,
    rng_state,
    save_training_state,
)

SPEC = {"name": "cg-unet3", "options": {"base_channels": 2}}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(5)
    model = build_model(SPEC["name"], **SPEC["options"])
    path = save_checkpoint(tmp_path / "best.safetensors", model, CheckpointConfig(SPEC, epoch=3))
    return model, path


def test_round_trip_rebuilds_the_same_model(saved, tmp_path):
    model, path = saved
    loaded, config = load_checkpoint(path, expect_model="cg-unet3")
    assert config.epoch == 3 and config.model == SPEC
    assert not loaded.training
    x = torch.rand(2, 1, 12, 20)
    model.eval()
    origin, full = torch.tensor([[0, 4], [8, 2]]), (37, 31)
    torch.testing.assert_close(
        loaded(x, origin=origin, full_size=full), model(x, origin=origin, full_size=full)
    )
    # the JSON beside the weights, the run directory and the .json path all resolve
    assert json.loads(path.with_suffix(".json").read_text())["epoch"] == 3
    assert read_checkpoint_config(tmp_path).epoch == 3
    assert read_checkpoint_config(path.with_suffix(".json")).epoch == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.safetensors"]


def test_half_precision_copy_loads_into_a_float_model(saved, tmp_path):
    model, path = saved
    half = save_checkpoint(
        tmp_path / "half" / "best.safetensors", model, CheckpointConfig(SPEC), dtype=torch.float16
    )
    # tiny model: the JSON metadata is a good part of the file
    assert half.stat().st_size < 0.7 * path.stat().st_size
    loaded, _ = load_checkpoint(half)
    weights = dict(loaded.named_parameters())
    assert all(p.dtype == torch.float32 for p in weights.values())
    for name, p in model.named_parameters():
        torch.testing.assert_close(weights[name], p.half().float())


def test_truncated_checkpoint_is_a_clear_error(saved):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        load_checkpoint(path)


def test_checkpoint_of_another_model_is_a_clear_error(saved, tmp_path):
    _, path = saved
    with pytest.raises(CheckpointError, match="belongs to model 'cg-unet3', expected 'unet3'"):
        load_checkpoint(path, expect_model="unet3")
    other = build_model("unet3", base_channels=4)
    with pytest.raises(CheckpointError, match="another model"):
        load_weights(other, path)
    # a file whose config names a model its weights do not fit
    save_checkpoint(tmp_path / "mixed.safetensors", other, CheckpointConfig(SPEC))
    with pytest.raises(CheckpointError, match="does not fit model 'cg-unet3'"):
        load_checkpoint(tmp_path / "mixed.safetensors")


def test_foreign_safetensors_and_missing_files(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="without a coordgate config"):
        load_checkpoint(tmp_path / "plain.safetensors")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")
    with pytest.raises(FileNotFoundError, match="best.safetensors"):
        load_checkpoint(tmp_path)  # a directory without a best checkpoint


def test_unserialisable_config_writes_nothing(tmp_path):
    model = build_model("unet3", base_channels=2)
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(
            tmp_path / "x.safetensors", model, CheckpointConfig(SPEC, metrics={"bad": object()})
        )
    with pytest.raises(ValueError, match=".safetensors"):
        save_checkpoint(tmp_path / "x.pt", model, CheckpointConfig(SPEC))
    assert list(tmp_path.iterdir()) == []


def test_training_state_round_trip_restores_random_generators(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    np.random.normal()  # leaves a cached Gaussian in numpy's state
    state = {"rng": rng_state(), "history": [{"epoch": 1, "val_loss": 0.5}]}
    expected = (random.random(), np.random.normal(), torch.rand(3))
    path = save_training_state(tmp_path / "last.state.pt", state)
    loaded = load_training_state(path)
    assert loaded["history"] == state["history"]
    restore_rng_state(loaded["rng"])
    again = (random.random(), np.random.normal(), torch.rand(3))
    assert again[:2] == expected[:2] and torch.equal(again[2], expected[2])


def test_damaged_training_state_is_a_clear_error(tmp_path):
    path = save_training_state(tmp_path / "last.state.pt", {"epoch": 1, "w": torch.ones(100)})
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_training_state(path)
    with pytest.raises(FileNotFoundError):
        load_training_state(tmp_path / "absent.state.pt")
