"""coordgate.frames: the one home of sensor frames, their validation, scaling and coordinates."""

import pytest
import torch

from coordgate import CoordConv, CoordGate, LocallyConnected, PixelAdaptiveConv
from coordgate.frames import (
    BatchFrames,
    Frame,
    batch_frames,
    coordinate_grid,
    pixel_union,
    resolve_frame,
)


def test_resolve_frame_defaults_to_the_whole_array():
    assert resolve_frame((37, 31)) == Frame((0.0, 0.0), (37.0, 31.0))
    assert resolve_frame((5,), 2, 9) == Frame((2.0,), (9.0,))
    frame = resolve_frame((4, 4), (1, 2), (8, 8))
    assert resolve_frame((4, 4), frame) is frame  # a made frame passes unchanged


@pytest.mark.parametrize(
    "origin, full_size, message",
    [
        ((4, 0), (10, 10), r"does not fit in a frame of full_size \(10.0, 10.0\).*axis 0"),
        ((-1, 0), (10, 10), "need 0 <= origin"),
        ((1, 2, 3), None, r"origin must give one value per spatial axis \(2\), got 3"),
        (None, (0, 10), "full_size must be positive on every axis"),
    ],
)
def test_resolve_frame_names_the_bad_value(origin, full_size, message):
    with pytest.raises(ValueError, match=message):
        resolve_frame((8, 8), origin, full_size)


def test_scaling_to_a_level_keeps_coordinates_on_the_sensor():
    frame = resolve_frame((32, 24), (16, 8), (128, 96))
    assert frame.scaled(0) == frame
    assert frame.scaled(2) == Frame((4.0, 2.0), (32.0, 24.0))
    fine = frame.grid((32, 24), dtype=torch.float64)
    coarse = frame.scaled(2).grid((8, 6), dtype=torch.float64)
    pooled = torch.nn.functional.avg_pool2d(fine[None], 4)[0]
    torch.testing.assert_close(coarse, pooled)


def test_grid_is_the_coordinate_grid_of_the_frame():
    frame = resolve_frame((10, 7), (5, 20), (37, 31))
    torch.testing.assert_close(
        frame.grid((10, 7)), coordinate_grid((10, 7), origin=(5, 20), full_size=(37, 31))
    )


def test_batch_frames_per_sample_and_shared():
    x = torch.zeros(3, 1, 8, 8)
    shared = batch_frames(x, (4, 4), (16, 16))
    assert shared.inverse is None and shared.frames == (Frame((4.0, 4.0), (16.0, 16.0)),)
    rows = [[0, 0], [8, 8], [0, 0]]
    for origin in (torch.tensor(rows), rows):
        frames = batch_frames(x, origin, (16, 16))
        assert [f.origin for f in frames.frames] == [(0.0, 0.0), (8.0, 8.0)]
        assert frames.inverse.tolist() == [0, 1, 0]
    sizes = batch_frames(x, None, torch.tensor([[8, 8], [16, 16], [8, 8]]))
    assert [f.full_size for f in sizes.frames] == [(8.0, 8.0), (16.0, 16.0)]


def test_batch_frames_validate_once_and_pass_made_frames_on():
    x = torch.zeros(2, 1, 8, 8)
    frames = batch_frames(x, torch.tensor([[0, 0], [8, 8]]), (16, 16))
    assert batch_frames(x, frames) is frames
    assert batch_frames(x, Frame((1.0, 1.0), (9.0, 9.0))).frames == (Frame((1.0, 1.0), (9.0, 9.0)),)
    with pytest.raises(ValueError, match=r"per-sample origins must be 2 numbers or an \(N, 2\)"):
        batch_frames(x, torch.zeros(3, 2), (16, 16))
    with pytest.raises(ValueError, match="does not fit"):
        batch_frames(x, torch.tensor([[0, 0], [9, 0]]), (16, 16))
    with pytest.raises(ValueError, match=r"frames are of 2 samples of size \(8, 8\)"):
        batch_frames(torch.zeros(2, 1, 4, 4), frames)
    with pytest.raises(ValueError, match="full_size must be None when origin is a BatchFrames"):
        batch_frames(x, frames, (16, 16))


def test_scaled_batch_frames_follow_the_levels():
    x = torch.zeros(2, 1, 16, 12)
    frames = batch_frames(x, torch.tensor([[0, 4], [8, 0]]), (64, 48))
    level = frames.scaled(2)
    assert isinstance(level, BatchFrames) and level.size == (4, 3)
    assert [f.origin for f in level.frames] == [(0.0, 1.0), (2.0, 0.0)]
    assert level.inverse is frames.inverse


def test_per_sample_maps_gather_shared_frames():
    x = torch.zeros(4, 1, 2, 2)
    frames = batch_frames(x, torch.tensor([[0, 0], [1, 1], [0, 0], [1, 1]]), (3, 3))
    calls = []

    def first_coordinate(order):
        calls.append(len(order))
        return torch.tensor([f.origin[0] for f in order])

    assert frames.per_sample(first_coordinate).tolist() == [0.0, 1.0, 0.0, 1.0]
    assert calls == [2]  # each distinct frame once
    distinct = batch_frames(x, torch.tensor([[0, 0], [1, 1], [1, 0], [0, 1]]), (3, 3))
    assert distinct.per_sample(first_coordinate).tolist() == [0.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize(
    "size, origins, full",
    [
        ((5,), [(0.0,), (3.0,), (3.0,), (1.5,)], (11.0,)),
        ((4, 3), [(0.0, 0.0), (2.0, 1.0), (1.0, 2.0)], (9.0, 7.0)),
        ((3, 2, 4), [(0.0, 0.0, 0.0), (1.0, 0.5, 2.0)], (5.0, 4.0, 9.0)),
        # a sensor large enough that the union sorts instead of marking a table
        ((4, 4), [(0.0, 0.0), (500.0, 700.0), (2.0, 2.0)], (1000.0, 1000.0)),
        # origins on no power-of-two lattice: numbered by sorting their coordinates
        ((3, 4), [(0.0, 1 / 3), (2.0, 0.0), (1 / 3, 1.0)], (7.0, 9.0)),
    ],
)
def test_pixel_union_holds_every_pixel_once(size, origins, full):
    frames = [Frame(o, full) for o in origins]
    union = pixel_union(size, frames, dtype=torch.float64)
    grids = torch.stack([f.grid(size, dtype=torch.float64) for f in frames])  # (K, dim, *size)
    gathered = union.points[:, union.index].movedim(0, 1)
    assert torch.equal(gathered, grids)
    distinct = torch.unique(grids.movedim(1, -1).reshape(-1, len(size)), dim=0)
    assert union.points.shape == (len(size), len(distinct))
    one = pixel_union(size, frames[:1], dtype=torch.float64)
    assert one.index is None and torch.equal(one.points, grids[0].reshape(len(size), -1))


@pytest.mark.parametrize(
    "layer",
    [
        CoordGate(3),
        CoordConv(3, 2, 3),
        PixelAdaptiveConv(3, 2, 3),
        LocallyConnected(3, 2, 3, (12, 10)),
    ],
    ids=["gate", "coordconv", "pac", "local"],
)
def test_layers_take_per_sample_frames(layer):
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(3, 3, 6, 4)
    origins = torch.tensor([[0, 0], [6, 6], [2, 4]])
    frames = batch_frames(x, origins, (12, 10))
    together = layer(x, frames)
    for i in range(3):
        alone = layer(x[i : i + 1], origins[i].tolist(), (12, 10))
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_crops_on_a_lattice_are_numbered_as_sorting_their_coordinates_would(level, monkeypatch):
    """Random crops of one sensor, at each U-Net level: marking a table of the lattice gives
    the same points, in the same order, and the same index as sorting every pixel."""
    generator = torch.Generator().manual_seed(level)
    origins = torch.randint(0, 41, (6, 2), generator=generator)
    x = torch.empty(6, 1, 24, 16)
    frames = batch_frames(x, origins, (64, 56)).scaled(level)
    order, _ = frames.evaluation_order()
    on_lattice = pixel_union(frames.size, order)
    monkeypatch.setattr("coordgate.frames._lattice_union", lambda *args, **kwargs: None)
    sorted_ = pixel_union(frames.size, order)
    assert torch.equal(on_lattice.points, sorted_.points)
    assert torch.equal(on_lattice.index, sorted_.index)


def test_a_batch_computes_its_union_of_pixels_once():
    frames = batch_frames(torch.empty(3, 1, 4, 4), torch.tensor([[0, 0], [2, 1], [4, 4]]), (9, 9))
    union = frames.pixel_union(dtype=torch.float64)
    assert frames.pixel_union(dtype=torch.float64) is union
    assert frames.pixel_union(dtype=torch.float32) is not union
    assert union.points.shape[1] == 3 * 16 - 6 - 2  # overlaps of 2x3 and 2x1 pixels
