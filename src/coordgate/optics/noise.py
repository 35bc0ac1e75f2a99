"""Detector noise: Poisson shot noise plus Gaussian read noise, seeded."""

from __future__ import annotations

import math

import torch

__all__ = ["poisson_gaussian"]


def _check_positive(value: float, name: str, allow_zero: bool) -> float:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {bound} finite number, got {value!r}")
    return float(value)


def poisson_gaussian(
    x: torch.Tensor,
    *,
    photons: float,
    read_noise: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Noisy image in the units of ``x``: (Poisson(photons * x) + N(0, read_noise**2)) / photons.

    x: any shape, intensities in [0, 1] (values above 1 are brighter than the photon peak);
    photons: expected photo-electrons at x = 1 (the photon peak); read_noise: Gaussian
    read noise, electrons RMS. Not clipped, so the noise stays unbiased.
    ``generator`` (on x's device) makes it reproducible.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {type(x).__name__}")
    if not torch.isfinite(x).all() or (x < 0).any():
        raise ValueError("x must be finite and non-negative (intensities, 1 = photon peak)")
    photons = _check_positive(photons, "photons", allow_zero=False)
    read_noise = _check_positive(read_noise, "read_noise", allow_zero=True)
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(
            f"generator is on {generator.device}, x on {x.device}: they must share a device"
        )
    # torch.poisson needs float32/64; half types are drawn in float32.
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    counts = torch.poisson(work * photons, generator=generator)
    read = torch.randn(work.shape, generator=generator, dtype=work.dtype, device=work.device)
    return ((counts + read_noise * read) / photons).to(x.dtype)
