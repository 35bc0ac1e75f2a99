"""A physical field model: the lens's Zernike aberrations as polynomials of the field position.

A lens's Seidel aberrations are polynomials in the field coordinates: field curvature
and astigmatism grow as ``h**2``, coma as ``h``, spherical aberration is constant, a
tilted focal plane adds defocus linear in the position. :func:`fit_pupil_field` models
each Zernike coefficient of :data:`~coordgate.optics.psf.ABERRATIONS` (RMS waves) as a
polynomial of total degree ``degree`` (default 2) in the normalised sensor position
``(y, x)``, and the PSF at a position as the diffraction PSF of that wavefront
(:class:`~coordgate.optics.calibration.pupil.PupilFit`): ``6 * (degree + 1) * (degree
+ 2) / 2`` numbers (36 at degree 2) describe the whole field, so noisy beads average out
and the field extrapolates the way optics does, beyond the outermost beads into the
frame's corners.

The fit is one least-squares problem over all beads: the polynomial coefficients, one
sub-pixel shift per bead (the bead's unknown position) and a *pedestal*, by L-BFGS
through the pupil FFT. The beads' windows are fitted as cut: the model translates its
PSF exactly by a phase ramp, where interpolating a window whose PSF reaches its edge
would not. The pedestal is what the local background (a ring just outside the window,
:mod:`~coordgate.optics.calibration.beads`) took too much where a PSF's wings reach the
ring, as a share of the window's sum, a quadratic polynomial of the position like the
aberrations (one free pedestal per bead fitted the noise: the tilted benchmark lens went
from 3.7 % to 22 % median error). On the benchmark's noise-free spherical lens
(spherical 0.3 waves, 26 % of the PSF outside 21 px) the ring made the field 47 % wrong;
with the true background it was 0.4 %.

The phase of a diffraction PSF is a non-convex function of its intensity, so the fit
runs from three starts and keeps the one with the lower loss:

- *anchors*: single-PSF pupil fits at anchor points
  (:func:`~coordgate.optics.calibration.pupil.chief_ray_offsets` on a denoised field),
  whose even terms (defocus, astigmatism, spherical) are only known up to the twin sign
  of phase retrieval (``W(rho) -> -W(-rho)`` gives the same PSF); the start picks, anchor
  by anchor, the sign that a polynomial fits best;
- *grown from the centre*, twice (:data:`GROWTHS`): constant aberrations fitted to the beads
  near the centre (from each of :data:`~coordgate.optics.calibration.pupil.STARTS`),
  where a lens is least aberrated and the fit nearly convex, then
  polynomials of growing degree to beads ever farther out, each stage starting where
  the last ended. On the issue-24 lens (astigmatism 0.5, coma 0.35 waves in the corners,
  one 512² frame) the anchor start alone stopped at a local minimum (astigmatism found
  at a fifth of its size; the per-bead loss 14 % above the truth's; field error 32 %
  median, 73 % worst); started at the truth, the same fit ended at 7 % / 21 %. One growth has
  a linear middle stage, the other a quadratic one: a linear stage cannot follow field
  curvature or astigmatism (both grow as ``h**2``; on the project's default lens, defocus
  0.75 waves in the corners, it led to a loss 25 % above the truth's and a 25 % field
  error, the quadratic one to 10 %); on the tilted benchmark lens (defocus linear in the
  position) the quadratic one ended at a loss 67 % above the linear one's.

The best start is then polished (``_POLISH`` more iterations): 200 iterations
stop short where shifts, coma and the pedestal trade off. On the benchmark's mixed lens
(defocus 0.5, astigmatism 0.3, coma 0.2, spherical 0.15; 47 beads) the fit ended at
53 % median field error after 200 iterations and at 8 % after 1000, at a loss below the
truth's.

The fitted PSFs have zero wavefront tilt: each is centred on its chief ray.

Assumptions, which the fit residual tests: scalar diffraction through a uniformly
illuminated circular pupil of known sampling (``pupil_scale``, 1 = Nyquist); the
aberrations are these six Zernike terms; each varies over the sensor as a polynomial of
``degree``. Where they fail (a Gaussian-like PSF, higher-order or vectorial effects),
:func:`~coordgate.optics.calibration.fit.calibrate` keeps the data-driven low-rank
field (:mod:`~coordgate.optics.calibration.model`).

Extrapolation: the polynomials are followed for at most ``max_extrapolation``
(normalised units) beyond the convex hull of the beads, as the low-rank field's trend
is; farther points take the PSF at that distance toward the nearest hull point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from coordgate.optics.calibration.model import DEFAULT_MAX_EXTRAPOLATION, Hull
from coordgate.optics.calibration.pupil import (
    STARTS,
    PupilFit,
    check_pupil_scale,
    lbfgs,
    start_coefficients,
)
from coordgate.optics.psf import ABERRATIONS

__all__ = ["DEFAULT_DEGREE", "GROWTHS", "PupilField", "fit_pupil_field", "monomials"]

#: Total degree of the polynomials in (y, x): quadratic, as the Seidel aberrations are.
DEFAULT_DEGREE = 2
# Terms that change sign under the twin ambiguity W(rho) -> -W(-rho).
_EVEN = np.array([ABERRATIONS[name][0] % 2 == 0 for name in ABERRATIONS])
_ITERATIONS = 200
# Further iterations of the best start: the fit converges slowly along the valley where
# shifts, coma and the pedestal trade off (see the module docstring).
_POLISH = 800
_SIGN_ROUNDS = 10
#: The grown starts' stages: (field radius ``|p|`` of the beads fitted, polynomial degree
#: at most); a last stage fits every bead at the field's degree. A linear middle stage
#: follows a tilted focal plane, a quadratic one field curvature and astigmatism.
GROWTHS = (((0.4, 0), (0.7, 1), (1.0, 2)), ((0.4, 0), (0.7, 2), (1.0, 2)))
# Iterations of each growth stage; the fewest beads a stage fits (else the nearest ones).
_STAGE_ITERATIONS = 80
_STAGE_BEADS = 8
# Iterations of a held-out refit (from the full fit's solution).
_REFIT = 40


def monomials(positions: np.ndarray, degree: int) -> np.ndarray:
    """Monomials ``y**i x**j``, ``i + j <= degree``, of positions (N, 2) -> (N, M)."""
    y, x = np.asarray(positions, dtype=np.float64).reshape(-1, 2).T
    terms = [y ** (total - j) * x**j for total in range(degree + 1) for j in range(total + 1)]
    return np.stack(terms, axis=1)


@dataclass
class PupilField:
    """A fitted pupil field (see the module docstring); evaluate with :meth:`psfs_at`.

    polynomials: (M, len(ABERRATIONS)) coefficients of :func:`monomials` per Zernike
    term; positions (N, 2): the beads it was fitted to (for the hull); residuals (N,):
    each bead's relative L2 fit residual.
    """

    psf_size: int
    polynomials: np.ndarray
    positions: np.ndarray
    residuals: np.ndarray
    degree: int = DEFAULT_DEGREE
    pupil_scale: float = 1.0
    max_extrapolation: float = DEFAULT_MAX_EXTRAPOLATION

    def __post_init__(self) -> None:
        self._pupil = PupilFit(self.psf_size, self.pupil_scale)
        self._hull = Hull(self.positions)

    def extrapolation(self, y: Any, x: Any) -> np.ndarray:
        """Distance (normalised units) of each position outside the beads' hull (0 inside)."""
        points = np.stack([np.ravel(y), np.ravel(x)], axis=1).astype(np.float64)
        return self._hull.clamp(points, self.max_extrapolation)[1]

    def aberrations_at(self, y: Any, x: Any) -> np.ndarray:
        """Zernike coefficients (M, len(ABERRATIONS)) RMS waves at positions y, x (M,)."""
        points = np.stack([np.ravel(y), np.ravel(x)], axis=1).astype(np.float64)
        points, _ = self._hull.clamp(points, self.max_extrapolation)
        return monomials(points, self.degree) @ self.polynomials

    def psfs_at(self, y: Any, x: Any) -> np.ndarray:
        """PSFs at normalised positions y, x (M,) -> (M, K, K), non-negative, unit sum."""
        coefficients = torch.from_numpy(self.aberrations_at(y, x))
        with torch.no_grad():
            psfs = self._pupil.psfs(coefficients, torch.zeros(len(coefficients), 2).double())
        return psfs.numpy()

    def refit(self, psfs: np.ndarray, positions: np.ndarray) -> PupilField:
        """This field refitted to chief-ray-centred PSFs (N, K, K) at positions (N, 2),
        starting from its own polynomials (a short fit: for held-out checks)."""
        target = torch.as_tensor(np.asarray(psfs), dtype=torch.float64)
        design = torch.from_numpy(monomials(positions, self.degree))
        polynomials, _, _ = _least_squares(
            self._pupil, target, design, _with_pedestal(self.polynomials),
            np.zeros((len(psfs), 2)), _REFIT,
        )  # fmt: skip
        return PupilField(self.psf_size, polynomials[:, :-1], np.asarray(positions),
                          np.zeros(len(psfs)), self.degree, self.pupil_scale,
                          self.max_extrapolation)  # fmt: skip


def _with_pedestal(polynomials: np.ndarray) -> np.ndarray:
    """Polynomials (M, 6) of the aberrations with a zero pedestal column: (M, 7)."""
    return np.pad(polynomials, ((0, 0), (0, 1)))


def _signed_start(anchors: np.ndarray, coefficients: np.ndarray, degree: int) -> np.ndarray:
    """Polynomials through anchor coefficients, each anchor's twin sign chosen to fit best.

    From every anchor as the reference: signs by agreement with the reference's even
    terms, then alternate a least-squares fit with per-anchor sign flips until stable.
    Returns the polynomials (M, len(ABERRATIONS)) with the smallest misfit.
    """
    design = monomials(anchors, degree)
    best, best_misfit = None, np.inf
    for reference in coefficients[:, _EVEN]:
        signs = np.where(coefficients[:, _EVEN] @ reference >= 0, 1.0, -1.0)
        for _ in range(_SIGN_ROUNDS):
            signed = coefficients.copy()
            signed[:, _EVEN] *= signs[:, None]
            polynomials = np.linalg.lstsq(design, signed, rcond=None)[0]
            predicted = design @ polynomials
            twin = signed.copy()
            twin[:, _EVEN] *= -1
            flip = ((twin - predicted) ** 2).sum(1) < ((signed - predicted) ** 2).sum(1)
            if not flip.any():
                break
            signs = np.where(flip, -signs, signs)
        misfit = ((signed - predicted) ** 2).sum()
        if misfit < best_misfit:
            best, best_misfit = polynomials, misfit
    return best


def _model(pupil: PupilFit, terms: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """The windows the pupil predicts (N, K, K) for each bead's terms (N, 7): its Zernike
    coefficients and its pedestal (the share of its window's sum that its local background
    missed); each PSF shifted by ``shifts`` (N, 2), less its pedestal, renormalised."""
    psfs = pupil.psfs(terms[:, :-1], shifts)
    share = terms[:, -1, None, None]
    return (psfs - share / psfs[0].numel()) / (1 - share)


def _least_squares(
    pupil: PupilFit,
    target: torch.Tensor,
    design: torch.Tensor,
    polynomials: np.ndarray,
    shifts: np.ndarray,
    iterations: int,
) -> tuple[np.ndarray, np.ndarray, float]:
    """L-BFGS of polynomials (M, 7) of the terms of :func:`_model` and shifts (N, 2) for
    PSFs (N, K, K) with ``design`` (N, M) monomials: returns both and the final sum of
    squared differences."""
    polynomials = torch.tensor(polynomials, dtype=torch.float64, requires_grad=True)
    shifts = torch.tensor(shifts, dtype=torch.float64, requires_grad=True)
    optimiser = lbfgs([polynomials, shifts], iterations)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = ((_model(pupil, design @ polynomials, shifts) - target) ** 2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        loss = float(((_model(pupil, design @ polynomials, shifts) - target) ** 2).sum())
    return polynomials.detach().numpy(), shifts.detach().numpy(), loss


def _grown_starts(
    pupil: PupilFit, target: torch.Tensor, positions: np.ndarray, degree: int, shifts: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """One start per growth of :data:`GROWTHS`: polynomials (M, 7) of :func:`_model`'s
    terms and shifts (N, 2) grown from the centre outward (see the module docstring).
    Each stage fits the beads within its radius (at least ``_STAGE_BEADS``, the nearest
    ones) at its degree, from the previous stage's result; the first stage from each of
    :data:`~coordgate.optics.calibration.pupil.STARTS`. Stages the growths share (their
    first) are fitted once."""
    radius = np.hypot(*positions.T)
    terms = monomials(positions[:1], degree).shape[1]
    first = [_with_pedestal(start_coefficients(start)) for start in STARTS]
    fitted: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # by the stages leading there
    grown = []
    for growth in GROWTHS:
        starts, stage_shifts = first, shifts
        for depth, (reach, stage_degree) in enumerate(growth, 1):
            if growth[:depth] not in fitted:
                stage_degree = min(stage_degree, degree)
                size = monomials(positions[:1], stage_degree).shape[1]
                count = max((radius <= reach).sum(), _STAGE_BEADS, 2 * size)
                chosen = np.argsort(radius)[:count]
                design = torch.from_numpy(monomials(positions[chosen], stage_degree))
                fits = [
                    _least_squares(
                        pupil, target[chosen], design,
                        np.pad(start, ((0, max(size - len(start), 0)), (0, 0)))[:size],
                        stage_shifts[chosen], _STAGE_ITERATIONS,
                    )
                    for start in starts
                ]  # fmt: skip
                polynomials, chosen_shifts, _ = min(fits, key=lambda fit: fit[2])
                stage_shifts = stage_shifts.copy()
                stage_shifts[chosen] = chosen_shifts
                fitted[growth[:depth]] = polynomials, stage_shifts
            polynomials, stage_shifts = fitted[growth[:depth]]
            starts = [polynomials]
        grown.append((np.pad(polynomials, ((0, terms - len(polynomials)), (0, 0))), stage_shifts))
    return grown


def fit_pupil_field(
    psfs: np.ndarray,
    positions: np.ndarray,
    anchors: np.ndarray,
    anchor_coefficients: np.ndarray,
    *,
    shifts: np.ndarray | None = None,
    degree: int = DEFAULT_DEGREE,
    pupil_scale: float = 1.0,
    max_extrapolation: float = DEFAULT_MAX_EXTRAPOLATION,
) -> tuple[PupilField, np.ndarray, np.ndarray]:
    """Fit the pupil field to PSFs (N, K, K) at normalised positions (N, 2) (y, x).

    anchors (A, 2), anchor_coefficients (A, len(ABERRATIONS)): single-PSF pupil fits
    the anchor start is made of (even terms up to the twin sign); the grown starts are the
    others (see the module docstring). shifts (N, 2) px: where each PSF's centre is
    thought to be, relative to its centre pixel (None: there). Returns the field, each
    PSF's fitted shift (N, 2) px (PSF ``i``'s chief ray is at its centre plus it) and
    each PSF's pedestal (N,): the share of its window's sum that its background took
    too much (see the module docstring).
    """
    check_pupil_scale(pupil_scale)
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
        raise ValueError(f"degree must be a non-negative integer, got {degree!r}")
    target = torch.as_tensor(np.asarray(psfs), dtype=torch.float64)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    design = torch.from_numpy(monomials(positions, degree))
    if len(positions) < design.shape[1]:
        raise ValueError(
            f"a degree-{degree} pupil field needs at least {design.shape[1]} PSFs, "
            f"got {len(positions)}"
        )
    pupil = PupilFit(target.shape[-1], pupil_scale)
    shifts = np.zeros((len(target), 2)) if shifts is None else np.asarray(shifts, np.float64)
    anchored = _signed_start(np.asarray(anchors), np.asarray(anchor_coefficients), degree)
    starts = [
        (_with_pedestal(anchored), shifts),
        *_grown_starts(pupil, target, positions, degree, shifts),
    ]
    fits = [
        _least_squares(pupil, target, design, polynomials, start, _ITERATIONS)
        for polynomials, start in starts
    ]
    polynomials, shifts, _ = min(fits, key=lambda fit: fit[2])
    polynomials, shifts, _ = _least_squares(pupil, target, design, polynomials, shifts, _POLISH)
    with torch.no_grad():
        fitted = _model(pupil, design @ torch.from_numpy(polynomials), torch.from_numpy(shifts))
        residuals = (fitted - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1)
    field = PupilField(
        psf_size=target.shape[-1],
        polynomials=polynomials[:, :-1],
        positions=positions,
        residuals=residuals.numpy(),
        degree=degree,
        pupil_scale=float(pupil_scale),
        max_extrapolation=float(max_extrapolation),
    )
    return field, shifts, design.numpy() @ polynomials[:, -1]
