"""Shape checks and dimension dispatch shared by the layers.

Every layer validates its input at the door so that a wrong shape ends with a
``ValueError`` naming what was expected, never with an error from deep inside torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["check_dim", "check_features", "conv_nd", "same_padding", "spatial_axes_name"]

_AXES = {1: "L", 2: "H, W", 3: "D, H, W"}
_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def check_dim(dim: int) -> int:
    """Return ``dim`` if it is 1, 2 or 3, else raise ``ValueError``."""
    if dim not in _CONVS:
        raise ValueError(f"dim must be 1, 2 or 3 (spatial dimensions), got {dim!r}")
    return dim


def spatial_axes_name(dim: int) -> str:
    """Human-readable names of the spatial axes, e.g. ``"H, W"`` for ``dim=2``."""
    return _AXES[check_dim(dim)]


def check_features(x: torch.Tensor, channels: int | None, dim: int, layer: str) -> None:
    """Raise ``ValueError`` unless ``x`` has shape (N, channels, *spatial) with ``dim`` axes."""
    expected = f"(N, {'C' if channels is None else f'C={channels}'}, {spatial_axes_name(dim)})"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{layer} expects a tensor of shape {expected}, got {type(x).__name__}")
    if x.ndim != dim + 2:
        raise ValueError(
            f"{layer} expects a {dim + 2}-D input of shape {expected}, "
            f"got a {x.ndim}-D tensor of shape {tuple(x.shape)}"
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{layer} expects {channels} input channels, shape {expected}, "
            f"got {x.shape[1]} channels in shape {tuple(x.shape)}"
        )


def conv_nd(dim: int) -> type[nn.Module]:
    """``nn.Conv1d``, ``nn.Conv2d`` or ``nn.Conv3d`` for ``dim`` spatial axes."""
    return _CONVS[check_dim(dim)]


def same_padding(kernel_size: Sequence[int]) -> list[int]:
    """``F.pad`` amounts for 'same' zero padding, in torch's order (last axis first).

    Matches ``nn.Conv*d(padding="same")``: for an even kernel the extra zero goes
    at the end of the axis.
    """
    pads: list[int] = []
    for k in reversed(kernel_size):
        pads += [(k - 1) // 2, k - 1 - (k - 1) // 2]
    return pads
