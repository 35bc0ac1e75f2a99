import pytest
import torch
import torch.nn.functional as F

from coordgate import coordinate_grid


@pytest.mark.parametrize("size", [(37,), (37, 31), (5, 7, 3)])
def test_grid_shape_and_range(size, device):
    grid = coordinate_grid(size, device=device, dtype=torch.float64)
    assert grid.shape == (len(size), *size)
    assert grid.device.type == device.type
    assert grid.min() > -1 and grid.max() < 1
    for axis in range(len(size)):
        line = grid[axis].movedim(axis, 0).reshape(size[axis], -1)[:, 0]
        assert torch.allclose(line, -line.flip(0))  # symmetric about the frame centre
        assert torch.all(line.diff() > 0)


def test_non_square_axes_order():
    grid = coordinate_grid((3, 5))
    assert torch.all(grid[0, :, 0].diff() > 0) and torch.all(grid[0, 0, :].diff() == 0)
    assert torch.all(grid[1, 0, :].diff() > 0) and torch.all(grid[1, :, 0].diff() == 0)


def test_crop_matches_full_frame():
    full = coordinate_grid((37, 31), dtype=torch.float64)
    crop = coordinate_grid((10, 7), origin=(5, 20), full_size=(37, 31), dtype=torch.float64)
    assert torch.equal(crop, full[:, 5:15, 20:27])


@pytest.mark.parametrize("level", [1, 2, 3])
def test_downsampled_level_matches_physical_positions(level):
    s = 2**level
    full = coordinate_grid((48, 40), dtype=torch.float64)
    pooled = F.avg_pool2d(full.unsqueeze(0), s)[0]
    low = coordinate_grid((48 // s, 40 // s), dtype=torch.float64)
    assert torch.allclose(pooled, low, atol=1e-12)
    # a tile at origin (8, 16) seen at the downsampled level, in that level's units
    tile = coordinate_grid(
        (16 // s, 8 // s), origin=(8 / s, 16 / s), full_size=(48 / s, 40 / s), dtype=torch.float64
    )
    assert torch.allclose(tile, low[:, 8 // s : 8 // s + 16 // s, 16 // s : 16 // s + 8 // s])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(origin=(30, 0), full_size=(37, 31)), "does not fit"),
        (dict(origin=(-1, 0), full_size=(37, 31)), "does not fit"),
        (dict(origin=(0,), full_size=(37, 31)), "one value per spatial axis"),
        (dict(full_size=(0, 31)), "positive"),
    ],
)
def test_bad_frames(kwargs, message):
    with pytest.raises(ValueError, match=message):
        coordinate_grid((10, 7), **kwargs)
