import pytest
import torch

from coordgate import (
    AddCoords,
    CoordConv,
    CoordGate,
    CoordGateConv,
    LocallyConnected,
    PixelAdaptiveConv,
)
from tests.helpers import randomise

SIZES = {1: (37,), 2: (37, 31), 3: (7, 5, 6)}


@pytest.mark.parametrize("mode", ["mlp", "lowres", "map"])
@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 3])
def test_gate_shapes_and_identity_start(mode, dim, batch, device):
    size = SIZES[dim]
    gate = CoordGate(4, dim=dim, mode=mode, size=size if mode == "map" else None).to(device)
    x = torch.randn(batch, 4, *size, device=device)
    assert torch.allclose(gate(x), x)
    y = randomise(gate)(x)
    assert y.shape == x.shape and not torch.allclose(y, x)


def test_mlp_gate_is_not_an_affine_ramp():
    gate = randomise(CoordGate(3, dim=1, hidden=16, layers=3))
    g = gate.gate((64,)).detach()
    second_difference = g[:, 2:] - 2 * g[:, 1:-1] + g[:, :-2]
    assert second_difference.abs().max() > 1e-4


def test_lowres_gate_is_smooth_and_size_free():
    gate = randomise(CoordGate(2, dim=2, mode="lowres", grid=5))
    coarse = gate.gate((17, 13)).detach()
    fine = gate.gate((68, 52)).detach()
    assert fine.diff(dim=1).abs().max() < coarse.diff(dim=1).abs().max()
    # the knots sit on a grid over the frame: both resolutions agree at the centre
    assert torch.allclose(coarse[:, 8, 6], fine[:, 33:35, 25:27].mean((1, 2)), atol=0.05)


@pytest.mark.parametrize("dim", [1, 2])
def test_coordgateconv_shapes(dim, device):
    size = SIZES[dim]
    for basis in (None, 7):
        layer = CoordGateConv(3, 5, 3, dim=dim, basis_channels=basis).to(device)
        assert layer(torch.randn(2, 3, *size, device=device)).shape == (2, 5, *size)
        assert (layer.project is None) == (basis is None)


@pytest.mark.parametrize("dim", [1, 2])
def test_coordconv_and_locally_connected_shapes(dim, device):
    size = SIZES[dim]
    x = torch.randn(2, 3, *size, device=device)
    assert CoordConv(3, 5, 3, dim=dim, with_r=True).to(device)(x).shape == (2, 5, *size)
    assert LocallyConnected(3, 5, 3, size, dim=dim).to(device)(x).shape == (2, 5, *size)


def test_addcoords_non_square_and_radius():
    out = AddCoords(dim=2, with_r=True)(torch.zeros(1, 1, 3, 5))
    rows, cols, radius = out[0, 1], out[0, 2], out[0, 3]
    assert torch.all(rows[:, 0].diff() > 0) and torch.all(rows[0].diff() == 0)
    assert torch.all(cols[0].diff() > 0) and torch.all(cols[:, 0].diff() == 0)
    assert torch.allclose(radius, (rows**2 + cols**2).sqrt())
    assert radius[1, 2] == radius.min()


def test_locally_connected_matches_loop():
    layer = LocallyConnected(2, 3, (3, 2), (5, 4), dim=2)
    x = torch.randn(2, 2, 5, 4)
    padded = torch.nn.functional.pad(x, (0, 1, 1, 1))  # 'same' for a (3, 2) kernel
    w = layer.weight.view(5, 4, 3, 2, 3, 2)  # (H, W, out, in, kh, kw)
    expected = torch.einsum("nchwij,hwocij->nohw", patches_2d(padded, 5, 4, 3, 2), w)
    expected = expected + layer.bias.view(5, 4, 3).permute(2, 0, 1)
    assert torch.allclose(layer(x), expected, atol=1e-6)


def patches_2d(padded, h, w, kh, kw):
    return torch.stack(
        [
            torch.stack([padded[:, :, i : i + h, j : j + w] for j in range(kw)], -1)
            for i in range(kh)
        ],
        -2,
    )


def test_appendix_equivalence_with_locally_connected():
    """Paper appendix: a complete pixel basis + a trained map == locally connected layer."""
    c_in, k, size = 2, 3, (9, 8)
    basis = c_in * k * k
    cg = CoordGateConv(c_in, 1, k, basis_channels=basis, mode="map", size=size)
    lc = LocallyConnected(c_in, 1, k, size)
    with torch.no_grad():
        cg.conv.weight.copy_(torch.eye(basis).view(basis, c_in, k, k))
        cg.conv.bias.zero_()
        cg.gate.map.normal_()
        cg.project.weight.fill_(1.0)
        cg.project.bias.fill_(0.7)
        lc.weight.copy_(cg.gate.map.reshape(basis, -1).t().unsqueeze(1))
        lc.bias.fill_(0.7)
    x = torch.randn(3, c_in, *size)
    assert torch.allclose(cg(x), lc(x), atol=1e-5)


def _gradcheck_cases():
    d = dict(dtype=torch.float64)
    return {
        "gate-mlp": (CoordGate(3, dim=2).to(**d), torch.randn(2, 3, 5, 4, **d)),
        "gate-lowres": (
            CoordGate(3, dim=1, mode="lowres", grid=4).to(**d),
            torch.randn(2, 3, 9, **d),
        ),
        "gate-map": (
            CoordGate(2, dim=2, mode="map", size=(4, 3)).to(**d),
            torch.randn(1, 2, 4, 3, **d),
        ),
        "coordgateconv": (
            CoordGateConv(2, 3, 3, basis_channels=4).to(**d),
            torch.randn(2, 2, 5, 4, **d),
        ),
        "coordconv": (CoordConv(2, 3, 3, dim=1, with_r=True).to(**d), torch.randn(2, 2, 7, **d)),
        "locally-connected": (
            LocallyConnected(2, 3, 3, (4, 5)).to(**d),
            torch.randn(2, 2, 4, 5, **d),
        ),
    }


@pytest.mark.parametrize("name", list(_gradcheck_cases()))
def test_gradcheck(name):
    layer, x = _gradcheck_cases()[name]
    randomise(layer)
    params = tuple(layer.parameters())
    x.requires_grad_(True)

    def run(x, *weights):
        return torch.func.functional_call(
            layer, dict(zip(dict(layer.named_parameters()), weights)), (x,)
        )

    assert torch.autograd.gradcheck(run, (x, *params), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("mode", ["mlp", "lowres"])
def test_crop_consistency(mode):
    layer = randomise(CoordGateConv(2, 3, 5, basis_channels=6, mode=mode)).eval()
    full = torch.randn(2, 2, 37, 31)
    origin, size = (9, 12), (15, 11)
    crop = full[:, :, 9:24, 12:23]
    with torch.no_grad():
        whole = layer(full)[:, :, 9:24, 12:23]
        part = layer(crop, origin=origin, full_size=(37, 31))
    assert part.shape == (2, 3, *size)
    # away from the crop's border (kernel radius 2) the zero padding plays no role
    assert torch.allclose(part[..., 2:-2, 2:-2], whole[..., 2:-2, 2:-2], atol=1e-6)
    gate = layer.gate
    gate_crop = gate(torch.ones(1, 6, *size), origin=origin, full_size=(37, 31))
    assert torch.allclose(gate_crop, gate(torch.ones(1, 6, 37, 31))[:, :, 9:24, 12:23], atol=1e-6)


def test_per_sample_origins_match_single_calls():
    gate = randomise(CoordGate(3))
    x = torch.randn(2, 3, 6, 5)
    origins = torch.tensor([[0, 0], [10, 4]])
    y = gate(x, origin=origins, full_size=(20, 20))
    # one batched pass over both frames: equal to the single call up to float rounding
    alone = gate(x[1:], origin=(10, 4), full_size=(20, 20))
    torch.testing.assert_close(y[1:], alone, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(y[0], y[1])


def test_eval_cache_is_exact_and_invalidated():
    layer = randomise(CoordGateConv(2, 3, 3))
    x = torch.randn(2, 2, 11, 13)
    uncached = layer(x).detach()
    layer.eval()
    with torch.no_grad():
        first, second = layer(x), layer(x)
    assert torch.equal(first, uncached) and torch.equal(second, uncached)
    assert len(layer.gate._cache) == 1
    with torch.no_grad():
        layer.gate.encoder[-1].bias.add_(1.0)  # a parameter change, as an optimiser step
        changed = layer(x)
    assert not torch.allclose(changed, uncached)
    layer.train()
    assert len(layer.gate._cache) == 0
    assert torch.equal(layer(x).detach(), changed)


@pytest.mark.parametrize(
    "layer, x, message",
    [
        (CoordGate(4), torch.randn(4, 8, 8), "4-D input"),
        (CoordGate(4), torch.randn(1, 3, 8, 8), "expects 4 input channels"),
        (CoordGateConv(3, 4, 3, dim=1), torch.randn(1, 3, 8, 8), "3-D input"),
        (CoordConv(3, 4, 3), torch.randn(1, 2, 8, 8), "expects 3 input channels"),
        (LocallyConnected(3, 4, 3, (8, 8)), torch.randn(1, 3, 8, 9), "spatial size"),
        (CoordGate(2, mode="map", size=(8, 8)), torch.randn(1, 2, 8, 9), "full_size must be"),
        (PixelAdaptiveConv(3, 4, 3), torch.randn(1, 4, 8, 8), "expects 3 input channels"),
        (PixelAdaptiveConv(3, 4, 3, dim=1), torch.randn(1, 3, 8, 8), "3-D input"),
    ],
)
def test_bad_input(layer, x, message):
    with pytest.raises(ValueError, match=message):
        layer(x)


def test_bad_frame_and_options():
    with pytest.raises(ValueError, match="does not fit"):
        CoordGate(2)(torch.randn(1, 2, 8, 8), origin=(4, 0), full_size=(10, 10))
    with pytest.raises(ValueError, match="origin"):
        CoordGate(2)(torch.randn(1, 2, 8, 8), origin=(1, 2, 3))
    with pytest.raises(ValueError, match="per-sample origins"):
        CoordGate(2)(torch.randn(2, 2, 8, 8), origin=torch.zeros(3, 2), full_size=(9, 9))
    with pytest.raises(ValueError, match="mode must be one of"):
        CoordGate(2, mode="attention")
    with pytest.raises(ValueError, match="dim must be 1, 2 or 3"):
        CoordGate(2, dim=4)


def test_pixel_adaptive_conv_reduces_to_conv_with_constant_guidance():
    pac = PixelAdaptiveConv(2, 3, (3, 5), max_elements=64)
    conv = torch.nn.Conv2d(2, 3, (3, 5), padding="same")
    with torch.no_grad():
        pac.guide[-1].weight.zero_()  # every pixel gets the same guidance: K == 1
        conv.weight.copy_(pac.weight.view(3, 2, 3, 5))
        conv.bias.copy_(pac.bias)
    x = torch.randn(2, 2, 11, 9)
    assert torch.allclose(pac(x), conv(x), atol=1e-5)


def test_pixel_adaptive_conv_matches_its_definition():
    pac = randomise(PixelAdaptiveConv(1, 1, 3, dim=1, guide_channels=2))
    x = torch.randn(1, 1, 9)
    f = pac.guidance((9,)).detach()
    w = pac.weight.detach().view(3)
    expected = torch.zeros(9)
    for i in range(9):
        for t, j in enumerate(range(i - 1, i + 2)):
            if 0 <= j < 9:
                expected[i] += (
                    torch.exp(-0.5 * (f[:, i] - f[:, j]).square().sum()) * w[t] * x[0, 0, j]
                )
    assert torch.allclose(pac(x)[0, 0].detach(), expected + pac.bias.detach(), atol=1e-5)
    # learned guidance makes the effective kernel differ between positions

    def kernel_at(i):
        return torch.exp(-0.5 * (f[:, i : i + 1] - f[:, i - 1 : i + 2]).square().sum(0))

    assert not torch.allclose(kernel_at(2), kernel_at(6))


def test_eval_cache_is_bounded(monkeypatch):
    from coordgate.layers import gate as gate_module

    monkeypatch.setattr(gate_module, "_CACHE_BYTES", 3 * 4 * 2 * 10 * 10)  # three gates
    layer = CoordGate(2).eval()
    with torch.no_grad():
        for row in range(6):  # off the pixel grid: each frame has a gate of its own
            layer(torch.ones(1, 2, 10, 10), origin=(row + 0.5, 0), full_size=(20, 20))
    assert len(layer._cache) == 3 and layer.cache_bytes == 3 * 4 * 2 * 10 * 10
    layer.eval()  # already in eval: the gates stay
    assert len(layer._cache) == 3
    layer.train().eval()
    monkeypatch.setattr(gate_module, "_CACHE_BYTES", 2 * 4 * 2 * 20 * 20)  # room for the frame
    with torch.no_grad():
        for row in range(6):  # on the pixel grid: crops of one gate of the whole frame
            layer(torch.ones(1, 2, 10, 10), origin=(row, 0), full_size=(20, 20))
    assert len(layer._cache) == 1 and layer.cache_bytes == 4 * 2 * 20 * 20


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("options", [{"hidden": 16, "layers": 2}, {"mode": "lowres", "grid": 5}])
def test_reduced_precision_features_get_the_float32_gate_cast(autocast, options):
    # coordinates and encoder stay float32 for bf16 features: in bf16 the outer pixels of a
    # 512-px sensor would share coordinates, and oneDNN's bf16 product is slow on the CPU
    gate = randomise(CoordGate(3, dim=2, **options)).train()
    origins = torch.tensor([[0, 448], [448, 0], [200, 301]])
    x = torch.ones(3, 3, 64, 64)
    exact = gate.weights_for(x, origins, (512, 512))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        reduced = gate.weights_for(x.bfloat16(), origins, (512, 512))
    assert reduced.dtype == torch.bfloat16
    assert torch.equal(reduced, exact.bfloat16())
