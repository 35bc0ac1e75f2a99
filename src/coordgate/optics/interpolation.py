"""Linear interpolation on a rectilinear grid of field points.

One rule serves the whole optics package: a PSF (or an eigen-PSF coefficient) between
grid points is the bilinear blend of its four neighbours, and positions outside the grid
take the value of the nearest grid edge. Bilinear weights are non-negative and sum to
one, so blended PSFs stay non-negative with unit sum.
"""

from __future__ import annotations

import torch

__all__ = ["bracket", "check_grid_positions", "interpolation_matrix"]


def check_grid_positions(positions: torch.Tensor, name: str) -> torch.Tensor:
    """Validate a 1-D, finite, strictly increasing tensor of grid positions; return float64."""
    positions = torch.as_tensor(positions, dtype=torch.float64)
    if positions.ndim != 1 or positions.numel() < 1:
        raise ValueError(
            f"{name} must be a non-empty 1-D sequence, got shape {tuple(positions.shape)}"
        )
    if not torch.isfinite(positions).all():
        raise ValueError(f"{name} must be finite, got {positions.tolist()}")
    if positions.numel() > 1 and not (positions.diff() > 0).all():
        raise ValueError(f"{name} must be strictly increasing, got {positions.tolist()}")
    return positions


def bracket(
    coords: torch.Tensor, grid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Neighbours and blend of each coordinate: coords (M,), grid (n,) -> i0, i1 (M,), t (M,).

    ``value(coord) = (1 - t) * value[i0] + t * value[i1]``, clamped to the grid's ends.
    """
    coords, grid = coords.contiguous(), grid.to(coords).contiguous()
    n = grid.numel()
    if n == 1:
        zeros = torch.zeros_like(coords, dtype=torch.long)
        return zeros, zeros, torch.zeros_like(coords)
    i0 = (torch.searchsorted(grid, coords, right=True) - 1).clamp(0, n - 2)
    t = ((coords - grid[i0]) / (grid[i0 + 1] - grid[i0])).clamp(0, 1)
    return i0, i0 + 1, t


def interpolation_matrix(coords: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Dense (M, n) matrix whose rows hold each coordinate's linear-interpolation weights."""
    i0, i1, t = bracket(coords, grid)
    rows = torch.arange(coords.numel(), device=coords.device)
    matrix = torch.zeros(coords.numel(), grid.numel(), dtype=coords.dtype, device=coords.device)
    matrix.index_put_((rows, i0), 1 - t, accumulate=True)
    matrix.index_put_((rows, i1), t, accumulate=True)
    return matrix
