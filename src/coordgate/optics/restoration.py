"""Classical restoration: Wiener deconvolution (one PSF, several PSFs, spatially blended)
and Richardson-Lucy with any blur operator.

Wiener filters assume a periodic image; the blurred image is first extended by
reflection (``padding``) to at least one PSF width beyond the frame so the periodic seam
lies outside the frame, then cropped back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from coordgate.frames import coordinate_grid
from coordgate.optics.field import PSFField
from coordgate.optics.fourier import fast_size, kernel_spectra
from coordgate.optics.interpolation import interpolation_matrix
from coordgate.optics.psf import check_psf

__all__ = [
    "WIENER_PADDINGS",
    "multi_wiener",
    "richardson_lucy",
    "richardson_lucy_iterates",
    "spatially_varying_wiener",
    "wiener_deconvolution",
]

WIENER_PADDINGS = ("zero", "reflect", "replicate", "circular")


def _check_image(y: Any, name: str, function: str) -> None:
    if not isinstance(y, torch.Tensor) or not y.is_floating_point() or y.ndim != 4:
        got = f"shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"{function} expects {name} as a float tensor (N, C, H, W), got {got}")


def _check_balance(balance: Any, count: int) -> torch.Tensor | float:
    if isinstance(balance, torch.Tensor):
        if balance.numel() not in (1, count):
            raise ValueError(
                f"balance must be a number or hold one value per PSF ({count}), "
                f"got {balance.numel()} values"
            )
        if not (torch.isfinite(balance).all() and (balance > 0).all()):
            raise ValueError("balance must be positive and finite")
        return balance.reshape(-1, 1, 1, 1)
    if not (isinstance(balance, (int, float)) and 0 < balance < float("inf")):
        raise ValueError(f"balance (noise-to-signal power ratio) must be positive, got {balance!r}")
    return float(balance)


def multi_wiener(
    y: torch.Tensor, psfs: torch.Tensor, *, balance: float | torch.Tensor, padding: str = "reflect"
) -> torch.Tensor:
    """One Wiener deconvolution per PSF: y (N, C, H, W), psfs (P, k, k) -> (N, P, C, H, W).

    ``X = conj(H) Y / (|H|^2 + balance)``; ``balance`` is a positive number or one per PSF
    (P,) (differentiable, e.g. learnable regularisers). ``psfs`` may also be a grid
    (ny, nx, k, k), taken in row-major order.
    """
    _check_image(y, "y", "multi_wiener")
    if isinstance(psfs, torch.Tensor) and psfs.ndim == 4:
        psfs = psfs.flatten(0, 1)
    check_psf(psfs, "psfs", batch_dims=1)
    if padding not in WIENER_PADDINGS:
        raise ValueError(f"padding must be one of {WIENER_PADDINGS}, got {padding!r}")
    k = psfs.shape[-1]
    h, w = y.shape[-2:]
    if k > min(h, w):
        raise ValueError(f"{k}x{k} PSFs do not fit a {h}x{w} image")
    balance = _check_balance(balance, len(psfs))
    shape = tuple(fast_size(n + 2 * (k - 1)) for n in (h, w))
    # Asymmetric pads make the extended image exactly the FFT size (no zero seam).
    pads = [p for n, size in ((w, shape[1]), (h, shape[0])) for p in (k - 1, size - n - k + 1)]
    if padding == "reflect" and max(pads) >= min(h, w):
        raise ValueError(f"reflect padding needs images larger than {max(pads)} px, got {h}x{w}")
    # FFTs need float32/64; half types are computed in float32 and cast back.
    work = y if y.dtype in (torch.float32, torch.float64) else y.float()
    if isinstance(balance, torch.Tensor):
        balance = balance.to(work)
    extended = F.pad(work, pads, mode="constant" if padding == "zero" else padding)
    spectra = kernel_spectra(psfs.to(work), shape)[None, :, None]
    filters = spectra.conj() / (spectra.abs() ** 2 + balance)
    x = torch.fft.irfft2(torch.fft.rfft2(extended)[:, None] * filters, s=shape)
    return x[..., k - 1 : k - 1 + h, k - 1 : k - 1 + w].to(y.dtype)


def wiener_deconvolution(
    y: torch.Tensor, psf: torch.Tensor, *, balance: float | torch.Tensor, padding: str = "reflect"
) -> torch.Tensor:
    """Shift-invariant Wiener deconvolution with one PSF (k, k): (N, C, H, W) -> same."""
    check_psf(psf, "psf")
    return multi_wiener(y, psf[None], balance=balance, padding=padding)[:, 0]


def spatially_varying_wiener(
    y: torch.Tensor,
    field: PSFField,
    *,
    balance: float | torch.Tensor,
    grid_size: int = 3,
    origin: float | Sequence[float] | None = None,
    full_size: float | Sequence[float] | None = None,
    padding: str = "reflect",
) -> torch.Tensor:
    """Wiener-deconvolve with each PSF of ``field.grid(grid_size)`` and blend the results
    with the same bilinear weights that interpolate the PSFs: (N, C, H, W) -> same.
    """
    _check_image(y, "y", "spatially_varying_wiener")
    if not isinstance(field, PSFField):
        raise ValueError(f"field must be a PSFField, got {type(field).__name__}")
    psfs = field.grid(grid_size)
    grid_y, grid_x = field.grid_positions(grid_size)
    restored = multi_wiener(y, psfs.to(y), balance=balance, padding=padding)
    restored = restored.unflatten(1, psfs.shape[:2])
    coords = coordinate_grid(y.shape[-2:], origin=origin, full_size=full_size, dtype=torch.float64)
    wy = interpolation_matrix(coords[0, :, 0], grid_y).to(y)
    wx = interpolation_matrix(coords[1, 0, :], grid_x).to(y)
    return torch.einsum("nyxchw,hy,wx->nchw", restored, wy, wx)


def richardson_lucy_iterates(
    y: torch.Tensor,
    operator: Any,
    *,
    x0: torch.Tensor | None = None,
    background: float = 0.0,
    eps: float = 1e-12,
) -> Iterator[torch.Tensor]:
    """The Richardson-Lucy estimates of y (N, C, H, W), one per iteration, without end:
    ``x <- x * A_T(y / (A x + b)) / A_T(1)`` (see :func:`richardson_lucy`); for choosing
    the iteration count on a validation set without recomputing earlier iterations."""
    _check_image(y, "y", "richardson_lucy")
    if not (callable(getattr(operator, "A", None)) and callable(getattr(operator, "A_T", None))):
        raise ValueError(f"operator must have A and A_T methods, got {type(operator).__name__}")
    if not (isinstance(background, (int, float)) and 0 <= background < float("inf")):
        raise ValueError(f"background must be a non-negative number, got {background!r}")
    y = y.clamp_min(0)
    if x0 is not None and (not isinstance(x0, torch.Tensor) or x0.shape != y.shape):
        got = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ValueError(f"x0 must have the shape of y {tuple(y.shape)}, got {got}")
    return _rl_steps(y, operator, (y if x0 is None else x0).clamp_min(eps), background, eps)


def _rl_steps(y, operator, x, background: float, eps: float) -> Iterator[torch.Tensor]:
    sensitivity = operator.A_T(torch.ones_like(y)).clamp_min(eps)
    while True:
        x = x * operator.A_T(y / (operator.A(x) + background).clamp_min(eps)) / sensitivity
        yield x


def richardson_lucy(
    y: torch.Tensor,
    operator: Any,
    *,
    iterations: int,
    x0: torch.Tensor | None = None,
    background: float = 0.0,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Richardson-Lucy deconvolution of y (N, C, H, W) for any operator with ``A`` / ``A_T``.

    ``x <- x * A_T(y / (A x + b)) / A_T(1)`` with a constant ``background`` b; dividing by
    ``A_T(1)`` keeps the update unbiased where light leaves the frame. Negative values of
    ``y`` (read noise) are clipped to 0. Starts from ``x0`` (default: ``y``).
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
    steps = richardson_lucy_iterates(y, operator, x0=x0, background=background, eps=eps)
    x = (y.clamp_min(0) if x0 is None else x0).clamp_min(eps)
    for _ in range(iterations):
        x = next(steps)
    return x
