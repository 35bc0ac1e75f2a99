"""``care-unet``: CAREamics' CARE configuration, listed, trainable, shift-invariant."""

from __future__ import annotations

import pytest
import torch

from coordgate.cli import main
from coordgate.models import build_model, check_deblurring_model, count_parameters
from coordgate.training import TrainConfig, fit
from tests.helpers import PairSet


def test_care_unet_has_cares_configuration():
    model = check_deblurring_model(build_model("care-unet"), "test")
    # depth 2 with 32 first-level channels and batch norm: CAREamics' 333,729 parameters
    assert count_parameters(model) == 333_729
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 10
    assert model.training_loss == "mae" and not model.uses_coordinates
    assert model.required_multiple == 4
    with pytest.raises(ValueError, match="base_channels"):
        build_model("care-unet", base_channels=8)
    with pytest.raises(ValueError, match="divisible|multiple"):
        model(torch.zeros(1, 1, 18, 20))


def test_care_unet_ignores_coordinates_and_sees_its_receptive_field():
    model = build_model("care-unet").eval().double()
    x = torch.rand(1, 1, 96, 96, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        shifted = model(x, origin=(8, 4), full_size=(512, 512))
    torch.testing.assert_close(model(x), shifted)
    for parameter in model.parameters():
        parameter.data = parameter.data.abs()
    extent = [0, 0]
    for p in range(48, 52):  # every alignment to the pooling grid
        x.grad = None
        model(x)[0, 0, p, p].backward()
        rows = (x.grad[0, 0].abs().sum(1) > 0).nonzero().squeeze(1)
        extent = [max(extent[0], p - rows.min().item()), max(extent[1], rows.max().item() - p)]
    assert sum(extent) + 1 == model.receptive_field


def test_care_unet_trains_a_step_with_its_loss(tmp_path):
    model = build_model("care-unet")
    before = [p.detach().clone() for p in model.parameters()]
    config = TrainConfig(epochs=1, batch_size=4, progress=False, device="cpu")
    result = fit(model, PairSet(4, seed=0), PairSet(2, seed=1), config, tmp_path,
                 model_spec=model.model_spec)  # fmt: skip
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert result.history[0]["train_loss"] > 0


def test_models_command_lists_care_unet(capsys):
    assert main(["models"]) == 0
    assert "care-unet" in capsys.readouterr().out
