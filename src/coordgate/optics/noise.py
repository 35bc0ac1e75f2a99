"""Detector noise: Poisson shot noise plus Gaussian read noise, seeded, and its level
estimated from one image.

:func:`estimate_noise` fits the variance of Poisson-Gaussian noise, ``gain * I + floor``,
to the image's finest detail: in each 2x2 block, the diagonal Haar coefficient
``(a - b - c + d) / 2`` has the noise variance of one pixel and almost none of a blurred
image's signal. The blocks are sorted by their mean into ``NOISE_BINS`` groups of equal
count; each group's variance is taken robustly (1.4826 x the median absolute deviation,
so edges and stars do not count) and a line through them gives gain and floor, both
kept non-negative.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = ["NOISE_BINS", "NoiseLevel", "estimate_noise", "poisson_gaussian"]

#: Intensity groups :func:`estimate_noise` measures the variance in.
NOISE_BINS = 16


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


class NoiseLevel(NamedTuple):
    """Poisson-Gaussian noise as a variance growing with the intensity,
    ``gain * I + floor`` (image units). :func:`poisson_gaussian` noise of ``photons`` and
    ``read_noise`` has gain ``1 / photons`` and floor ``(read_noise / photons) ** 2``."""

    gain: float
    floor: float

    def variance(self, intensity: torch.Tensor) -> torch.Tensor:
        """The noise variance at each intensity (any shape), never below the floor."""
        return self.gain * intensity.clamp_min(0) + self.floor

    def discrepancy(self, predicted: torch.Tensor, observed: torch.Tensor) -> float:
        """The mean squared residual of ``observed`` against ``predicted`` (same shape) in
        units of the noise variance at ``predicted``: about 1 where the prediction explains
        the data down to the noise, more where it does not."""
        variance = self.variance(predicted).clamp_min(torch.finfo(predicted.dtype).tiny)
        return float(((observed - predicted) ** 2 / variance).mean())


def _robust_variance(values: torch.Tensor) -> torch.Tensor:
    deviation = (values - values.median()).abs().median()
    return (1.4826 * deviation) ** 2


def estimate_noise(y: torch.Tensor) -> NoiseLevel:
    """The :class:`NoiseLevel` of the image(s) y (..., H, W), H and W >= 4, pooled over
    the leading axes (see the module docstring).

    >>> clean = torch.linspace(0, 1, 256).repeat(256, 1)
    >>> noisy = poisson_gaussian(clean, photons=500, read_noise=0,
    ...                          generator=torch.Generator().manual_seed(0))
    >>> round(1 / estimate_noise(noisy).gain, -2)  # photons at intensity 1
    500.0
    """
    if not isinstance(y, torch.Tensor) or y.ndim < 2 or min(y.shape[-2:]) < 4:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"estimate_noise needs an image (..., H, W) of at least 4x4, got {got}")
    h, w = (n // 2 * 2 for n in y.shape[-2:])
    blocks = y[..., :h, :w].double()
    a, b = blocks[..., 0::2, 0::2], blocks[..., 0::2, 1::2]
    c, d = blocks[..., 1::2, 0::2], blocks[..., 1::2, 1::2]
    means = ((a + b + c + d) / 4).flatten()
    details = ((a - b - c + d) / 2).flatten()
    order = means.argsort()
    groups = zip(means[order].chunk(NOISE_BINS), details[order].chunk(NOISE_BINS))
    stats = [[float(m.mean()), float(_robust_variance(v))] for m, v in groups]
    level, variance = torch.tensor(stats, dtype=torch.float64).T
    gain, floor = (
        torch.linalg.lstsq(torch.stack([level, torch.ones_like(level)], 1), variance[:, None])
        .solution[:, 0]
        .tolist()
    )
    if gain < 0:  # no growth with the intensity: Gaussian noise
        gain, floor = 0.0, float(variance.mean())
    elif floor < 0:  # no floor: the line through the origin
        gain, floor = float((level * variance).sum() / (level * level).sum().clamp_min(1e-300)), 0.0
    return NoiseLevel(gain, floor)
