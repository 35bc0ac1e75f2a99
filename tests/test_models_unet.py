"""U-Net family and MultiWienerNet: shapes, parameter counts, coordinates, errors, export."""

import argparse

import numpy as np
import pytest
import torch

from coordgate.commands import models as models_command
from coordgate.export import FrameDeblurrer, export_onnx
from coordgate.frames import Frame, batch_frames
from coordgate.models import build_model, count_parameters, list_models
from coordgate.models.multiwiener import WienerDeconvolution
from coordgate.models.unet import CoordConvUNet, CoordGateUNet, UNet

TINY_PSFS = torch.rand(4, 5, 5) + 0.1


def tiny(name: str, **options) -> torch.nn.Module:
    if name.startswith("multiwiener"):
        options.setdefault("psfs", TINY_PSFS)
    return build_model(name, base_channels=options.pop("base_channels", 2), **options)


def positive_weights(model: torch.nn.Module) -> torch.nn.Module:
    """Every ReLU stays active with positive weights and inputs: gradients show structure."""
    with torch.no_grad():
        for p in model.parameters():
            p.abs_().add_(0.01)
    return model


@pytest.mark.parametrize(
    "name, size",
    [
        ("unet3", (36, 28)),
        ("cg-unet3", (36, 28)),
        ("unet4", (40, 24)),
        ("cg-unet4", (40, 24)),
        ("unet6", (96, 32)),
        ("cg-unet6", (96, 32)),
        ("coordconv-unet6", (96, 32)),
        ("multiwiener-unet6", (96, 32)),
    ],
)
def test_output_shape_and_attributes(name, size, device):
    model = tiny(name).to(device)
    x = torch.rand(2, 1, *size, device=device)
    y = model(x)
    assert y.shape == x.shape and y.device == x.device and torch.isfinite(y).all()
    depth = int(name[-1])
    assert model.required_multiple == 2 ** (depth - 1)
    assert isinstance(model.receptive_field, int) and model.receptive_field > 2**depth


def test_registry_lists_every_unet_name():
    names = {spec.name for spec in list_models()}
    expected = {f"unet{d}" for d in range(3, 7)} | {f"cg-unet{d}" for d in range(3, 7)}
    assert expected | {"coordconv-unet6", "multiwiener-unet6"} <= names
    assert isinstance(build_model("cg-unet5"), CoordGateUNet)
    assert isinstance(build_model("coordconv-unet6"), CoordConvUNet)


def test_parameter_count_of_unet3_by_hand():
    b = 4
    widths = [b, 2 * b, 4 * b]

    def conv(c_in, c_out, k):
        return c_in * c_out * k * k + c_out

    expected = conv(1, b, 3) + conv(b, b, 3)
    expected += sum(
        conv(widths[i], widths[i + 1], 3) + conv(widths[i + 1], widths[i + 1], 3) for i in range(2)
    )
    expected += sum(conv(widths[i + 1], widths[i], 2) for i in range(2))  # up-convolutions
    expected += sum(conv(2 * w, w, 3) + conv(w, w, 3) for w in widths[:2])
    expected += conv(b, 1, 1)
    assert count_parameters(UNet(3, base_channels=b)) == expected


@pytest.mark.parametrize("base", [8, 16])
def test_cg_unet3_has_about_60x_fewer_parameters_than_unet6(base):
    ratio = count_parameters(build_model("unet6", base_channels=base)) / count_parameters(
        build_model("cg-unet3", base_channels=base)
    )
    assert 55 < ratio < 70


def test_gates_add_few_parameters_and_count_2_per_resampling():
    plain, gated = build_model("unet4", base_channels=8), build_model("cg-unet4", base_channels=8)
    gates = [m for m in gated.modules() if type(m).__name__ == "CoordGate"]
    assert len(gates) == 2 * (4 - 1)
    assert count_parameters(gated) - count_parameters(plain) == sum(
        count_parameters(g) for g in gates
    )


@pytest.mark.parametrize(
    "model",
    [UNet(3, base_channels=2), CoordGateUNet(3, base_channels=2), UNet(4, base_channels=2)],
    ids=["unet3", "cg-unet3", "unet4"],
)
def test_receptive_field_matches_gradient_support(model):
    model = positive_weights(model).double()
    size, m = 128, model.required_multiple
    extent = [0, 0]
    # every alignment to the pooling grid; max-pooling routes a gradient to one pixel of
    # each window, so the support is the union over a few random inputs
    for p in range(56, 56 + m):
        x = torch.rand(4, 1, size, size, dtype=torch.float64, requires_grad=True)
        model(x)[:, 0, p, p].sum().backward()
        support = (x.grad[:, 0].abs().sum((0, 2)) > 0).nonzero().squeeze(1)
        extent = [
            max(extent[0], p - support.min().item()),
            max(extent[1], support.max().item() - p),
        ]
    assert extent[0] + extent[1] + 1 == model.receptive_field


def test_bad_inputs_give_clear_errors():
    model = tiny("cg-unet3")
    with pytest.raises(ValueError, match=r"divisible by 4.*predict"):
        model(torch.rand(1, 1, 37, 32))
    with pytest.raises(ValueError, match="4-D input"):
        model(torch.rand(1, 36, 32))
    with pytest.raises(ValueError, match="1 input channels"):
        model(torch.rand(1, 2, 36, 32))
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.ones(1, 1, 36, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="does not fit"):
        model(torch.rand(1, 1, 36, 32), origin=(70, 0), full_size=(100, 100))
    with pytest.raises(ValueError, match=r"\(N, 2\) tensor with N = 3"):
        model(torch.rand(3, 1, 36, 32), origin=torch.zeros(2, 2), full_size=(100, 100))
    with pytest.raises(ValueError, match="depth must be >= 2"):
        UNet(1)
    with pytest.raises(ValueError, match="base_channels"):
        UNet(3, base_channels=0)
    with pytest.raises(ValueError, match="coordinates must be one of"):
        UNet(3, coordinates="ring")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("unet7")


def test_plain_unet_ignores_coordinates():
    model = tiny("unet3")
    x = torch.rand(2, 1, 36, 28)
    origins = torch.tensor([[0, 0], [50, 30]])
    assert torch.equal(model(x), model(x, origin=origins, full_size=(1000, 1000)))


@pytest.mark.parametrize("name", ["cg-unet3", "coordconv-unet6"])
def test_coordinates_change_the_output(name):
    model = tiny(name, base_channels=4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = torch.rand(1, 1, 64, 64)
    assert not torch.allclose(model(x), model(x, origin=(64, 64), full_size=(256, 256)))


@pytest.mark.parametrize("name", ["cg-unet3", "coordconv-unet6"])
def test_per_sample_origins_match_separate_calls(name):
    model = tiny(name, base_channels=4)
    x = torch.rand(3, 1, 64, 32)
    origins = torch.tensor([[0, 8], [32, 0], [0, 8]])
    together = model(x, origin=origins, full_size=torch.tensor([[128, 96]] * 3))
    for i in range(3):
        alone = model(x[i : i + 1], origin=origins[i].tolist(), full_size=(128, 96))
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-6, rtol=1e-5)


def test_batch_frames_groups_shared_origins():
    x = torch.zeros(4, 1, 8, 8)
    frames = batch_frames(x, torch.tensor([[0, 0], [4, 4], [0, 0], [4, 4]]), (16, 16))
    origins = tuple(f.origin for f in frames.frames)
    assert origins == ((0.0, 0.0), (4.0, 4.0)) and frames.inverse.tolist() == [0, 1, 0, 1]
    assert frames.scaled(2).frames[1] == Frame((1.0, 1.0), (4.0, 4.0))
    single = batch_frames(x, torch.tensor([[4, 4]] * 4), (16, 16))
    assert single.inverse is None and tuple(f.origin for f in single.frames) == ((4.0, 4.0),)


@pytest.mark.parametrize("model_class", [CoordGateUNet, CoordConvUNet])
def test_crop_at_its_origin_matches_the_full_frame_output(model_class):
    model = model_class(3, base_channels=4).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    full = torch.rand(1, 1, 176, 160)
    top, left, h, w = 36, 8, 96, 88  # origin on the pooling grid: every level sees the same pixels
    with torch.no_grad():
        whole = model(full)[..., top : top + h, left : left + w]
        crop = model(
            full[..., top : top + h, left : left + w], origin=(top, left), full_size=(176, 160)
        )
    r = model.receptive_field // 2
    inner = (..., slice(r, h - r), slice(r, w - r))
    torch.testing.assert_close(crop[inner], whole[inner], atol=1e-5, rtol=1e-4)
    assert (crop - whole).abs().max() > 1e-4  # the crop's own borders do differ


def test_crop_with_wrong_origin_differs():
    model = tiny("cg-unet3", base_channels=4).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
        full = torch.rand(1, 1, 128, 128)
        whole = model(full)[..., 32:96, 32:96]
        crop = model(full[..., 32:96, 32:96], origin=(0, 0), full_size=(128, 128))
    assert (crop - whole)[..., 24:-24, 24:-24].abs().max() > 1e-4


@pytest.mark.parametrize("name", ["unet3", "cg-unet3", "coordconv-unet6", "multiwiener-unet6"])
def test_gradients_reach_every_stage(name):
    model = positive_weights(tiny(name))
    x = torch.rand(2, 1, 32, 32)
    origins = torch.tensor([[0, 0], [32, 32]])
    loss = model(x, origin=origins, full_size=(64, 64)).square().mean()
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads[next(n for n in grads if "encoder.0" in n)].abs().sum() > 0
    assert grads["head.weight" if "head.weight" in grads else "unet.head.weight"].abs().sum() > 0
    for n, g in grads.items():
        if "gates" in n and n.endswith("encoder.2.bias"):
            assert g.abs().sum() > 0  # gate output layer learns from the start
    if name.startswith("multiwiener"):
        assert grads["wiener.psfs"].abs().sum() > 0 and grads["wiener.rho"].abs().sum() > 0


def test_gate_options_are_passed_through():
    model = build_model("cg-unet3", base_channels=4, mode="lowres", grid=5)
    gates = [m for m in model.modules() if type(m).__name__ == "CoordGate"]
    assert {g.mode for g in gates} == {"lowres"} and gates[0].map.shape == (4, 5, 5)
    assert model(torch.rand(1, 1, 36, 28)).shape == (1, 1, 36, 28)


def test_wiener_deconvolution_inverts_its_blur():
    psf = torch.zeros(7, 7, dtype=torch.float64)
    psf[2:5, 2:5] = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]])
    psf[3, 5] = 3.0
    x = torch.zeros(1, 1, 41, 37, dtype=torch.float64)
    x[..., 10:-10, 10:-10] = torch.rand(21, 17, dtype=torch.float64)
    blurred = torch.nn.functional.conv2d(x, (psf / psf.sum()).flip(0, 1)[None, None], padding=3)
    wiener = WienerDeconvolution(psf[None], regularization=1e-9).double()
    with torch.no_grad():
        restored = wiener(blurred)
    assert (blurred - x).abs().max() > 0.1
    torch.testing.assert_close(restored, x, atol=1e-3, rtol=0)
    assert torch.allclose(wiener.regularization, torch.tensor(1e-9, dtype=torch.float64))


def test_multiwiener_from_field_and_errors():
    optics = pytest.importorskip("coordgate.optics.field")
    field = optics.PSFField.gaussian(psf_size=7)
    model = build_model("multiwiener-unet6", psf_field=field.config(), grid=2, base_channels=2)
    assert model.wiener.channels == 4 and model.unet.in_channels == 4
    torch.testing.assert_close(model.wiener.psfs.sum((1, 2)), torch.ones(4))
    as_lists = build_model("multiwiener-unet6", psfs=TINY_PSFS.tolist(), base_channels=2)
    torch.testing.assert_close(as_lists.wiener.psfs, tiny("multiwiener-unet6").wiener.psfs)
    with pytest.raises(ValueError, match="psfs or psf_field"):
        build_model("multiwiener-unet6", psfs=TINY_PSFS, psf_field=field)
    with pytest.raises(ValueError, match=r"\(K, k, k\)"):
        build_model("multiwiener-unet6", psfs=torch.rand(3, 5, 4))
    with pytest.raises(ValueError, match="numbers of shape"):
        build_model("multiwiener-unet6", psfs="gaussian")
    with pytest.raises(ValueError, match="regularization"):
        build_model("multiwiener-unet6", psfs=TINY_PSFS, regularization=0.0)
    with pytest.raises(ValueError, match="divisible by 32"):
        tiny("multiwiener-unet6")(torch.rand(1, 1, 48, 32))


@pytest.mark.parametrize(
    "name, size",
    [
        ("unet3", (36, 28)),
        ("cg-unet3", (36, 28)),
        ("coordconv-unet6", (64, 32)),
        ("multiwiener-unet6", (64, 32)),  # FFT: ONNX DFT
    ],
)
def test_onnx_export_runs_in_onnxruntime(name, size, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = tiny(name, base_channels=4).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.rand(1, 1, *size)
    path = export_onnx(FrameDeblurrer(model, x.shape, None), tmp_path / f"{name}.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"frame": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(onnx_out, expected, atol=1e-4)


def test_models_command_lists_names_and_counts(capsys):
    parser = argparse.ArgumentParser()
    models_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "--base-channels", "4"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert rows["cg-unet3"] == f"{count_parameters(build_model('cg-unet3', base_channels=4)):,}"
    assert {"unet6", "coordconv-unet6", "multiwiener-unet6"} <= set(rows)
    with pytest.raises(ValueError, match="base-channels"):
        args.func(parser.parse_args(["models", "--base-channels", "0"]))


@pytest.mark.parametrize("name", ["unet3", "cg-unet3", "coordconv-unet6", "multiwiener-unet6"])
def test_residual_adds_the_input(name):
    model = build_model(name, base_channels=2, residual=True)
    plain = build_model(name, base_channels=2)
    plain.load_state_dict(model.state_dict())
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), plain(x) + x, atol=1e-6)
    assert "residual=True" in repr(model) or model.residual


def test_residual_needs_matching_channels():
    with pytest.raises(ValueError, match="in_channels == out_channels"):
        build_model("unet3", in_channels=2, out_channels=1, residual=True)
