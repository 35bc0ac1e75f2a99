"""PAC U-Net and LCN U-Net: the paper's other spatially-varying methods as 2D baselines."""

from collections import Counter

import pytest
import torch

from coordgate.layers import CoordGate, LocallyConnected, PixelAdaptiveConv
from coordgate.models import build_model, count_parameters, list_models
from coordgate.models.unet import (
    CoordGateUNet,
    LocallyConnectedUNet,
    PixelAdaptiveUNet,
    UNet,
)


def perturbed(model: torch.nn.Module, scale: float = 0.2) -> torch.nn.Module:
    """Move a model away from its initialisation so that coordinates visibly matter."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


def baseline(name: str, frame: int = 64, **options) -> torch.nn.Module:
    if name.startswith("lcn"):
        options["frame"] = frame
    return build_model(name, base_channels=options.pop("base_channels", 2), **options)


def positive(model: torch.nn.Module) -> torch.nn.Module:
    """Positive weights keep every ReLU active: no gradient or change vanishes by chance."""
    with torch.no_grad():
        for p in model.parameters():
            p.abs_().add_(0.01)
    return model


def sharp_guidance(model: torch.nn.Module, gain: float = 30.0) -> torch.nn.Module:
    """Steepen the PAC guidance so that neighbours' features differ and kernels adapt
    (at initialisation the Gaussian is close to 1 everywhere: PAC starts as a convolution)."""
    with torch.no_grad():
        for pac in layers_of(model, PixelAdaptiveConv):
            pac.guide[-1].weight.mul_(gain)
    return model


def layers_of(model: torch.nn.Module, kind: type) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("name", ["pac-unet3", "lcn-unet3"])
def test_output_shape_attributes_and_registry(name, device):
    model = baseline(name, frame=36).to(device)
    x = torch.rand(2, 1, 36, 36, device=device)
    y = model(x)
    assert y.shape == x.shape and y.device == x.device and torch.isfinite(y).all()
    assert model.required_multiple == 4 and model.uses_coordinates
    assert model.receptive_field == UNet(3).receptive_field
    assert name in {spec.name for spec in list_models()}


@pytest.mark.parametrize("depth", [3, 4])
def test_pac_sits_where_cg_unet_gates(depth):
    pac = PixelAdaptiveUNet(depth, base_channels=2)
    gated = CoordGateUNet(depth, base_channels=2)
    convs = layers_of(pac, PixelAdaptiveConv)
    assert len(convs) == 2 * (depth - 1)
    assert Counter(c.out_channels for c in convs) == Counter(
        g.channels for g in layers_of(gated, CoordGate)
    )
    assert all(block.second in convs for block in pac.encoder)
    assert pac.decoder[0].second not in convs  # the last level is not gated in CG U-Net


def test_lcn_parameters_by_hand():
    b, frame = 4, 48
    lcn, plain = build_model("lcn-unet3", base_channels=b, frame=frame), UNet(3, base_channels=b)
    local = layers_of(lcn, LocallyConnected)
    assert [m.size for m in local] == [(12, 12)] * 2
    assert local == [lcn.encoder[2].first, lcn.encoder[2].second]
    positions = 12 * 12

    def conv(c_in, c_out):
        return c_in * c_out * 9 + c_out

    swapped = positions * (conv(2 * b, 4 * b) + conv(4 * b, 4 * b))
    replaced = conv(2 * b, 4 * b) + conv(4 * b, 4 * b)
    assert count_parameters(lcn) == count_parameters(plain) - replaced + swapped
    assert count_parameters(lcn) > 50 * count_parameters(build_model("cg-unet3", base_channels=b))


@pytest.mark.parametrize("name", ["pac-unet3", "lcn-unet3"])
def test_output_ignores_pixels_beyond_the_receptive_field(name):
    model = positive(baseline(name)).double().eval()
    r, (p, q) = model.receptive_field // 2, (29, 34)
    x = torch.rand(1, 1, 64, 64, dtype=torch.float64)
    outside = torch.ones_like(x, dtype=torch.bool)
    outside[..., p - r : p + r + 1, q - r : q + r + 1] = False
    with torch.no_grad():
        y = model(x)[0, 0, p, q]
        far = model(torch.where(outside, torch.rand_like(x), x))[0, 0, p, q]
        reached = []
        for row, col in [(p - r, q), (p, q + r)]:  # the field's far edges still matter
            edge = x.clone()
            edge[..., row, col] += 1e4  # large enough to win every max-pool it meets
            reached.append(model(edge)[0, 0, p, q] != y)
    assert far == y and all(reached)


@pytest.mark.parametrize("name", ["pac-unet3", "lcn-unet3"])
def test_crop_at_its_origin_matches_the_full_frame_output(name):
    model = sharp_guidance(perturbed(baseline(name, frame=96, base_channels=3))).eval()
    full = torch.rand(1, 1, 96, 96)
    top, left, h, w = 20, 16, 60, 56  # multiples of 4: every level sees the same pixels
    with torch.no_grad():
        whole = model(full)[..., top : top + h, left : left + w]
        crop = model(
            full[..., top : top + h, left : left + w], origin=(top, left), full_size=(96, 96)
        )
        unplaced = model(full[..., top : top + h, left : left + w], full_size=(96, 96))
    r = model.receptive_field // 2
    inner = (..., slice(r, h - r), slice(r, w - r))
    torch.testing.assert_close(crop[inner], whole[inner], atol=1e-5, rtol=1e-4)
    assert (crop - whole).abs().max() > 1e-4  # the crop's own borders differ
    assert (unplaced - whole)[inner].abs().max() > 1e-4  # the origin matters


@pytest.mark.parametrize("name", ["pac-unet3", "lcn-unet3"])
def test_per_sample_origins_match_separate_calls(name):
    model = sharp_guidance(perturbed(baseline(name, frame=64)))
    x = torch.rand(3, 1, 32, 28)
    origins = torch.tensor([[0, 8], [32, 36], [0, 8]])
    together = model(x, origin=origins, full_size=torch.tensor([[64, 64]] * 3))
    for i in range(3):
        alone = model(x[i : i + 1], origin=origins[i].tolist(), full_size=(64, 64))
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(together[0], model(x[:1], origin=(32, 36), full_size=(64, 64))[0])


@pytest.mark.parametrize("name", ["pac-unet3", "lcn-unet3"])
def test_residual_and_gradients_reach_the_spatially_varying_layers(name):
    model = positive(baseline(name, residual=True))
    plain = baseline(name)
    plain.load_state_dict(model.state_dict())
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), plain(x) + x, atol=1e-6)
    model(x, origin=torch.zeros(2, 2), full_size=(64, 64)).square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    varying = [n for n in grads if ".guide." in n or n.startswith("encoder.2.")]
    assert varying and all(grads[n].abs().sum() > 0 for n in varying)


@pytest.mark.parametrize("name", ["pac-unet3", "lcn-unet3"])
def test_a_few_adam_steps_fit_a_batch(name):
    model = baseline(name, base_channels=4, frame=32)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.rand(4, 1, 32, 32)
    target = 0.8 * x.flip(-1) + 0.5  # position-dependent: the right half becomes the left
    losses = []
    for _ in range(20):
        optimiser.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.4 * losses[0]


def test_pac_guided_takes_per_sample_guidance():
    pac = perturbed(PixelAdaptiveConv(2, 3, 3), 1.0)
    x = torch.randn(2, 2, 9, 7)
    rows = [(0.0, 0.0), (5.0, 3.0)]
    guides = torch.stack([pac.guidance((9, 7), row, (20, 20)) for row in rows])
    torch.testing.assert_close(pac.guided(x, guides), pac(x, rows, (20, 20)))
    with pytest.raises(ValueError, match=r"guidance must have shape \(N or 1, 4, 9, 7\)"):
        pac.guided(x, guides[:, :2])
    with pytest.raises(ValueError, match="guide_channels must be a positive integer"):
        PixelAdaptiveConv(2, 3, 3, guide_channels=0)


def test_bad_options_and_frames_give_clear_errors():
    with pytest.raises(ValueError, match=r"needs frame: the sensor frame \(H, W\).*got None"):
        build_model("lcn-unet3")
    with pytest.raises(ValueError, match="divisible by 4"):
        build_model("lcn-unet3", frame=(64, 30))
    with pytest.raises(ValueError, match="frame is only used by coordinates='local'"):
        build_model("cg-unet3", frame=64)
    with pytest.raises(ValueError, match="layer_options need coordinates='gate' or 'pac'"):
        LocallyConnectedUNet(frame=64, hidden=8)
    model = baseline("lcn-unet3", frame=64)
    with pytest.raises(ValueError, match=r"frame of \(64, 64\) pixels.*full_size \(32.0, 32.0\)"):
        model(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="origin a multiple of 4 pixels"):
        model(torch.rand(1, 1, 32, 32), origin=(2, 0), full_size=(64, 64))
    with pytest.raises(ValueError, match="does not fit"):
        model(torch.rand(1, 1, 32, 32), origin=(40, 0), full_size=(64, 64))


def test_pac_options_are_passed_through():
    model = build_model("pac-unet3", base_channels=2, guide_channels=3, hidden=5)
    convs = layers_of(model, PixelAdaptiveConv)
    assert {c.guide_channels for c in convs} == {3} and convs[0].guide[0].out_features == 5
    assert "coordinates='pac'" in repr(model) and "frame=(32, 32)" in repr(
        baseline("lcn-unet3", frame=32)
    )
