"""Locally-connected layer: a convolution whose weights are not shared across positions."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from coordgate.layers.shapes import check_dim, check_features, same_padding

__all__ = ["LocallyConnected", "local_patches", "valid_patches"]


def valid_patches(padded: torch.Tensor, kernel_size: Sequence[int]) -> torch.Tensor:
    """Neighbourhoods of every pixel that has a full window inside ``padded``.

    padded: (N, C, *spatial_padded) -> (N, P, C * K) with P the number of full windows and
    K = prod(kernel_size); the C * K entries are ordered channel-major, then kernel
    offsets in row-major order, matching a flattened ``nn.ConvNd`` weight.
    """
    n, c = padded.shape[:2]
    dim = len(kernel_size)
    patches = padded
    for axis, k in enumerate(kernel_size):
        patches = patches.unfold(2 + axis, k, 1)
    # (N, C, *spatial, *kernel) -> (N, *spatial, C, *kernel)
    patches = patches.permute(0, *range(2, 2 + dim), 1, *range(2 + dim, 2 + 2 * dim))
    return patches.reshape(n, -1, c * math.prod(kernel_size))


def local_patches(x: torch.Tensor, kernel_size: Sequence[int]) -> torch.Tensor:
    """'Same'-padded neighbourhoods of every pixel: (N, C, *spatial) -> (N, P, C * K)."""
    return valid_patches(F.pad(x, same_padding(kernel_size)), kernel_size)


class LocallyConnected(nn.Module):
    """Each output position has its own kernel ('same' zero padding, stride 1).

    x: (N, in_channels, *size) -> (N, out_channels, *size)

    Weight: (P, out_channels, in_channels * K) for P = prod(size) positions and
    K = prod(kernel_size) taps. The product runs as one batched matmul over positions on
    the unfolded patches, so no (N, out, in, P, K) intermediate is formed.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        size: Sequence[int],
        *,
        dim: int = 2,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.dim = check_dim(dim)
        self.kernel_size = (
            (kernel_size,) * dim if isinstance(kernel_size, int) else tuple(kernel_size)
        )
        self.size = tuple(int(s) for s in size)
        if len(self.kernel_size) != dim or len(self.size) != dim:
            raise ValueError(
                f"kernel_size and size need {dim} entries, got {self.kernel_size}, {self.size}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        positions, taps = math.prod(self.size), in_channels * math.prod(self.kernel_size)
        bound = 1 / math.sqrt(taps)
        self.weight = nn.Parameter(
            torch.empty(positions, out_channels, taps).uniform_(-bound, bound)
        )
        self.bias = (
            nn.Parameter(torch.empty(positions, out_channels).uniform_(-bound, bound))
            if bias
            else None
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"size={self.size}, bias={self.bias is not None}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_features(x, self.in_channels, self.dim, "LocallyConnected")
        if tuple(x.shape[2:]) != self.size:
            raise ValueError(
                f"LocallyConnected has weights for spatial size {self.size}, "
                f"got input of shape {tuple(x.shape)}"
            )
        patches = local_patches(x, self.kernel_size).transpose(0, 1)  # (P, N, C*K)
        out = torch.bmm(patches, self.weight.transpose(1, 2))  # (P, N, out)
        if self.bias is not None:
            out = out + self.bias.unsqueeze(1)
        return out.permute(1, 2, 0).reshape(x.shape[0], self.out_channels, *self.size)
