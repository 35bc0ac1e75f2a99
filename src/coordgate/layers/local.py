"""Locally-connected layer: a convolution whose weights are not shared across positions."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from coordgate.frames import Frame, FrameLike, Where, batch_frames
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

    >>> import torch
    >>> layer = LocallyConnected(1, 4, 3, size=(12, 10))
    >>> tuple(layer.weight.shape)  # one 3x3 kernel per output pixel and channel
    (120, 4, 9)
    >>> layer(torch.rand(2, 1, 12, 10)).shape
    torch.Size([2, 4, 12, 10])
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

    def forward(
        self, x: torch.Tensor, origin: Where = None, full_size: FrameLike = None
    ) -> torch.Tensor:
        """x: (N, in_channels, *spatial) -> (N, out_channels, *spatial).

        The weights cover a frame of ``size``: x is the whole frame, or crops of it placed
        by ``origin`` / ``full_size`` (one per sample allowed; see
        :func:`~coordgate.frames.batch_frames`). Each crop is set at its origin in a zero
        canvas of the frame, so it meets the kernels of the positions it covers and zeros
        beyond its borders, exactly what 'same' zero padding of the crop would give.
        """
        check_features(x, self.in_channels, self.dim, "LocallyConnected")
        frames = batch_frames(x, origin, full_size)
        pads = [self._canvas_padding(frames.size, f, x) for f in frames.frames]
        if frames.inverse is None:
            return _unpad(self._whole(_pad(x, pads[0])), pads[0])
        index = frames.inverse.tolist()
        y = self._whole(torch.stack([_pad(x[i], pads[k]) for i, k in enumerate(index)]))
        return torch.stack([_unpad(y[i], pads[k]) for i, k in enumerate(index)])

    def _canvas_padding(self, size: tuple[int, ...], frame: Frame, x: torch.Tensor) -> list[int]:
        """``F.pad`` amounts that place an input of ``size`` at ``frame``'s origin in the
        frame the weights cover."""
        origin, full = frame
        if full != tuple(float(s) for s in self.size) or any(o != int(o) for o in origin):
            raise ValueError(
                f"LocallyConnected has weights for spatial size {self.size}: the input must "
                f"lie at whole-pixel origins in a frame of that full_size, got input of shape "
                f"{tuple(x.shape)} at origin {origin} in full_size {full}"
            )
        pads: list[int] = []
        for o, n, f in zip(reversed(origin), reversed(size), reversed(self.size)):
            pads += [int(o), f - int(o) - n]
        return pads

    def _whole(self, x: torch.Tensor) -> torch.Tensor:
        """The layer on inputs of the whole frame: (N, in, *size) -> (N, out, *size)."""
        patches = local_patches(x, self.kernel_size).transpose(0, 1)  # (P, N, C*K)
        out = torch.bmm(patches, self.weight.transpose(1, 2))  # (P, N, out)
        if self.bias is not None:
            out = out + self.bias.unsqueeze(1)
        return out.permute(1, 2, 0).reshape(x.shape[0], self.out_channels, *self.size)


def _pad(x: torch.Tensor, pads: list[int]) -> torch.Tensor:
    return F.pad(x, pads) if any(pads) else x


def _unpad(x: torch.Tensor, pads: list[int]) -> torch.Tensor:
    return F.pad(x, [-p for p in pads]) if any(pads) else x
