"""The 1D model family of §IV.A: CNN(L,k,c), CCNN(L,k,c), CG(L,k,c,p), the random ablation,
and the PAC(L,k,c) and LCN(L,k) baselines."""

from __future__ import annotations

import pytest
import torch

from coordgate.experiments._varying_conv1d import spatially_varying_matrix
from coordgate.layers import LocallyConnected, PixelAdaptiveConv
from coordgate.models import build_model, count_parameters, list_models
from coordgate.models.cnn1d import (
    CNN1d,
    CoordGate1d,
    RandomInputGate,
    build_from_label,
    parse_label,
)

LABELS = [
    "CNN(1,7,1)",
    "CNN(3,5,4)",
    "CCNN(2,7,3)",
    "CG(1,13,3,3)",
    "CG(2,5,4,1)",
    "CG-random(1,7,3,2)",
    "PAC(2,5,3)",
    "LCN(2,7)",
]


def sized(label: str) -> dict[str, int]:
    """Models tied to positions are built for the 37-sample test frame."""
    return {"size": 37} if "random" in label or label.startswith("LCN") else {}


@pytest.mark.parametrize("label", LABELS)
def test_label_round_trip_and_shape(label, device):
    model = build_from_label(label, **sized(label)).to(device)
    assert model.label == label
    x = torch.rand(3, 1, 37, device=device)
    assert model(x).shape == (3, 1, 37)


def test_registry_names_and_families():
    names = {spec.name for spec in list_models()}
    assert {"cnn1d", "ccnn1d", "cg1d", "cg1d-random"} <= names
    model = build_model("cg1d", layers=1, kernel=13, channels=8, encoder_layers=3)
    assert (model.label, model.family) == ("CG(1,13,8,3)", "cg")
    assert build_model("ccnn1d", layers=4, kernel=7, channels=4).family == "ccnn"
    assert build_model("cg1d-random").family == "cg-random"
    assert {"pac1d", "lcn1d"} <= names
    pac, lcn = build_from_label("PAC(2,5,3)"), build_from_label("LCN(2,7)")
    assert (pac.family, lcn.family) == ("pac", "lcn")
    assert [type(c) for c in pac.convs] == [PixelAdaptiveConv] * 2
    assert [(c.in_channels, c.out_channels) for c in pac.convs] == [(1, 3), (3, 1)]
    assert [c.size for c in lcn.convs] == [(30,), (30,)] and isinstance(
        lcn.convs[0], LocallyConnected
    )


@pytest.mark.parametrize(
    ("label", "params"),
    [
        ("CNN(1,7,1)", 8),
        # 1->4 (28+4), 4->4 twice (112+4), 4->1 (28+1)
        ("CNN(4,7,4)", 32 + 2 * 116 + 29),
        # conv 1->3 (21+3), encoder 1->3->3->3 (6+12+12), 1x1 3->1 (3+1)
        ("CG(1,7,3,3)", 24 + 30 + 4),
        # every CoordConv layer sees one extra (coordinate) input channel
        ("CCNN(2,7,4)", (2 * 7 * 4 + 4) + (5 * 7 + 1)),
        # a kernel and a bias per position of the 30-sample frame
        ("LCN(1,13)", 30 * (13 + 1)),
        # kernel 7 + bias, guidance encoder 1 -> 16 -> 4 (32 + 68)
        ("PAC(1,7,1)", 8 + 100),
    ],
)
def test_parameter_counts(label, params):
    assert count_parameters(build_from_label(label)) == params


@pytest.mark.parametrize(
    "label",
    [
        "CNN(1,7)",
        "CG(1,7,3)",
        "CNN(1,7,1,2)",
        "XNN(1,7,1)",
        "CNN(1,-7,1)",
        "CNN(a,7,1)",
        "LCN(1,7,1)",
        "PAC(1,7)",
    ],
)
def test_bad_labels(label):
    with pytest.raises(ValueError, match="CNN|CG|LCN|PAC"):
        parse_label(label)


@pytest.mark.parametrize(
    "make",
    [
        lambda: CNN1d(0, 7, 4),
        lambda: CNN1d(2, 7, 1.5),
        lambda: CoordGate1d(1, 7, 3, 0),
        lambda: CoordGate1d(1, 7, 3, 2, static_input="noise"),
        lambda: build_from_label("CG-random(1,7,3,2)", size=0),
        lambda: CNN1d(1, 7, 1, kind="ring"),
        lambda: CNN1d(1, 7, 1, kind="local"),
        lambda: CNN1d(1, 7, 2, kind="local", size=30),
    ],
)
def test_bad_options(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("label", ["CNN(2,7,3)", "CG(1,7,3,2)"])
@pytest.mark.parametrize("shape", [(3, 37), (3, 2, 37), (3, 1, 5, 7)])
def test_wrong_input_shape(label, shape):
    with pytest.raises(ValueError, match=r"\(N, C=1, L\)"):
        build_from_label(label)(torch.rand(shape))


def test_single_layer_cnn_is_a_shift_invariant_convolution():
    model = build_from_label("CNN(1,5,1)")
    x = torch.rand(2, 1, 31)
    shifted = torch.roll(x, 4, dims=-1)
    # away from the zero-padded borders a convolution commutes with shifts
    a, b = model(x)[..., 8:-8], model(shifted)[..., 12:-4]
    torch.testing.assert_close(a, b)


def test_coordgate_starts_as_a_plain_convolution_then_varies_with_position():
    model = build_from_label("CG(1,5,3,2)")
    x = torch.rand(4, 1, 29)
    plain = model.project(model.convs[0](x))
    torch.testing.assert_close(model(x), plain)  # the gate starts at one
    torch.nn.init.normal_(model.gate.encoder[-1].weight)
    assert not torch.allclose(model(x), plain)


def test_one_layer_coordgate_is_linear_in_its_input():
    model = build_from_label("CG(1,7,4,2)")
    torch.nn.init.normal_(model.gate.encoder[-1].weight)
    a, b = torch.rand(2, 1, 1, 23)
    zero = model(torch.zeros_like(a))
    torch.testing.assert_close(model(a + b) - zero, (model(a) - zero) + (model(b) - zero))


def test_random_input_gate_is_seeded_and_replaces_coordinates():
    torch.manual_seed(0)
    coords = build_from_label("CG(1,7,3,2)")
    torch.manual_seed(0)
    random = build_from_label("CG-random(1,7,3,2)", size=31, seed=5)
    assert isinstance(random.gate, RandomInputGate)
    static = random.gate.static_input
    assert (
        static.shape == (1, 31)
        and static.abs().max() <= 1
        and "gate.static_input" in (random.state_dict())
    )
    again = build_from_label("CG-random(1,7,3,2)", size=31, seed=5).gate.static_input
    other = build_from_label("CG-random(1,7,3,2)", size=31, seed=6).gate.static_input
    torch.testing.assert_close(static, again)
    assert not torch.equal(static, other)
    # Same seed, same weights: only the encoder's input differs.
    random.load_state_dict({**coords.state_dict(), "gate.static_input": static})
    torch.nn.init.normal_(
        coords.gate.encoder[-1].weight, generator=torch.Generator().manual_seed(1)
    )
    random.gate.encoder[-1].weight.data.copy_(coords.gate.encoder[-1].weight)
    x = torch.rand(2, 1, 31)
    assert not torch.allclose(random(x), coords(x))


def test_random_input_gate_only_takes_its_own_frame():
    model = build_from_label("CG-random(1,7,3,2)", size=31)
    with pytest.raises(ValueError, match="31 samples"):
        model(torch.rand(2, 1, 29))


def test_eval_mode_caches_the_random_gate():
    model = build_from_label("CG-random(1,7,3,2)", size=31).eval()
    torch.nn.init.normal_(model.gate.encoder[-1].weight)
    x = torch.rand(2, 1, 31)
    with torch.no_grad():
        first = model(x)
        torch.testing.assert_close(model(x), first)
    assert len(model.gate._cache) == 1


def test_coordconv_network_sees_position():
    model = build_from_label("CCNN(1,3,1)")
    x = torch.rand(2, 1, 31)
    shifted = torch.roll(x, 4, dims=-1)
    assert not torch.allclose(model(x)[..., 8:-8], model(shifted)[..., 12:-4])


def test_one_layer_lcn_represents_h_but_for_its_far_off_diagonal_entries():
    h = spatially_varying_matrix(30)
    model = build_from_label("LCN(1,13)")
    layer = model.convs[0]
    offsets = torch.arange(13) - 6
    rows = torch.arange(30)[:, None]
    columns = rows + offsets[None, :]
    inside = (columns >= 0) & (columns < 30)
    with torch.no_grad():
        layer.weight.copy_(torch.where(inside, h[rows, columns.clamp(0, 29)], 0).unsqueeze(1))
        layer.bias.zero_()
    band = torch.where((rows - torch.arange(30)).abs() <= 6, h, 0)
    m = torch.rand(5, 1, 30)
    torch.testing.assert_close(model(m), m @ band.T)
    assert (model(m) - m @ h.T).abs().max() < 30 * 0.0012  # entries beyond +-6 taps
    with pytest.raises(ValueError, match="spatial size"):
        model(torch.rand(2, 1, 29))


def test_pac_starts_near_its_cnn_twin_and_adapts_with_position():
    torch.manual_seed(0)
    pac = build_from_label("PAC(1,7,1)")
    conv = torch.nn.Conv1d(1, 1, 7, padding="same")
    with torch.no_grad():
        conv.weight.copy_(pac.convs[0].weight.view(1, 1, 7))
        conv.bias.copy_(pac.convs[0].bias)
    x = torch.rand(4, 1, 30)
    close = (pac(x) - conv(x)).abs().max()
    with torch.no_grad():
        pac.convs[0].guide[-1].weight.mul_(50)  # steep guidance: kernels differ by position
    assert close < 0.05 < (pac(x) - conv(x)).abs().max()
