"""The 1D spatially-varying convolution of paper §IV.A, Eq. (5), and its data set.

Interpretation (see DESIGN.md): Eq. (5) as printed makes sigma cross zero at x = 18, so we
read it as follows, for a frame of ``size`` samples (the paper's size is 30, half = 15):

- row x of H (the output sample) is a Gaussian of peak 1 centred at x' = x + delta(x);
- delta(x) falls linearly from 1 at x = 0 to 0 at x = half and is 0 beyond;
- sigma(x) is 0.5 for x < half and rises linearly from 0.5 at x = half to 2 at x = size.

H thus blends the three basis kernels the paper names: (delta=1, sigma=0.5),
(delta=0, sigma=0.5) and (delta=0, sigma=2). A sigma=2 Gaussian needs >= 13 taps, so a
kernel of 7 truncates it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "Conv1dData",
    "effective_matrix",
    "make_dataset",
    "offset_and_width",
    "spatially_varying_matrix",
]


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ValueError(f"size must be an integer >= 2, got {size!r}")


def offset_and_width(size: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """delta(x) and sigma(x) for x = 0 .. size-1, two float64 tensors of shape (size,)."""
    _check_size(size)
    x = torch.arange(size, dtype=torch.float64)
    half = size / 2
    delta = (1 - x / half).clamp(min=0)
    sigma = torch.where(x < half, torch.full_like(x, 0.5), 0.5 + 1.5 * (x - half) / half)
    return delta, sigma


def spatially_varying_matrix(size: int = 30, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The convolution matrix H of Eq. (5): (size, size), n = H m, row = output sample."""
    delta, sigma = offset_and_width(size)
    x = torch.arange(size, dtype=torch.float64)
    centre = x + delta
    h = torch.exp(-((x[None, :] - centre[:, None]) ** 2) / (2 * sigma[:, None] ** 2))
    return h.to(dtype)


@dataclass(frozen=True)
class Conv1dData:
    """Inputs m and targets n = H m, each (N, 1, size), split into train/val/test."""

    matrix: torch.Tensor
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]


def make_dataset(
    samples: int = 10_000,
    size: int = 30,
    *,
    seed: int = 0,
    fractions: tuple[float, float] = (0.8, 0.1),
) -> Conv1dData:
    """``samples`` inputs m ~ U(0, 1)^size (seeded), n = H m, split by ``fractions``
    (train, val; the rest is test) in a fixed order."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 3:
        raise ValueError(f"samples must be an integer >= 3, got {samples!r}")
    train_f, val_f = fractions
    if not (0 < train_f and 0 < val_f and train_f + val_f < 1):
        raise ValueError(f"fractions (train, val) must be positive with sum < 1, got {fractions}")
    h = spatially_varying_matrix(size)
    generator = torch.Generator().manual_seed(seed)
    m = torch.rand(samples, 1, size, generator=generator)
    n = m @ h.T
    n_train, n_val = round(samples * train_f), round(samples * val_f)
    if min(n_train, n_val, samples - n_train - n_val) < 1:
        raise ValueError(f"{samples} samples leave an empty split with fractions {fractions}")
    bounds = (0, n_train, n_train + n_val, samples)
    train, val, test = ((m[a:b], n[a:b]) for a, b in zip(bounds, bounds[1:]))
    return Conv1dData(h, train, val, test)


def effective_matrix(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The model's Jacobian dn/dm averaged over ``inputs`` (N, 1, L): (L, L), row = output.

    Exact for models linear in m (a single convolution, CoordGate with one layer); for
    ReLU networks it is the mean local linearisation.
    """
    if inputs.ndim != 3 or inputs.shape[1] != 1:
        raise ValueError(f"inputs must have shape (N, 1, L), got {tuple(inputs.shape)}")
    model.eval()
    m = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        n = model(m)
        rows = [
            torch.autograd.grad(n[:, 0, i].sum(), m, retain_graph=True)[0][:, 0].mean(0)
            for i in range(n.shape[-1])
        ]
    return torch.stack(rows).detach()
