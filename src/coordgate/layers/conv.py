"""CoordGateConv: the paper's module as a drop-in for ``nn.Conv1d/2d/3d``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from coordgate.frames import FrameLike, Where
from coordgate.layers.fused import gated_conv
from coordgate.layers.gate import CoordGate
from coordgate.layers.shapes import check_dim, check_features, conv_nd

__all__ = ["CoordGateConv"]


class CoordGateConv(nn.Module):
    """Convolution h (in -> basis channels, 'same' padding), CoordGate, then a 1x1
    projection to ``out_channels`` when ``basis_channels`` differs from it (paper Fig. 2).

    x: (N, in_channels, *spatial) -> (N, out_channels, *spatial)

    The basis channels hold globally applied kernels; the gate weighs them per pixel, so
    the module realises a spatially-varying convolution (with a complete basis, exactly a
    locally-connected layer with a shared bias; paper appendix).

    >>> import torch
    >>> layer = CoordGateConv(1, 16, 5, basis_channels=8)
    >>> layer(torch.rand(2, 1, 40, 40)).shape
    torch.Size([2, 16, 40, 40])
    >>> layer.gate.extra_repr()  # 8 basis kernels weighed per pixel, then a 1x1 to 16
    "8, dim=2, mode='mlp', hidden=32, layers=2"
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        *,
        dim: int = 2,
        basis_channels: int | None = None,
        bias: bool = True,
        **gate_options,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.dim = in_channels, out_channels, check_dim(dim)
        basis = out_channels if basis_channels is None else basis_channels
        conv = conv_nd(dim)
        self.conv = conv(in_channels, basis, kernel_size, padding="same", bias=bias)
        self.gate = CoordGate(basis, dim=dim, **gate_options)
        self.project = conv(basis, out_channels, 1) if basis != out_channels else None

    def forward(
        self,
        x: torch.Tensor,
        origin: Where = None,
        full_size: FrameLike = None,
    ) -> torch.Tensor:
        """x: (N, in_channels, *spatial) -> (N, out_channels, *spatial); ``origin`` /
        ``full_size`` (or a frame) place x on the sensor as for :class:`CoordGate`."""
        check_features(x, self.in_channels, self.dim, "CoordGateConv")
        # The gate is needed before the convolution: ask for it with a stand-in of the
        # convolution's output shape (no memory).
        output = x.new_empty(1).expand(x.shape[0], self.gate.channels, *x.shape[2:])
        gate = self.gate.weights_for(output, origin, full_size)
        # Without autograd the gate multiplies the convolution's output in place.
        y = gated_conv(self.conv, x, gate)
        return y if self.project is None else self.project(y)
