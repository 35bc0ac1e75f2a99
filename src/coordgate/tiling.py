"""Overlapping windows over an image axis, and stitching a window-wise result.

Anything that works on an image too large to take at once (a network in
:func:`coordgate.inference.predict`, a blur operator in
:class:`coordgate.optics.TiledBlur`) covers it with windows of one size that overlap
their neighbours (:func:`balanced_tile` sizes them so that they share an axis evenly).
:func:`plan_windows` places them along one axis and gives each a
weight that is zero within ``half_field`` pixels of an edge it shares with a neighbour
(where the window's result lacks neighbours it would need) and rises with a raised-cosine
ramp after that; :func:`blend_windows` sums the weighted results of a function applied
to every window and divides by the summed weights. Where every window's result is exact
away from its shared edges, the stitched result is exact too.

Imports torch only, so every stage may use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["TilePlan", "balanced_tile", "blend_windows", "plan_windows"]


def balanced_tile(length: int, max_tile: int, overlap: int, multiple: int) -> int | None:
    """The tile side (at most ``max_tile``) that covers ``length`` pixels with the fewest
    tiles of equal share, so the last tile does not mostly repeat its neighbour; None when
    one window covers the axis.

    >>> balanced_tile(1024, 768, 22, 1)  # two tiles of 523 rather than 768 and 768
    523
    """
    if length <= max_tile:
        return None
    count = math.ceil((length - overlap) / (max_tile - overlap))
    share = (length - overlap) / count + overlap
    return min(max_tile, math.ceil(share / multiple) * multiple)


@dataclass(frozen=True)
class TilePlan:
    """Windows along one axis: ``starts`` of windows of ``size`` pixels and the blending
    weight (size,) of each, over an axis of ``length`` pixels."""

    length: int
    size: int
    starts: tuple[int, ...]
    weights: tuple[torch.Tensor, ...]


def _edge_weight(size: int, overlap: int, half_field: int, at_start: bool) -> torch.Tensor:
    """Weight (size,) falling to zero within ``margin`` of a window edge shared with a
    neighbour that overlaps by ``overlap`` pixels, with a raised-cosine ramp after it."""
    margin = min(half_field, overlap // 2)
    ramp = max(overlap - 2 * margin, 1)
    distance = torch.arange(size, dtype=torch.float64)
    if not at_start:
        distance = distance.flip(0)
    t = ((distance - margin + 0.5) / ramp).clamp(0, 1)
    return torch.sin(t * (math.pi / 2)) ** 2


def plan_windows(
    length: int, size: int | None, overlap: int, multiple: int, half_field: int
) -> TilePlan:
    """Windows covering an axis of ``length`` pixels (``length >= multiple``).

    ``size=None`` covers the whole axis: one window when ``length`` is a multiple of
    ``multiple``, else two windows of the largest multiple at both ends. Otherwise windows
    of ``size`` pixels step by ``size - overlap``; the last one ends at the axis end.

    >>> plan = plan_windows(100, 40, overlap=10, multiple=1, half_field=5)
    >>> plan.starts
    (0, 30, 60)
    >>> [round(float(w), 2) for w in plan.weights[1][:7]]  # zero within 5 px of its start
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 1.0]
    """
    if size is None or size >= length:
        size = length - length % multiple
        starts = [0] if size == length else [0, length - size]
    else:
        step = size - overlap
        starts = list(range(0, length - size, step)) + [length - size]
    weights = []
    for i, start in enumerate(starts):
        w = torch.ones(size, dtype=torch.float64)
        if i > 0:
            w *= _edge_weight(size, starts[i - 1] + size - start, half_field, at_start=True)
        if i < len(starts) - 1:
            w *= _edge_weight(size, start + size - starts[i + 1], half_field, at_start=False)
        weights.append(w)
    return TilePlan(length, size, tuple(starts), tuple(weights))


def blend_windows(
    x: torch.Tensor,
    rows: TilePlan,
    cols: TilePlan,
    fn: Callable[[int, int, torch.Tensor], torch.Tensor],
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """``fn(i, j, window)`` for every window of ``x`` (..., H, W), blended by the plans'
    weights: (..., H, W).

    Window (i, j) is ``x[..., rows.starts[i] : + rows.size, cols.starts[j] : + cols.size]``
    and ``fn`` returns a result of its shape. ``progress(done, total)`` is called after
    each window.

    >>> rows = plan_windows(50, 20, overlap=6, multiple=1, half_field=3)
    >>> cols = plan_windows(30, None, overlap=6, multiple=1, half_field=3)
    >>> x = torch.rand(1, 50, 30)
    >>> bool(torch.allclose(blend_windows(x, rows, cols, lambda i, j, w: 2 * w), 2 * x))
    True
    """
    like = dict(device=x.device, dtype=x.dtype)
    out = torch.zeros_like(x)
    total = torch.zeros(x.shape[-2:], **like)
    jobs = [(i, j) for i in range(len(rows.starts)) for j in range(len(cols.starts))]
    for done, (i, j) in enumerate(jobs, 1):
        r, c = rows.starts[i], cols.starts[j]
        window = (..., slice(r, r + rows.size), slice(c, c + cols.size))
        weight = torch.outer(rows.weights[i], cols.weights[j]).to(**like)
        out[window] += fn(i, j, x[window]) * weight
        total[window[1:]] += weight
        if progress is not None:
            progress(done, len(jobs))
    return out / total
