"""Point spread functions: a diffraction PSF from an aberrated pupil, and a Gaussian PSF.

A PSF here is a non-negative ``(k, k)`` tensor with ``k`` odd, its centre pixel at
``(k // 2, k // 2)``, normalised to unit sum. Pixel units are detector pixels.

The diffraction PSF is ``|F{P(f) exp(2 pi i W(f))}|^2`` for a circular pupil ``P`` and a
wavefront error ``W`` (in waves) written in Noll-normalised Zernike polynomials, so each
coefficient is that aberration's RMS wavefront error in waves. ``pupil_scale`` is the
incoherent cut-off frequency as a fraction of the detector's Nyquist frequency: at 1 the
in-focus PSF is exactly Nyquist-sampled (Airy first zero at 2.44 px), smaller values
give a wider diffraction-limited PSF. Values above 1 would alias and are refused.
The PSF is sampled at pixel centres (no integration over the pixel area).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

__all__ = [
    "ABERRATIONS",
    "check_psf",
    "diffraction_psf",
    "diffraction_psfs",
    "gaussian_psf",
    "gaussian_psfs",
    "psf_width",
    "pupil_grid",
    "zernike",
]

#: Named aberrations and their Zernike indices (n, m); m < 0 is the sine (rotated) term.
ABERRATIONS: dict[str, tuple[int, int]] = {
    "defocus": (2, 0),
    "astigmatism_cos": (2, 2),
    "astigmatism_sin": (2, -2),
    "coma_cos": (3, 1),
    "coma_sin": (3, -1),
    "spherical": (4, 0),
}

# Pupil radius in FFT samples below which the phase of strong defocus is poorly resolved.
_MIN_PUPIL_SAMPLES = 24
# Field points per batched pupil FFT, to bound memory when sampling many PSFs.
_PUPIL_BATCH = 64


def check_psf(psf: torch.Tensor, name: str = "psf", batch_dims: int = 0) -> None:
    """Raise ``ValueError`` unless ``psf`` is a valid PSF stack of shape (*batch, k, k).

    Valid: a floating tensor with ``batch_dims`` leading axes, square odd ``k``, finite,
    non-negative, every PSF with a positive sum.
    """
    expected = f"({'*batch, ' * bool(batch_dims)}k, k) with k odd"
    if not isinstance(psf, torch.Tensor):
        raise ValueError(f"{name} must be a tensor of shape {expected}, got {type(psf).__name__}")
    if psf.ndim != batch_dims + 2:
        raise ValueError(
            f"{name} must be a {batch_dims + 2}-D tensor of shape {expected}, "
            f"got shape {tuple(psf.shape)}"
        )
    k = psf.shape[-1]
    if psf.shape[-2] != k or k % 2 == 0:
        raise ValueError(
            f"{name} must be square with an odd size {expected}, got {tuple(psf.shape)}"
        )
    if not psf.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {psf.dtype}")
    if not torch.isfinite(psf).all():
        raise ValueError(f"{name} must be finite, got NaN or infinite values")
    if (psf < 0).any():
        raise ValueError(f"{name} must be non-negative, got a minimum of {psf.min().item():.3g}")
    if psf.numel() and not (psf.sum(dim=(-2, -1)) > 0).all():
        raise ValueError(f"every PSF in {name} must have a positive sum, got an all-zero PSF")


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise ValueError(f"PSF size must be a positive odd integer, got {size!r}")
    return size


def _radial(n: int, m: int, rho: torch.Tensor) -> torch.Tensor:
    m = abs(m)
    out = torch.zeros_like(rho)
    for s in range((n - m) // 2 + 1):
        c = (-1) ** s * math.factorial(n - s)
        c /= math.factorial(s) * math.factorial((n + m) // 2 - s) * math.factorial((n - m) // 2 - s)
        out = out + c * rho ** (n - 2 * s)
    return out


def zernike(n: int, m: int, rho: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Noll-normalised Zernike polynomial Z_n^m(rho, theta) (unit RMS over the unit disc).

    ``m >= 0`` gives the cosine term, ``m < 0`` the sine term; zero outside ``rho <= 1``.
    Shapes of ``rho`` and ``theta`` broadcast.
    """
    if n < 0 or abs(m) > n or (n - abs(m)) % 2:
        raise ValueError(f"Zernike indices need n >= 0, |m| <= n, n - |m| even; got ({n}, {m})")
    norm = math.sqrt(n + 1) if m == 0 else math.sqrt(2 * (n + 1))
    angular = torch.cos(m * theta) if m >= 0 else torch.sin(-m * theta)
    return torch.where(rho <= 1, norm * _radial(n, m, rho) * angular, torch.zeros_like(rho))


def pupil_grid(size: int, pupil_scale: float) -> int:
    """FFT size: twice the PSF (little wrap-around of the tails) and a well-sampled pupil."""
    needed = max(2 * size, math.ceil(4 * _MIN_PUPIL_SAMPLES / pupil_scale))
    return 1 << (needed - 1).bit_length()


def diffraction_psfs(
    size: int, coefficients: torch.Tensor, *, pupil_scale: float = 1.0
) -> torch.Tensor:
    """Diffraction PSFs for a batch of wavefronts.

    coefficients: (M, len(ABERRATIONS)) RMS waves, columns in ``ABERRATIONS`` order.
    Returns (M, size, size) float64 PSFs with unit sum.
    """
    _check_size(size)
    if not 0 < pupil_scale <= 1:
        raise ValueError(f"pupil_scale must be in (0, 1] (1 = Nyquist-sampled), got {pupil_scale}")
    coefficients = torch.as_tensor(coefficients, dtype=torch.float64)
    if coefficients.ndim != 2 or coefficients.shape[1] != len(ABERRATIONS):
        raise ValueError(
            f"coefficients must have shape (M, {len(ABERRATIONS)}) for {list(ABERRATIONS)}, "
            f"got {tuple(coefficients.shape)}"
        )
    if not torch.isfinite(coefficients).all():
        raise ValueError("aberration coefficients must be finite")
    grid = pupil_grid(size, pupil_scale)
    freq = torch.fft.fftfreq(grid, dtype=torch.float64) / (pupil_scale / 4)
    fy, fx = torch.meshgrid(freq, freq, indexing="ij")
    rho, theta = torch.hypot(fy, fx), torch.atan2(fy, fx)
    # The wavefront only matters inside the pupil: evaluate it there and scatter.
    inside = (rho <= 1).reshape(-1)
    basis = torch.stack(
        [zernike(n, m, rho, theta).reshape(-1)[inside] for n, m in ABERRATIONS.values()]
    )
    # Unshifted FFT indices of the centred k x k window (the PSF centre is index 0).
    window = torch.arange(-(size // 2), size // 2 + 1).remainder(grid)
    psfs = []
    for chunk in coefficients.split(_PUPIL_BATCH):
        pupil = torch.zeros(len(chunk), grid * grid, dtype=torch.complex128)
        pupil[:, inside] = torch.exp(2j * math.pi * (chunk @ basis))
        field = torch.fft.ifft2(pupil.reshape(-1, grid, grid))
        psfs.append(field[:, window][:, :, window].abs() ** 2)
    out = torch.cat(psfs) if psfs else torch.zeros(0, size, size, dtype=torch.float64)
    return out / out.sum(dim=(-2, -1), keepdim=True)


def diffraction_psf(
    size: int, *, pupil_scale: float = 1.0, aberrations: Mapping[str, float] | None = None
) -> torch.Tensor:
    """One diffraction PSF (size, size), e.g. ``aberrations={"defocus": 0.2}`` (RMS waves)."""
    aberrations = dict(aberrations or {})
    unknown = sorted(set(aberrations) - set(ABERRATIONS))
    if unknown:
        raise ValueError(f"unknown aberrations {unknown}; expected names from {list(ABERRATIONS)}")
    row = torch.tensor([[float(aberrations.get(name, 0.0)) for name in ABERRATIONS]])
    return diffraction_psfs(size, row, pupil_scale=pupil_scale)[0]


def gaussian_psfs(size: int, sigma: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Isotropic Gaussian PSFs sampled at pixel centres: sigma (M,) px -> (M, size, size)."""
    _check_size(size)
    sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
    if not (torch.isfinite(sigma).all() and (sigma > 0).all()):
        raise ValueError(f"Gaussian sigma must be positive and finite, got {sigma.tolist()}")
    r = torch.arange(size, dtype=torch.float64) - size // 2
    r2 = r[:, None] ** 2 + r[None, :] ** 2
    psfs = torch.exp(-r2 / (2 * sigma[:, None, None] ** 2))
    return psfs / psfs.sum(dim=(-2, -1), keepdim=True)


def gaussian_psf(size: int, sigma: float) -> torch.Tensor:
    """One isotropic Gaussian PSF (size, size) of standard deviation ``sigma`` px."""
    return gaussian_psfs(size, [sigma])[0]


def psf_width(psf: torch.Tensor) -> torch.Tensor:
    """RMS radius about the centroid (square root of the second moment), px: (*, k, k) -> (*)."""
    check_psf(psf, batch_dims=max(psf.ndim - 2, 0) if isinstance(psf, torch.Tensor) else 0)
    k = psf.shape[-1]
    r = torch.arange(k, dtype=psf.dtype, device=psf.device)
    p = psf / psf.sum(dim=(-2, -1), keepdim=True)
    my = (p.sum(-1) * r).sum(-1)
    mx = (p.sum(-2) * r).sum(-1)
    vy = (p.sum(-1) * r**2).sum(-1) - my**2
    vx = (p.sum(-2) * r**2).sum(-1) - mx**2
    return torch.sqrt(vy + vx)
