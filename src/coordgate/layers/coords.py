"""Normalised sensor coordinates.

A pixel's coordinate is the position of its centre in the full sensor frame, mapped so
that the frame's outer edges sit at -1 and +1 (torch's ``align_corners=False``
convention). Pixel ``i`` of an input whose first pixel sits at ``origin`` in a frame of
``full_size`` pixels therefore has the coordinate ``(2 * (origin + i) + 1) / full_size - 1``.

This convention makes coordinates independent of resolution: a 2x-downsampled pixel
covers two full-resolution pixels, and its coordinate is exactly the mean of theirs
when ``origin`` and ``full_size`` are given in the downsampled level's own pixel units
(which may be fractional, e.g. ``origin / 2**level``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["axis_coordinates", "coordinate_grid", "per_sample_origins", "resolve_frame"]

Frame = tuple[tuple[float, ...], tuple[float, ...]]


def _as_tuple(value: float | Sequence[float], n: int, name: str) -> tuple[float, ...]:
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (int, float)):
        return (float(value),) * n
    values = tuple(float(v) for v in value)
    if len(values) != n:
        raise ValueError(
            f"{name} must give one value per spatial axis ({n}), got {len(values)}: {values}"
        )
    return values


def resolve_frame(
    size: Sequence[int],
    origin: float | Sequence[float] | None = None,
    full_size: float | Sequence[float] | None = None,
) -> Frame:
    """Validate and complete ``origin`` / ``full_size`` for an input of spatial ``size``.

    Defaults: ``origin`` = 0 on every axis, ``full_size`` = ``size`` (the input is the
    whole frame). Raises ``ValueError`` when the input does not fit inside the frame.
    """
    n = len(size)
    origin_t = (0.0,) * n if origin is None else _as_tuple(origin, n, "origin")
    full_t = (
        tuple(float(s) for s in size) if full_size is None else _as_tuple(full_size, n, "full_size")
    )
    for axis, (o, s, f) in enumerate(zip(origin_t, size, full_t)):
        if f <= 0:
            raise ValueError(f"full_size must be positive on every axis, got {full_t}")
        if o < 0 or o + s > f + 1e-6:
            raise ValueError(
                f"input of size {tuple(size)} at origin {origin_t} does not fit in a frame "
                f"of full_size {full_t} (axis {axis}: need 0 <= origin and "
                f"origin + size <= full_size, got {o} + {s} > {f})"
            )
    return origin_t, full_t


def axis_coordinates(
    size: Sequence[int],
    *,
    origin: float | Sequence[float] | None = None,
    full_size: float | Sequence[float] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> list[torch.Tensor]:
    """The normalised coordinates along each axis: a list of ``len(size)`` 1-D tensors."""
    size = tuple(int(s) for s in size)
    if not 1 <= len(size) <= 3 or any(s < 1 for s in size):
        raise ValueError(f"size must have 1 to 3 positive entries, got {size}")
    origin_t, full_t = resolve_frame(size, origin, full_size)
    dtype = dtype or torch.get_default_dtype()
    return [
        (2 * (o + torch.arange(s, device=device, dtype=dtype)) + 1) / f - 1
        for s, o, f in zip(size, origin_t, full_t)
    ]


def coordinate_grid(
    size: Sequence[int],
    *,
    origin: float | Sequence[float] | None = None,
    full_size: float | Sequence[float] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Normalised sensor coordinates of every pixel of an input of spatial ``size``.

    Returns a tensor of shape ``(len(size), *size)``; channel ``a`` holds the coordinate
    along spatial axis ``a`` (for 2D: channel 0 varies along H, channel 1 along W).
    """
    axes = axis_coordinates(size, origin=origin, full_size=full_size, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def per_sample_origins(origin, batch: int, dim: int) -> list[tuple[float, ...]] | None:
    """Split a batch of origins into one tuple per sample.

    ``origin`` may be None or one origin for the whole batch (returns None: one frame
    serves every sample), or an (N, dim) tensor / nested sequence with one row per sample.
    """
    if origin is None:
        return None
    rows = origin.tolist() if isinstance(origin, torch.Tensor) else origin
    if isinstance(rows, (int, float)) or not isinstance(rows[0], (list, tuple)):
        return None
    if len(rows) != batch or any(len(r) != dim for r in rows):
        raise ValueError(
            f"per-sample origins must have shape (N={batch}, {dim}), "
            f"got {len(rows)} rows of lengths {sorted({len(r) for r in rows})}"
        )
    return [tuple(float(v) for v in r) for r in rows]
