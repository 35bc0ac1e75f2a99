"""The gate's fast paths give today's values: the fused inference convolution, the gates of
a batch of frames over the union of their pixels (values and gradients) and the cached
whole-sensor gate of tiles."""

import pytest
import torch

from coordgate import CoordGate
from coordgate.frames import Frame, batch_frames, coordinate_grid, pixel_union
from coordgate.layers.fused import gated_conv
from coordgate.layers.gate import encode_pixels
from coordgate.models import build_model
from tests.helpers import randomise


def unfused(conv, x, gate, relu):
    y = conv(x)
    y = torch.relu(y) if relu else y
    return y if gate is None else y * gate


CONVS = {
    1: lambda: torch.nn.Conv1d(3, 5, 3, padding=1),
    2: lambda: torch.nn.Conv2d(3, 5, (3, 5), padding="same"),
    3: lambda: torch.nn.Conv3d(3, 5, 3, padding=1, bias=False),
}


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("gate_kind", ["none", "signed", "nonnegative", "per-sample"])
def test_gated_conv_equals_the_separate_operations(dim, relu, gate_kind):
    conv = CONVS[dim]()
    spatial = {1: (37,), 2: (37, 31), 3: (7, 5, 6)}[dim]
    x = torch.randn(2, 3, *spatial)
    gate = {
        "none": None,
        "signed": torch.randn(1, 5, *spatial),
        "nonnegative": torch.rand(1, 5, *spatial),
        "per-sample": torch.randn(2, 5, *spatial),
    }[gate_kind]
    with torch.no_grad():
        fused = gated_conv(conv, x, gate, relu=relu)
        expected = unfused(conv, x, gate, relu)
    torch.testing.assert_close(fused, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("relu", [False, True])
def test_gated_conv_gradients_equal_the_separate_operations(relu):
    conv = CONVS[2]()
    x = torch.randn(2, 3, 9, 7, requires_grad=True)
    gate = torch.randn(1, 5, 9, 7, requires_grad=True)
    probe = torch.randn(2, 5, 9, 7)
    inputs = [x, gate, *conv.parameters()]
    fused = torch.autograd.grad((gated_conv(conv, x, gate, relu=relu) * probe).sum(), inputs)
    expected = torch.autograd.grad((unfused(conv, x, gate, relu) * probe).sum(), inputs)
    for got, want in zip(fused, expected):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def reference_gates(gate: CoordGate, size, origins, full_size) -> torch.Tensor:
    """Today's per-frame path: one encoder call per frame on its coordinate grid."""
    return torch.stack(
        [
            encode_pixels(gate.encoder, coordinate_grid(size, origin=o, full_size=full_size))
            for o in origins
        ]
    )


def assert_gates_match_the_per_frame_path(gate: CoordGate, size, origins, full) -> None:
    """gate.gates() and every gradient through it equal one encoder call per frame."""
    probe = torch.randn(len(origins), gate.channels, *size)
    shared = gate.gates(size, origins, [full] * len(origins))
    expected = reference_gates(gate, size, origins, full)
    torch.testing.assert_close(shared, expected, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad((shared * probe).sum(), list(gate.parameters()))
    expected_grads = torch.autograd.grad((expected * probe).sum(), list(gate.parameters()))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_batched_gates_match_one_encoder_call_per_frame_with_gradients(layers):
    gate = randomise(CoordGate(4, hidden=8, layers=layers))
    origins = [(0.0, 0.0), (10.0, 4.5), (2.25, 10.0)]
    assert_gates_match_the_per_frame_path(gate, (6, 7), origins, (20, 17))


def test_overlapping_crops_share_their_pixels_and_match_the_per_sample_gates():
    """Random training crops: the encoder runs once per distinct pixel, and the gathered
    gates and every gradient equal one encoder call per crop within 1e-5."""
    torch.manual_seed(5)
    gate = randomise(CoordGate(6))
    size, full = (16, 16), (48, 40)
    origins = torch.randint(0, 25, (8, 2)).tolist()
    union = pixel_union(size, [Frame(tuple(map(float, o)), full) for o in origins])
    assert union.points.shape[1] < 8 * 16 * 16  # the crops overlap
    assert_gates_match_the_per_frame_path(gate, size, origins, full)


def test_unet_gate_with_per_sample_frames_matches_the_per_frame_path():
    gate = randomise(CoordGate(4))
    x = torch.randn(4, 4, 8, 12, requires_grad=True)
    origins = torch.tensor([[0, 0], [6, 2], [0, 0], [3, 5]])
    for level in (0, 1, 2):
        scale = 2**level
        full_resolution = x.new_empty(4, 4, 8 * scale, 12 * scale)
        y = gate(x, batch_frames(full_resolution, origins, (128, 96)).scaled(level))
        expected = x * reference_gates(
            gate,
            (8, 12),
            [[v / scale for v in row] for row in origins.tolist()],
            (128 / scale, 96 / scale),
        )
        torch.testing.assert_close(y, expected, atol=1e-6, rtol=1e-5)
        probe = torch.randn_like(y)
        got = torch.autograd.grad((y * probe).sum(), [x, *gate.parameters()])
        want = torch.autograd.grad((expected * probe).sum(), [x, *gate.parameters()])
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_cg_unet_training_step_with_per_sample_origins_matches_separate_samples():
    """Loss and every parameter's gradient of a batch of crops with their own origins
    equal those of the crops run one at a time (the per-sample cost is gone, not the
    per-sample frames)."""
    torch.manual_seed(3)
    model = randomise(build_model("cg-unet3", base_channels=4), 0.1)
    x, target = torch.rand(2, 3, 1, 32, 32)
    origins = torch.tensor([[0, 0], [13, 7], [31, 64]])
    loss = torch.nn.functional.mse_loss(model(x, origins, (96, 96)), target, reduction="sum")
    together = torch.autograd.grad(loss, list(model.parameters()))
    alone = [
        torch.autograd.grad(
            torch.nn.functional.mse_loss(
                model(x[i : i + 1], origins[i].tolist(), (96, 96)),
                target[i : i + 1],
                reduction="sum",
            ),
            list(model.parameters()),
        )
        for i in range(3)
    ]
    for k, got in enumerate(together):
        torch.testing.assert_close(got, sum(a[k] for a in alone), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("sign", ["nonnegative", "signed"])
def test_cg_unet_inference_equals_the_training_path_within_1e_5(sign):
    """Inference (ReLU inside the convolution, the cached gate multiplied in place) against
    the training graph, for gates of either sign."""
    torch.manual_seed(4)
    model = randomise(build_model("cg-unet3", base_channels=4), 0.1)
    if sign == "signed":
        with torch.no_grad():
            model.down_gates[0].encoder[-1].bias.fill_(-0.5)  # a gate below zero somewhere
    x = torch.rand(2, 1, 48, 40)
    origins = torch.tensor([[0, 0], [16, 8]])
    expected = model(x, origins, (96, 64)).detach()
    model.eval()
    with torch.inference_mode():
        assert (model.down_gates[0].gate((48, 40)) < 0).any() == (sign == "signed")
        torch.testing.assert_close(model(x, origins, (96, 64)), expected, atol=1e-5, rtol=0)


def test_tiles_on_the_pooling_grid_reuse_one_cached_sensor_gate():
    model = randomise(build_model("cg-unet3", base_channels=4), 0.1)
    x = torch.rand(3, 1, 32, 32)
    origins = torch.tensor([[0, 0], [16, 32], [32, 8]])  # multiples of 4: every level aligned
    expected = model(x, origins, (64, 64)).detach()
    model.eval()
    with torch.inference_mode():
        first = model(x, origins, (64, 64))
        (gate,) = model.down_gates[0]._cache.values()
        assert gate.shape == (4, 64, 64) and all(len(g._cache) == 1 for g in model.up_gates)
        again = model(x.flip(0), origins.flip(0), (64, 64)).flip(0)
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(again, first)


def test_gates_as_wide_as_their_channels():
    """hidden=None: the paper's CG(L,k,c,p) encoder, c nodes per layer; cg-unet3-narrow
    builds every gate so and is otherwise cg-unet3."""
    assert CoordGate(12, hidden=None).encoder[0].out_features == 12
    narrow = build_model("cg-unet3-narrow", base_channels=4)
    wide = build_model("cg-unet3", base_channels=4)
    gates = [*narrow.down_gates, *narrow.up_gates]
    assert [g.encoder[0].out_features for g in gates] == [4, 8, 8, 16]
    assert [g.channels for g in gates] == [g.channels for g in [*wide.down_gates, *wide.up_gates]]
    x = torch.rand(2, 1, 16, 16)
    assert narrow(x, torch.tensor([[0, 0], [8, 4]]), (32, 32)).shape == x.shape
