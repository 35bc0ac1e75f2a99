"""Whole-image and tiled prediction with global sensor coordinates."""

import numpy as np
import pytest
import torch

from coordgate.inference import (
    default_overlap,
    default_tile,
    predict,
)
from coordgate.models import build_model
from coordgate.tiling import balanced_tile, plan_windows


def trained_like(name: str, base_channels: int = 4, **options) -> torch.nn.Module:
    """A model with perturbed (not identity-initialised) gates, as after training."""
    model = build_model(name, base_channels=base_channels, **options)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def cg_unet3() -> torch.nn.Module:
    torch.manual_seed(1)
    return trained_like("cg-unet3")


def test_tiled_equals_whole_image_on_256(cg_unet3):
    image = torch.rand(256, 256)
    whole = predict(cg_unet3, image)
    tiled = predict(cg_unet3, image, tile=128, overlap=64, batch_size=3)
    assert tiled.shape == (256, 256)
    assert (tiled - whole).abs().max() < 1e-3
    with torch.no_grad():
        direct = cg_unet3(image[None, None])[0, 0]
    torch.testing.assert_close(whole, direct)


def test_tiles_pass_their_global_origin(cg_unet3):
    """A crop deep inside a larger sensor, tiled with non-square tiles."""
    image = torch.rand(96, 128)
    frame = dict(origin=(200, 40), full_size=(400, 300))
    whole = predict(cg_unet3, image, **frame)
    tiled = predict(cg_unet3, image, tile=(64, 80), overlap=48, **frame)
    assert (tiled - whole).abs().max() < 1e-3
    elsewhere = predict(cg_unet3, image, origin=(0, 0), full_size=(400, 300))
    assert (elsewhere - whole).abs().max() > 1e-3


def test_small_overlap_is_allowed_but_inexact(cg_unet3):
    image = torch.rand(128, 128)
    whole = predict(cg_unet3, image)
    rough = predict(cg_unet3, image, tile=64, overlap=8)
    assert rough.shape == whole.shape and torch.isfinite(rough).all()
    assert (rough - whole).abs().max() > 1e-4


def test_odd_sized_image_keeps_exact_coordinates(cg_unet3):
    image = torch.rand(37, 31)
    out = predict(cg_unet3, image)
    assert out.shape == (37, 31)
    with torch.no_grad():
        first_window = cg_unet3(image[None, None, :36, :28])[0, 0]
    half = cg_unet3.receptive_field // 2
    # pixels farther than the blending band from the other window come from the first alone
    keep = (slice(0, 36 - half - 1), slice(0, 28 - half - 1))
    torch.testing.assert_close(out[:36, :28][keep], first_window[keep], atol=1e-4, rtol=1e-4)


def test_layouts_and_types_round_trip(cg_unet3):
    batch = np.random.rand(3, 1, 37, 31).astype(np.float32)
    out = predict(cg_unet3, batch, batch_size=2)
    assert isinstance(out, np.ndarray) and out.shape == (3, 1, 37, 31) and out.dtype == np.float32
    single = predict(cg_unet3, batch[1, 0])
    assert single.shape == (37, 31)
    np.testing.assert_allclose(single, out[1, 0], atol=1e-5)
    chw = predict(cg_unet3, torch.from_numpy(batch[2]))
    assert isinstance(chw, torch.Tensor) and chw.shape == (1, 37, 31)
    ints = predict(cg_unet3, (batch[0, 0] * 1000).astype(np.uint16))
    assert ints.shape == (37, 31) and np.isfinite(ints).all()


def test_mode_and_gradients_untouched(cg_unet3):
    cg_unet3.train()
    image = torch.rand(36, 28, requires_grad=True)
    out = predict(cg_unet3, image)
    assert cg_unet3.training and not out.requires_grad
    cg_unet3.eval()


def test_float64_model_returns_float64(cg_unet3):
    model = trained_like("unet3").double()
    out = predict(model, torch.rand(40, 36, dtype=torch.float64), tile=32, overlap=16)
    assert out.dtype == torch.float64


def test_auto_tiles_when_over_budget(cg_unet3):
    image = torch.rand(264, 260)
    whole = predict(cg_unet3, image, tile="auto")
    tiled = predict(cg_unet3, image, tile="auto", memory_budget=1 << 16)
    assert (tiled - whole).abs().max() < 1e-3


def test_defaults_follow_the_receptive_field_and_the_budget():
    for name in ("cg-unet3", "unet6"):
        model = build_model(name, base_channels=2)
        overlap, tile = default_overlap(model), default_tile(model, memory_budget=1 << 20)
        assert overlap >= model.receptive_field - 1 and overlap % model.required_multiple == 0
        assert tile >= 2 * overlap and tile % model.required_multiple == 0
    model = build_model("cg-unet3", base_channels=16)
    small, large = default_tile(model, 1 << 28), default_tile(model, 1 << 30)
    assert large > small and small**2 * model.activation_channels * 4 <= 1 << 28


def test_balanced_tiles_share_the_axis_evenly():
    assert balanced_tile(200, 256, 64, 4) is None
    tile = balanced_tile(2048, 512, 64, 4)
    plan = plan_windows(2048, tile, 64, 4, half_field=23)
    assert tile <= 512 and len(plan.starts) == 5
    assert len(plan.starts) * tile <= 1.2 * 2048  # plain 512-pixel tiles would cover 2560


def test_plan_windows_covers_the_axis_with_positive_weight():
    plan = plan_windows(1000, 256, 64, 4, half_field=23)
    assert plan.starts[0] == 0 and plan.starts[-1] == 1000 - 256
    assert all(s % 4 == 0 for s in plan.starts)
    total = torch.zeros(1000, dtype=torch.float64)
    for start, weight in zip(plan.starts, plan.weights):
        assert (weight[:23] == 0).all() or start == 0
        total[start : start + 256] += weight
    assert (total > 0).all()
    whole = plan_windows(37, None, 0, 4, half_field=3)
    assert whole.size == 36 and whole.starts == (0, 1)


def test_plain_model_pads_an_image_smaller_than_the_multiple():
    model = trained_like("unet4")
    out = predict(model, torch.rand(5, 6))
    assert out.shape == (5, 6) and torch.isfinite(out).all()


def test_coordinate_model_pads_inside_the_frame_only(cg_unet3):
    out = predict(cg_unet3, torch.rand(3, 2), origin=(10, 10), full_size=(100, 100))
    assert out.shape == (3, 2)
    at_the_end = predict(cg_unet3, torch.rand(3, 2), origin=(97, 98), full_size=(100, 100))
    assert at_the_end.shape == (3, 2)
    with pytest.raises(ValueError, match="no room to pad"):
        predict(cg_unet3, torch.rand(3, 2))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tile=30), "multiples of the model's required multiple 4"),
        (dict(tile=(32, 0)), "required multiple"),
        (dict(tile=32, overlap=32), "overlap"),
        (dict(overlap=-1), "overlap must be a non-negative"),
        (dict(batch_size=0), "batch_size"),
        (dict(origin=(20, 0), full_size=(40, 40)), "does not fit"),
    ],
)
def test_bad_arguments(cg_unet3, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predict(cg_unet3, torch.rand(36, 28), **kwargs)


@pytest.mark.parametrize(
    "image, message",
    [
        (torch.rand(36), r"\(H, W\)"),
        (torch.rand(2, 36, 28), "1 channel"),
        (torch.rand(36, 28, dtype=torch.complex64), "real numbers"),
        ([[1.0, 2.0]], "numpy array or torch tensor"),
        (torch.rand(0, 28), "empty"),
    ],
)
def test_bad_images(cg_unet3, image, message):
    with pytest.raises(ValueError, match=message):
        predict(cg_unet3, image)
