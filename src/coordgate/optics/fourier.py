"""FFT building blocks: kernel spectra and product-convolution with its adjoint.

Product-convolution ``y = sum_k h_k * (w_k . x)`` (Nagy & O'Leary) is computed with one
batched real FFT over the K weighted copies of the input, a sum in the frequency domain
and a single inverse FFT. The FFT grid is zero-padded so that no output pixel inside the
frame receives wrapped-around light: the operator is a linear (not circular) convolution
of whatever extended object the caller provides.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "fast_size",
    "kernel_spectra",
    "linear_fft_shape",
    "product_convolution",
    "product_convolution_adjoint",
]


def fast_size(n: int) -> int:
    """Smallest m >= n whose prime factors are 2, 3, 5 or 7 (fast for every FFT backend)."""
    m = max(int(n), 1)
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def linear_fft_shape(image_size: tuple[int, int], margin: int, kernel_size: int) -> tuple[int, int]:
    """FFT grid on which a convolution of the frame plus ``margin`` has no wrap-around.

    Sources span ``[-margin, n + margin)``, outputs ``[0, n)`` and kernels reach
    ``kernel_size // 2``: differences never alias when the grid is ``n + margin + k // 2``.
    """
    return tuple(fast_size(n + margin + kernel_size // 2) for n in image_size)


def kernel_spectra(kernels: torch.Tensor, fft_shape: tuple[int, int]) -> torch.Tensor:
    """Spectra of centred kernels (K, k, k) on an ``fft_shape`` grid -> (K, L1, L2 // 2 + 1)."""
    k, c = kernels.shape[-1], kernels.shape[-1] // 2
    padded = F.pad(kernels, (0, fft_shape[1] - k, 0, fft_shape[0] - k))
    return torch.fft.rfft2(padded.roll((-c, -c), dims=(-2, -1)))


def product_convolution(
    x: torch.Tensor,
    spectra: torch.Tensor,
    weights: torch.Tensor | None,
    fft_shape: tuple[int, int],
    margin: int,
) -> torch.Tensor:
    """``sum_k h_k * (w_k . x)`` cropped to the frame.

    x: (N, C, Sh, Sw) object on the frame plus ``margin``; weights: (K, Sh, Sw) or None
    (K = 1, a plain convolution); spectra: (K, L1, L2 // 2 + 1). Returns (N, C, H, W)
    with H = Sh - 2 margin.
    """
    u = x.unsqueeze(2) if weights is None else x.unsqueeze(2) * weights
    spectrum = (torch.fft.rfft2(u, s=fft_shape) * spectra).sum(2)
    y = torch.fft.irfft2(spectrum, s=fft_shape)
    h, w = x.shape[-2] - 2 * margin, x.shape[-1] - 2 * margin
    return y[..., margin : margin + h, margin : margin + w]


def product_convolution_adjoint(
    y: torch.Tensor,
    spectra: torch.Tensor,
    weights: torch.Tensor | None,
    fft_shape: tuple[int, int],
    margin: int,
) -> torch.Tensor:
    """Adjoint of :func:`product_convolution`: (N, C, H, W) -> (N, C, Sh, Sw)."""
    h, w = y.shape[-2:]
    z = F.pad(y, (margin, fft_shape[1] - margin - w, margin, fft_shape[0] - margin - h))
    spectrum = torch.fft.rfft2(z, s=fft_shape).unsqueeze(2) * spectra.conj()
    v = torch.fft.irfft2(spectrum, s=fft_shape)[..., : h + 2 * margin, : w + 2 * margin]
    return v[:, :, 0] if weights is None else (v * weights).sum(2)
