"""CoordConv (Liu et al. 2018): concatenate coordinate channels before a convolution.

The paper's baseline: the coordinates enter a weighted sum with the data, so they cannot
act the same way on every sample (paper §II). Coordinates are the project's sensor
coordinates (:meth:`coordgate.frames.Frame.grid`), built on the input's device, one channel
per axis in axis order (for 2D: rows then columns), correct for non-square inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from coordgate.frames import Frame, FrameLike, Where, batch_frames
from coordgate.layers.shapes import check_dim, check_features, conv_nd

__all__ = ["AddCoords", "CoordConv"]


class AddCoords(nn.Module):
    """Append coordinate channels (and optionally the radius) to the features.

    x: (N, C, *spatial) -> (N, C + dim (+1 if with_r), *spatial)

    The radius is the Euclidean distance from the frame centre in normalised coordinates.
    """

    def __init__(self, dim: int = 2, with_r: bool = False) -> None:
        super().__init__()
        self.dim, self.with_r = check_dim(dim), with_r

    @property
    def extra_channels(self) -> int:
        return self.dim + int(self.with_r)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, with_r={self.with_r}"

    def forward(
        self, x: torch.Tensor, origin: Where = None, full_size: FrameLike = None
    ) -> torch.Tensor:
        """x: (N, C, *spatial) -> (N, C + extra_channels, *spatial), each sample's
        coordinates in its own frame (see :func:`~coordgate.frames.batch_frames`)."""
        check_features(x, None, self.dim, "AddCoords")
        frames = batch_frames(x, origin, full_size)
        coords = frames.per_sample(lambda order: torch.stack([self._coords(x, f) for f in order]))
        return torch.cat([x, coords.expand(x.shape[0], *coords.shape[1:])], dim=1)

    def _coords(self, x: torch.Tensor, frame: Frame) -> torch.Tensor:
        coords = frame.grid(x.shape[2:], device=x.device, dtype=x.dtype)
        if self.with_r:
            coords = torch.cat([coords, coords.square().sum(0, keepdim=True).sqrt()])
        return coords


class CoordConv(nn.Module):
    """A convolution over the features with coordinate channels appended.

    x: (N, in_channels, *spatial) -> (N, out_channels, *spatial') where spatial' depends
    on ``padding`` as for ``nn.ConvNd`` (default ``"same"``).

    >>> import torch
    >>> layer = CoordConv(3, 8, 3)  # sees 3 + 2 channels: the features and (y, x)
    >>> layer.conv.in_channels
    5
    >>> layer(torch.rand(1, 3, 20, 30), origin=(0, 10), full_size=(20, 60)).shape
    torch.Size([1, 8, 20, 30])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        *,
        dim: int = 2,
        with_r: bool = False,
        padding: str | int = "same",
        **conv_options,
    ) -> None:
        super().__init__()
        self.in_channels, self.dim = in_channels, check_dim(dim)
        self.add_coords = AddCoords(dim, with_r)
        self.conv = conv_nd(dim)(
            in_channels + self.add_coords.extra_channels,
            out_channels,
            kernel_size,
            padding=padding,
            **conv_options,
        )

    def forward(
        self,
        x: torch.Tensor,
        origin: Where = None,
        full_size: FrameLike = None,
    ) -> torch.Tensor:
        check_features(x, self.in_channels, self.dim, "CoordConv")
        return self.conv(self.add_coords(x, origin, full_size))
