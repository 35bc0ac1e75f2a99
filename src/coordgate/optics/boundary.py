"""What the object looks like outside the frame, and the adjoint of that assumption.

A blur reaches ``k // 2`` pixels beyond the frame; every operator states what it
assumes there through ``padding``:

- ``"zero"``: the object is zero outside the frame (light from outside is absent, light
  blurred out of the frame is lost). The default, and the only one that needs no margin.
- ``"reflect"``: the object continues as its mirror image (edge pixel not repeated).
- ``"replicate"``: the object continues with its edge values.
- ``"circular"``: the object is periodic (wrap-around, only when asked for), and so is
  the blur: a margin pixel takes the PSF of the frame pixel it copies, which lets the
  FFT-based operators work on a grid of the frame's own size with no margin.

``extend`` builds the object on the frame plus a margin; ``extend_adjoint`` is its exact
transpose (margin values are added back onto the pixels they were copied from).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

__all__ = ["PADDINGS", "Padding", "check_padding", "extend", "extend_adjoint"]

#: What the object is outside the frame (see the module docstring).
Padding = Literal["zero", "reflect", "replicate", "circular"]
PADDINGS: tuple[Padding, ...] = get_args(Padding)


def check_padding(padding: str) -> Padding:
    """Return ``padding`` if it is one of ``PADDINGS``, else raise ``ValueError``."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    return padding


def _source_index(n: int, margin: int, padding: Padding, device: torch.device) -> torch.Tensor:
    """For each of the n + 2 * margin extended positions, the frame pixel it copies."""
    i = torch.arange(-margin, n + margin, device=device)
    if padding == "replicate":
        return i.clamp(0, n - 1)
    if padding == "circular":
        return i.remainder(n)
    if margin > n - 1:
        raise ValueError(f"reflect padding by {margin} px needs at least {margin + 1} px, got {n}")
    return torch.where(i < 0, -i, torch.where(i >= n, 2 * (n - 1) - i, i))


def extend(x: torch.Tensor, margin: int, padding: Padding) -> torch.Tensor:
    """(..., H, W) -> (..., H + 2 margin, W + 2 margin) under the ``padding`` assumption."""
    if margin == 0:
        return x
    if padding == "zero":
        return F.pad(x, (margin,) * 4)
    rows = _source_index(x.shape[-2], margin, padding, x.device)
    cols = _source_index(x.shape[-1], margin, padding, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def extend_adjoint(z: torch.Tensor, margin: int, padding: Padding) -> torch.Tensor:
    """Transpose of :func:`extend`: (..., H + 2 margin, W + 2 margin) -> (..., H, W)."""
    if margin == 0:
        return z
    h, w = z.shape[-2] - 2 * margin, z.shape[-1] - 2 * margin
    if padding == "zero":
        return z[..., margin : margin + h, margin : margin + w]
    rows = _source_index(h, margin, padding, z.device)
    cols = _source_index(w, margin, padding, z.device)
    folded = z.new_zeros(*z.shape[:-2], h, z.shape[-1]).index_add(-2, rows, z)
    return folded.new_zeros(*z.shape[:-2], h, w).index_add(-1, cols, folded)
