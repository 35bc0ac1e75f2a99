"""Geometry of samples on the sensor: sizes, crops at an origin, flips and rotations.

A sample's ``origin`` is the (row, col) of its first pixel in the full sensor frame of
``full_size`` (H, W) pixels (see :mod:`coordgate.frames`). The eight dihedral
transforms (flips and 90-degree rotations) are indexed 0-7 by :func:`dihedral`;
:func:`dihedral_origin` says where a transformed crop sits in the transformed frame, so
an augmented sample keeps a truthful origin.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from coordgate.frames import resolve_frame

__all__ = ["as_size", "crop_at", "dihedral", "dihedral_origin", "dihedral_size"]


def as_size(size: int | Sequence[int], name: str = "size") -> tuple[int, int]:
    """``(H, W)`` from an int or a pair; ``ValueError`` unless both are positive ints."""
    pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    ok = len(pair) == 2 and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in pair
    )
    if not ok:
        raise ValueError(f"{name} must be a positive int or an (H, W) pair of them, got {size!r}")
    return int(pair[0]), int(pair[1])


def crop_at(image: torch.Tensor, origin: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """``image[..., r : r + h, c : c + w]`` for origin (r, c), size (h, w); ``ValueError``
    unless the crop fits in the image (:func:`coordgate.frames.resolve_frame`)."""
    (h, w), whole = as_size(size), tuple(image.shape[-2:])
    r, c = (int(o) for o in resolve_frame((h, w), [int(o) for o in origin], whole).origin)
    return image[..., r : r + h, c : c + w]


def dihedral(image: torch.Tensor, k: int) -> torch.Tensor:
    """Transform ``k`` (0-7) of the last two axes: ``rot90`` k % 4 times (from the row axis
    toward the column axis), then a flip of the rows when k >= 4. ``k = 0`` is the identity."""
    if not 0 <= k < 8:
        raise ValueError(f"dihedral transform index must be in 0..7, got {k}")
    out = torch.rot90(image, k % 4, dims=(-2, -1))
    return out.flip(-2) if k >= 4 else out


def dihedral_size(size: Sequence[int], k: int) -> tuple[int, int]:
    """Shape (H, W) of a ``size`` frame after transform ``k``."""
    h, w = as_size(size)
    return (w, h) if k % 2 else (h, w)


def _map_pixel(i: int, j: int, h: int, w: int, k: int) -> tuple[int, int]:
    for _ in range(k % 4):
        # torch.rot90 (k=1) puts pixel (i, j) of an (h, w) frame at (w - 1 - j, i).
        i, j, h, w = w - 1 - j, i, w, h
    return (h - 1 - i, j) if k >= 4 else (i, j)


def dihedral_origin(
    origin: Sequence[int], size: Sequence[int], full_size: Sequence[int], k: int
) -> tuple[int, int]:
    """Origin in ``dihedral(frame, k)`` of the crop ``dihedral(crop, k)``.

    The crop (``size``, at ``origin`` in a ``full_size`` frame) maps onto a crop of the
    transformed frame; its new first pixel is the transformed box's top-left corner.
    """
    (r, c), (h, w), (fh, fw) = origin, as_size(size), as_size(full_size, "full_size")
    corners = [_map_pixel(r, c, fh, fw, k), _map_pixel(r + h - 1, c + w - 1, fh, fw, k)]
    return min(p[0] for p in corners), min(p[1] for p in corners)
