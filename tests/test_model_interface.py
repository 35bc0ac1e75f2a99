"""The typed model interface: every deblurring model states what inference and training
need, and the registry states each model's name and options."""

import pytest
import torch

from coordgate.inference import predict
from coordgate.models import (
    DeblurringModel,
    build_model,
    check_deblurring_model,
    list_models,
    lookup_model,
)

TINY_PSFS = torch.rand(2, 5, 5)
DEBLURRING = {
    "unet3": {},
    "cg-unet3": {},
    "coordconv-unet6": {},
    "pac-unet3": {},
    "lcn-unet3": {"frame": 32},
    "multiwiener-unet6": {"psfs": TINY_PSFS},
}


@pytest.mark.parametrize("name", sorted(DEBLURRING))
def test_deblurring_models_implement_the_interface(name):
    model = build_model(name, base_channels=2, **DEBLURRING[name])
    assert isinstance(model, DeblurringModel)
    assert check_deblurring_model(model, "a test") is model
    assert model.in_channels == model.out_channels == 1
    assert model.required_multiple >= 1 and model.receptive_field > model.required_multiple
    assert model.activation_channels > 0
    assert model.uses_coordinates == (name not in ("unet3", "multiwiener-unet6"))
    assert model.model_spec == {
        "name": name,
        "options": {"base_channels": 2, **DEBLURRING[name]},
    }


def test_models_built_directly_have_no_spec():
    from coordgate.models.unet import UNet

    assert UNet(3).model_spec is None and isinstance(UNet(3), DeblurringModel)


def test_a_module_without_the_interface_is_refused_by_name():
    with pytest.raises(ValueError, match="predict needs a deblurring model.*Conv2d lacks"):
        predict(torch.nn.Conv2d(1, 1, 3), torch.rand(8, 8))
    with pytest.raises(ValueError, match="receptive_field"):
        check_deblurring_model(build_model("cnn1d"), "coordgate train")


def test_every_registered_model_declares_its_options():
    for spec in list_models():
        assert spec.options, spec.name
    assert {"residual", "base_channels", "mode"} <= lookup_model("cg-unet3").options
    assert "psf_field" in lookup_model("multiwiener-unet6").options
    assert "residual" not in lookup_model("cnn1d").options


def test_unknown_options_and_names_are_refused_at_the_door():
    with pytest.raises(ValueError, match=r"model 'unet3' takes the options .*got unknown hidden"):
        build_model("unet3", hidden=4)
    with pytest.raises(ValueError, match="unknown model 'unet9'; known models: .*cg-unet3"):
        lookup_model("unet9")
