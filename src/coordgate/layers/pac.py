"""Pixel-adaptive convolution (PAC; Su et al., CVPR 2019) guided by sensor coordinates.

PAC multiplies the shared kernel, at every pixel i and neighbour j, by a fixed pairwise
function of guidance features: ``y_i = sum_j K(f_i, f_j) W[j - i] x_j + b`` with the
Gaussian ``K(f_i, f_j) = exp(-|f_i - f_j|^2 / 2)``. It is the paper's example of an
adaptive convolution with a fixed parametric pairwise form (§II).

Why the guidance is *learned* features of the coordinates: with the raw coordinates as
``f``, ``f_i - f_j`` is just the offset ``j - i`` scaled, identical at every pixel, so
``K`` would only reweight the kernel the same way everywhere — an ordinary convolution.
An encoder ``f = g(C)`` (a pixel-wise MLP) stretches coordinate space unevenly, so the
same offset gives different weights at different positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from coordgate.frames import Frame, FrameLike, Where, batch_frames, coordinate_grid
from coordgate.layers.gate import coordinate_encoder, encode_pixels
from coordgate.layers.local import valid_patches
from coordgate.layers.shapes import check_dim, check_features, same_padding

__all__ = ["PixelAdaptiveConv"]


class PixelAdaptiveConv(nn.Module):
    """Convolution whose kernel is modulated per pixel by a Gaussian of guidance differences.

    x: (N, in_channels, *spatial) -> (N, out_channels, *spatial) ('same' zero padding)

    Args:
        guide_channels: number of guidance features f = g(C) per pixel.
        hidden, layers: the coordinate encoder g (pixel-wise MLP).
        max_elements: the unfolded neighbourhoods are processed in slabs of rows so that
            one slab holds at most about this many elements (bounds memory at any size).

    Unlike CoordGate, PAC changes the convolution itself, so it runs as unfold + matmul
    rather than on the fast convolution kernels.

    >>> import torch
    >>> layer = PixelAdaptiveConv(2, 6, 3, guide_channels=4)
    >>> layer(torch.rand(1, 2, 16, 24)).shape
    torch.Size([1, 6, 16, 24])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        *,
        dim: int = 2,
        guide_channels: int = 4,
        hidden: int = 16,
        layers: int = 2,
        bias: bool = True,
        max_elements: int = 2**24,
    ) -> None:
        super().__init__()
        self.dim = check_dim(dim)
        self.kernel_size = (
            (kernel_size,) * dim if isinstance(kernel_size, int) else tuple(kernel_size)
        )
        if len(self.kernel_size) != dim or min(self.kernel_size) < 1:
            raise ValueError(f"kernel_size needs {dim} positive entries, got {kernel_size!r}")
        for name, value in dict(
            in_channels=in_channels, out_channels=out_channels, guide_channels=guide_channels
        ).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if max_elements < 1:
            raise ValueError(f"max_elements must be positive, got {max_elements!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.guide_channels, self.max_elements = guide_channels, max_elements
        taps = in_channels * math.prod(self.kernel_size)
        bound = 1 / math.sqrt(taps)
        self.weight = nn.Parameter(torch.empty(out_channels, taps).uniform_(-bound, bound))
        self.bias = (
            nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound)) if bias else None
        )
        self.guide = coordinate_encoder(dim, guide_channels, hidden, layers)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"dim={self.dim}, guide_channels={self.guide_channels}"
        )

    def guidance(
        self,
        size: Sequence[int],
        origin: FrameLike | Frame = None,
        full_size: FrameLike = None,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Guidance features g(C) of an input of spatial ``size``: (guide_channels, *size)."""
        coords = coordinate_grid(
            size, origin=origin, full_size=full_size, device=device, dtype=dtype
        )
        return encode_pixels(self.guide, coords)

    def forward(
        self, x: torch.Tensor, origin: Where = None, full_size: FrameLike = None
    ) -> torch.Tensor:
        """x: (N, in_channels, *spatial) -> (N, out_channels, *spatial).

        ``origin``: one origin for the batch, (N, dim) per-sample origins, or a frame (see
        :func:`~coordgate.frames.batch_frames`); one guidance map per distinct frame.
        """
        check_features(x, self.in_channels, self.dim, "PixelAdaptiveConv")
        frames = batch_frames(x, origin, full_size)
        like = dict(device=x.device, dtype=x.dtype)
        guides = frames.per_sample(
            lambda order: torch.stack([self.guidance(frames.size, f, **like) for f in order])
        )
        return self._convolve(x, guides)

    def guided(self, x: torch.Tensor, guides: torch.Tensor) -> torch.Tensor:
        """The convolution with given guidance features (e.g. one frame's per sample).

        x: (N, in_channels, *spatial), guides: (N or 1, guide_channels, *spatial)
        -> (N, out_channels, *spatial).
        """
        check_features(x, self.in_channels, self.dim, "PixelAdaptiveConv")
        if (
            guides.ndim != x.ndim
            or guides.shape[0] not in (1, x.shape[0])
            or (guides.shape[1:] != (self.guide_channels, *x.shape[2:]))
        ):
            raise ValueError(
                f"PixelAdaptiveConv guidance must have shape (N or 1, {self.guide_channels}, "
                f"{', '.join(map(str, x.shape[2:]))}) for input {tuple(x.shape)}, "
                f"got {tuple(guides.shape)}"
            )
        return self._convolve(x, guides)

    def _convolve(self, x: torch.Tensor, guides: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[2:])
        pads = same_padding(self.kernel_size)
        x_padded, g_padded = F.pad(x, pads), F.pad(guides, pads)
        halo = self.kernel_size[0] - 1
        per_row = x.shape[0] * x.shape[1] * math.prod(self.kernel_size) * math.prod(size[1:])
        step = max(1, self.max_elements // max(per_row, 1))
        slabs = [
            self._slab(
                x_padded[:, :, r : r + rows + halo],
                g_padded[:, :, r : r + rows + halo],
                guides[:, :, r : r + rows],
            )
            for r in range(0, size[0], step)
            for rows in [min(step, size[0] - r)]
        ]
        out = slabs[0] if len(slabs) == 1 else torch.cat(slabs, dim=1)  # (N, P, out)
        return out.transpose(1, 2).reshape(x.shape[0], self.out_channels, *size)

    def _slab(self, x_padded, g_padded, centre) -> torch.Tensor:
        """One slab of rows: (N, P, out) for the P pixels of ``centre`` (B, F, rows, ...)."""
        k = math.prod(self.kernel_size)
        patches = valid_patches(x_padded, self.kernel_size)  # (N, P, C*K)
        n, p = patches.shape[:2]
        guide_patches = valid_patches(g_padded, self.kernel_size)  # (B, P, F*K)
        guide_patches = guide_patches.view(guide_patches.shape[0], p, self.guide_channels, k)
        centre = centre.reshape(centre.shape[0], self.guide_channels, p).transpose(1, 2)
        adapt = torch.exp(-0.5 * (guide_patches - centre.unsqueeze(-1)).square().sum(2))
        modulated = (patches.view(n, p, self.in_channels, k) * adapt.unsqueeze(2)).view(n * p, -1)
        out = (
            modulated @ self.weight.t()
            if self.bias is None
            else torch.addmm(self.bias, modulated, self.weight.t())
        )
        return out.view(n, p, self.out_channels)
