"""Simulated bead images of a known PSF field, and errors of a recovered field against it.

The image is the physical superposition the blur operators model (``y(p) = sum_q x(q)
h_q(p - q)``, :mod:`coordgate.optics.blur`) for point sources at random *sub-pixel*
positions: each bead adds ``flux * h(p - q)``, its PSF ``h`` taken from the field at the
bead's own position and translated by the bead's fractional pixel offset with a Fourier
phase ramp. That translation is exact for the diffraction PSFs of a
:class:`~coordgate.optics.LensField` (band-limited to the pixel Nyquist frequency at
``pupil_scale <= 1``). Analytic fields are sampled on a ``2 K + 1`` window so the light
of each bead beyond its ``K`` x ``K`` window is in the image too. Photon (Poisson) and
read (Gaussian) noise come from :func:`coordgate.optics.poisson_gaussian`; the image is
in photo-electrons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from coordgate.optics.calibration.beads import centroids, fourier_shift
from coordgate.optics.calibration.fit import sensor_positions
from coordgate.optics.field import PSFField
from coordgate.optics.noise import poisson_gaussian

__all__ = ["BeadImage", "field_errors", "simulate_beads"]


@dataclass
class BeadImage:
    """A simulated frame: ``image`` (H, W) photo-electrons; the beads' ``positions``
    (n, 2) (row, col) px, pixel centres at integers; their ``fluxes`` (n,) photo-electrons."""

    image: np.ndarray
    positions: np.ndarray
    fluxes: np.ndarray


def _wide(field: PSFField, size: int) -> PSFField:
    """The same field sampled on ``size`` px windows when its config can rebuild it."""
    try:
        return PSFField.from_config({**field.config(), "psf_size": size})
    except ValueError:
        return field


def _render(
    field: PSFField,
    positions: np.ndarray,
    fluxes: np.ndarray,
    size: tuple[int, int],
    background: float,
) -> np.ndarray:
    """Noise-free image: background plus each bead's flux times its translated PSF."""
    h, w = size
    if len(positions) == 0:
        return np.full((h, w), float(background))
    wide = _wide(field, 2 * field.psf_size + 1)
    normalised = sensor_positions(positions[:, 0], positions[:, 1], size)
    psfs = wide.psfs_at(normalised[:, 0], normalised[:, 1]).numpy()
    whole = np.round(positions).astype(int)
    psfs = np.clip(fourier_shift(psfs, positions - whole), 0, None)
    psfs /= psfs.sum(axis=(-2, -1), keepdims=True)
    # Add each bead's light into a frame padded by the PSF half-width, then crop.
    half = psfs.shape[-1] // 2
    clean = np.full((h + 2 * half, w + 2 * half), float(background))
    for (r, c), psf, flux in zip(whole, psfs, fluxes):
        clean[r : r + 2 * half + 1, c : c + 2 * half + 1] += flux * psf
    return clean[half : half + h, half : half + w]


def simulate_beads(
    field: PSFField,
    size: int | tuple[int, int] = 512,
    n_beads: int = 120,
    *,
    photons: float = 3000.0,
    read_noise: float = 2.0,
    background: float = 10.0,
    flux_spread: float = 0.15,
    saturation: float | None = None,
    positions: Any = None,
    fluxes: Any = None,
    seed: int = 0,
) -> BeadImage:
    """A noisy image of sub-resolution beads blurred by ``field``.

    size: (H, W) or one int; n_beads: beads at uniformly random sub-pixel positions
    (ignored when ``positions`` (n, 2) px are given); photons: the median bead's flux,
    photo-electrons, each bead's drawn log-normally with relative spread ``flux_spread``
    (or ``fluxes`` (n,)); background: photo-electrons per pixel; read_noise: electrons
    RMS; saturation: clip the image at this level (a full well), None for no clipping.
    """
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if photons <= 0 or background < 0 or min(h, w) < 1:
        raise ValueError(
            f"need photons > 0, background >= 0 and a positive size, got {photons}, "
            f"{background}, {(h, w)}"
        )
    rng = np.random.default_rng(seed)
    if positions is None:
        positions = rng.uniform([-0.5, -0.5], [h - 0.5, w - 0.5], size=(n_beads, 2))
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    n = len(positions)
    if fluxes is None:
        fluxes = photons * np.exp(flux_spread * rng.standard_normal(n))
    fluxes = np.broadcast_to(np.asarray(fluxes, dtype=np.float64), (n,)).copy()
    clean = _render(field, positions, fluxes, (h, w), background)
    generator = torch.Generator().manual_seed(seed)
    noisy = poisson_gaussian(
        torch.from_numpy(clean / photons),
        photons=photons,
        read_noise=read_noise,
        generator=generator,
    ).numpy()
    image = noisy * photons
    if saturation is not None:
        image = np.minimum(image, saturation)
    return BeadImage(image, positions, fluxes)


def field_errors(
    recovered: PSFField,
    truth: PSFField,
    points: int = 5,
    extent: float = 0.9,
    *,
    align: bool = False,
) -> dict[str, Any]:
    """Relative L2 error ``||p - t|| / ||t||`` of recovered PSFs on a points x points grid.

    The grid spans ``[-extent, extent]**2`` (normalised sensor coordinates). With
    ``align``, each true PSF is first translated (Fourier, on a ``2 K + 1`` window, for
    analytic fields) so its centroid matches the recovered one's: the error of the shape
    alone, without the shift a random-bead calibration cannot see (see
    :mod:`coordgate.optics.calibration`). Returns the grid, per-point errors (points x
    points), their median and worst.
    """
    if recovered.psf_size != truth.psf_size:
        raise ValueError(
            f"PSF sizes differ: recovered {recovered.psf_size}, truth {truth.psf_size}"
        )
    line = torch.linspace(-extent, extent, points, dtype=torch.float64)
    yy, xx = (t.reshape(-1) for t in torch.meshgrid(line, line, indexing="ij"))
    got = recovered.psfs_at(yy, xx).numpy()
    k = truth.psf_size
    if align:
        wide = _wide(truth, 2 * k + 1).psfs_at(yy, xx).numpy()
        # The 2 K + 1 window's centre pixel is K: the K x K crop around it starts at K - K // 2.
        crop = slice(k - k // 2, k - k // 2 + k)
        offset = centroids(wide[:, crop, crop]) - centroids(got)
        true = fourier_shift(wide, -offset)[:, crop, crop]
        true = np.clip(true, 0, None)
        true /= true.sum(axis=(-2, -1), keepdims=True)
    else:
        true = truth.psfs_at(yy, xx).numpy()
    errors = np.linalg.norm((got - true).reshape(len(got), -1), axis=1) / np.linalg.norm(
        true.reshape(len(true), -1), axis=1
    )
    return {
        "points": line.tolist(),
        "errors": errors.reshape(points, points).tolist(),
        "median": float(np.median(errors)),
        "worst": float(errors.max()),
        "aligned": align,
    }
