"""Where the chief ray is in a PSF: a fit of the diffraction model's pupil.

Beads lie at unknown positions, so from their images alone a PSF's position is only
defined up to a shift. The natural centre, the intensity centroid, is *not* the chief
ray when the lens has coma: the centroid of a diffraction PSF over the whole plane is
set by the pupil-averaged wavefront slope (the "G-tilt"), and balanced (Zernike) coma
``sqrt(8) (3 rho^3 - 2 rho) cos(theta)`` has zero least-squares tilt ("Z-tilt") but a
mean slope of ``sqrt(8)`` waves per pupil radius. With the project's sampling (pupil
radius ``pupil_scale / 4`` cycles per pixel) a coma of ``c`` RMS waves moves the
centroid by ``4 sqrt(8) c / pupil_scale`` px (0.72 px per axis at the corner point
(0.9, 0.9) of ``LensField(coma=0.1)``; measured 0.69 px in a 127 px window, 0.31 px in
the 21 px window), while the PSF at the chief ray is the one whose wavefront has no
Z-tilt. A shift of 0.25 px of these sharp PSFs is a 28 % relative L2 error.

The chief ray is recovered from the PSF's *shape*: :func:`chief_ray_offsets` fits the
diffraction model of :func:`coordgate.optics.psf.diffraction_psfs` (the Zernike terms of
``ABERRATIONS`` plus a tilt, i.e. a shift) to each PSF by least squares (L-BFGS through
the pupil FFT) and returns the shift at which the fitted wavefront has zero tilt. The
twin ambiguity of phase retrieval (``W(rho) -> -W(-rho)`` gives the same PSF, flipping
the sign of defocus and astigmatism) leaves tilt and coma unchanged, so the shift is
well defined even when the even terms are not. It assumes a scalar, uniformly
illuminated circular pupil of known sampling (``pupil_scale``, 1 = Nyquist-sampled);
its fit residual says whether that holds.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from coordgate.optics.psf import ABERRATIONS, pupil_grid, zernike

__all__ = ["STARTS", "PupilFit", "check_pupil_scale", "chief_ray_offsets", "start_coefficients"]

#: The rotationally symmetric aberrations (defocus, spherical; RMS waves) each fit starts
#: from; the lowest residual wins. Both blur a PSF into a disc, so a fit started in focus
#: explains spherical aberration by defocus and stops there (``LensField(spherical=0.3)``:
#: defocus 0.40 and spherical 0.03 found, a 52 % field error). The twin ambiguity makes
#: (d, s) and (-d, -s) one start.
STARTS = ((0.0, 0.0), (0.3, 0.0), (0.0, 0.3), (0.3, 0.3), (0.3, -0.3))
_ITERATIONS = 150


def check_pupil_scale(pupil_scale: float) -> float:
    """``pupil_scale`` if it is in (0, 1], else ``ValueError``."""
    if not 0 < pupil_scale <= 1:
        raise ValueError(
            f"pupil_scale must be in (0, 1] (1 = Nyquist-sampled), got {pupil_scale!r}"
        )
    return float(pupil_scale)


class PupilFit:
    """The diffraction model on a ``K`` x ``K`` window: PSFs from (coefficients, shift).

    ``psfs(coefficients (N, len(ABERRATIONS)) RMS waves, shift (N, 2) px)`` ->
    (N, K, K) unit sum, the PSF translated by ``shift`` (rows, cols).
    """

    def __init__(self, psf_size: int, pupil_scale: float = 1.0) -> None:
        check_pupil_scale(pupil_scale)
        self.psf_size = psf_size
        self.grid = pupil_grid(psf_size, pupil_scale)
        freq = torch.fft.fftfreq(self.grid, dtype=torch.float64)
        fy, fx = torch.meshgrid(freq, freq, indexing="ij")
        rho = torch.hypot(fy, fx) / (pupil_scale / 4)
        theta = torch.atan2(fy, fx)
        self.inside = (rho <= 1).reshape(-1)
        self.basis = torch.stack(
            [zernike(n, m, rho, theta).reshape(-1)[self.inside] for n, m in ABERRATIONS.values()]
        )
        self.frequencies = torch.stack([fy.reshape(-1), fx.reshape(-1)], 1)[self.inside]
        self.window = torch.arange(-(psf_size // 2), psf_size // 2 + 1).remainder(self.grid)

    def psfs(self, coefficients: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        # A phase ramp exp(-2 pi i f . s) in the pupil translates the PSF by +s.
        phase = 2 * math.pi * (coefficients @ self.basis - shift @ self.frequencies.T)
        pupil = torch.zeros(len(phase), self.grid * self.grid, dtype=torch.complex128)
        pupil[:, self.inside] = torch.polar(torch.ones_like(phase), phase)
        field = torch.fft.ifft2(pupil.reshape(-1, self.grid, self.grid))
        psfs = field[:, self.window][:, :, self.window].abs() ** 2
        return psfs / psfs.sum(dim=(-2, -1), keepdim=True)


def lbfgs(parameters: list[torch.Tensor], iterations: int) -> torch.optim.LBFGS:
    """The L-BFGS optimiser of the pupil fits: strong-Wolfe line search, tight tolerances."""
    return torch.optim.LBFGS(
        parameters,
        max_iter=iterations,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
    )


def start_coefficients(start: tuple[float, float], count: int = 1) -> np.ndarray:
    """Zernike coefficients (count, len(ABERRATIONS)) of one of :data:`STARTS`."""
    coefficients = np.zeros((count, len(ABERRATIONS)))
    names = list(ABERRATIONS)
    coefficients[:, names.index("defocus")], coefficients[:, names.index("spherical")] = start
    return coefficients


def _fit(
    model: PupilFit, target: torch.Tensor, start: tuple[float, float]
) -> tuple[torch.Tensor, ...]:
    n = len(target)
    coefficients = torch.from_numpy(start_coefficients(start, n)).requires_grad_(True)
    shift = torch.zeros(n, 2, dtype=torch.float64, requires_grad=True)
    optimiser = lbfgs([coefficients, shift], _ITERATIONS)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        # The PSFs are independent: the summed loss has a block-diagonal Hessian.
        loss = ((model.psfs(coefficients, shift) - target) ** 2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        difference = model.psfs(coefficients, shift) - target
        residual = difference.flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1)
    return shift.detach(), coefficients.detach(), residual


def chief_ray_offsets(
    psfs: np.ndarray, pupil_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each PSF's chief ray lies relative to its centre pixel (see the module docstring).

    psfs: (N, K, K) unit-sum PSFs. Returns the offsets (N, 2) px (rows, cols: the chief
    ray of PSF ``i`` is at its centre plus ``offsets[i]``), the fitted Zernike
    coefficients (N, len(ABERRATIONS)) RMS waves (even terms up to the twin sign) and the
    relative L2 residual of each fit (N,).
    """
    target = torch.as_tensor(np.asarray(psfs), dtype=torch.float64)
    model = PupilFit(target.shape[-1], pupil_scale)
    best = None
    for start in STARTS:
        shift, coefficients, residual = _fit(model, target, start)
        if best is None:
            best = [shift, coefficients, residual]
            continue
        better = residual < best[2]
        best[0][better], best[1][better] = shift[better], coefficients[better]
        best[2] = torch.minimum(residual, best[2])
    return best[0].numpy(), best[1].numpy(), best[2].numpy()
