"""FFT building blocks: kernel spectra and product-convolution with its adjoint.

Product-convolution ``y = sum_k h_k * (w_k . x)`` (Nagy & O'Leary) is computed with one
batched real FFT over the K weighted copies of the input, a sum in the frequency domain
and a single inverse FFT. On a grid from :func:`linear_fft_shape` no output pixel inside
the frame receives wrapped-around light: the operator is a linear convolution of whatever
extended object the caller provides. On a grid of the frame's own size (no margin) it is
the circular one.

The adjoint needs K inverse transforms, which cost about twice a forward real transform
here. It pairs them instead: both correlations of a pair of kernels are real, so one
complex inverse FFT of ``Y (conj(H_2j) + i conj(H_2j+1))`` returns the first as its real
and the second as its imaginary part, and K/2 complex transforms replace K real ones.
The spectrum ``Y`` of the real image is its real FFT completed by Hermitian symmetry,
half the cost of a complex FFT. The weights of a pair are stored interleaved like the
complex result (:func:`adjoint_weights`), so each pair is weighted and summed in one
contiguous pass over it instead of two strided ones over its real and imaginary parts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "adjoint_spectra",
    "adjoint_weights",
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


def _centred(kernels: torch.Tensor, fft_shape: tuple[int, int]) -> torch.Tensor:
    """Kernels (K, k, k) on an ``fft_shape`` grid with their centre at the origin."""
    k, c = kernels.shape[-1], kernels.shape[-1] // 2
    padded = F.pad(kernels, (0, fft_shape[1] - k, 0, fft_shape[0] - k))
    return padded.roll((-c, -c), dims=(-2, -1))


def kernel_spectra(kernels: torch.Tensor, fft_shape: tuple[int, int]) -> torch.Tensor:
    """Spectra of centred kernels (K, k, k) on an ``fft_shape`` grid -> (K, L1, L2 // 2 + 1)."""
    return torch.fft.rfft2(_centred(kernels, fft_shape))


def adjoint_spectra(kernels: torch.Tensor, fft_shape: tuple[int, int]) -> torch.Tensor:
    """Correlation spectra of centred kernels (K, k, k), two per complex plane:
    ``conj(H_2j) + i conj(H_2j+1)`` on the full ``fft_shape`` grid -> (ceil(K / 2), L1, L2)
    (an odd K leaves the last plane's imaginary partner zero)."""
    spectra = torch.fft.fft2(_centred(kernels, fft_shape)).conj()
    if spectra.shape[0] % 2:
        spectra = torch.cat([spectra, torch.zeros_like(spectra[:1])])
    return spectra[0::2] + 1j * spectra[1::2]


def adjoint_weights(weights: torch.Tensor) -> torch.Tensor:
    """Weights (K, Sh, Sw) of :func:`product_convolution` paired like
    :func:`adjoint_spectra`: ``[..., 0]`` is weight 2j and ``[..., 1]`` weight 2j + 1
    -> (ceil(K / 2), Sh, Sw, 2) (an odd K leaves the last partner zero)."""
    if weights.shape[0] % 2:
        weights = torch.cat([weights, torch.zeros_like(weights[:1])])
    return torch.stack([weights[0::2], weights[1::2]], dim=-1)


def _spectrum(z: torch.Tensor) -> torch.Tensor:
    """``torch.fft.fft2`` of a real z (..., L1, L2) from its real FFT and Hermitian symmetry:
    ``Z[-u, -v] = conj(Z[u, v])`` fills the columns the real FFT leaves out."""
    half = torch.fft.rfft2(z)
    w = z.shape[-1]
    full = half.new_empty(*z.shape)
    full[..., : w // 2 + 1] = half
    # column v > L2 / 2 mirrors column L2 - v, and row u mirrors row -u (mod L1): row 0
    # onto itself, rows 1.. onto each other in reverse order
    mirrored = half[..., 1 : w - w // 2]
    full[..., :1, w // 2 + 1 :] = mirrored[..., :1, :].flip(-1).conj()
    full[..., 1:, w // 2 + 1 :] = mirrored[..., 1:, :].flip(-2, -1).conj()
    return full


def _pad_to_grid(y: torch.Tensor, fft_shape: tuple[int, int], margin: int) -> torch.Tensor:
    """y (..., H, W) placed at (margin, margin) on a zero ``fft_shape`` grid (y itself when
    it already is that grid)."""
    h, w = y.shape[-2:]
    pad = (margin, fft_shape[1] - margin - w, margin, fft_shape[0] - margin - h)
    return F.pad(y, pad) if any(pad) else y


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
    # One kernel at a time: the working set stays a few planes, whatever K.
    spectrum = None
    for k in range(spectra.shape[0]):
        u = x if weights is None else x * weights[k]
        term = torch.fft.rfft2(u, s=fft_shape)
        spectrum = (
            term.mul_(spectra[k]) if spectrum is None else spectrum.addcmul_(term, spectra[k])
        )
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
    """Adjoint of :func:`product_convolution`: (N, C, H, W) -> (N, C, Sh, Sw).

    weights None (one kernel): spectra from :func:`kernel_spectra`. Otherwise the paired
    weights (ceil(K / 2), Sh, Sw, 2) from :func:`adjoint_weights` and the paired spectra
    (ceil(K / 2), L1, L2) from :func:`adjoint_spectra` (see the module docstring).
    """
    h, w = y.shape[-2:]
    z = _pad_to_grid(y, fft_shape, margin)
    crop = (..., slice(0, h + 2 * margin), slice(0, w + 2 * margin))
    if weights is None:
        spectrum = torch.fft.rfft2(z) * spectra[0].conj()
        return torch.fft.irfft2(spectrum, s=fft_shape)[crop]
    spectrum, out = _spectrum(z), None
    for j in range(spectra.shape[0]):
        # real part: the correlation with kernel 2j; imaginary part: with kernel 2j + 1
        pair = torch.view_as_real(torch.fft.ifft2(spectrum * spectra[j])[crop])
        out = pair * weights[j] if out is None else out.addcmul_(pair, weights[j])
    return out[..., 0] + out[..., 1]
