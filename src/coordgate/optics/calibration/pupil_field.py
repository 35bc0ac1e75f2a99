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

The *Seidel form* (``form="seidel"``, :data:`SEIDEL`) lets each aberration vary only as a
rotationally symmetric lens, with a tilted or decentred element, has it: 15 numbers for
the whole field instead of 42. It is fitted from the
:data:`~coordgate.optics.calibration.pupil.STARTS` and from the polynomial fit projected
on its span. :func:`~coordgate.optics.calibration.fit.calibrate` fits both forms and keeps
the Seidel field unless the polynomials predict held-out beads significantly better: their
extra freedom is unconstrained between and beyond the beads. On one 512² frame of the
benchmark's spherical lens (spherical 0.3 waves) they predicted held-out beads 1.5 points
better (76.1 % against 77.6 % residual, mostly noise), while their field was 15.9 % median
and 60 % worst from the truth, the Seidel field 8.2 % and 16 %.

The fitted PSFs have zero wavefront tilt: each is centred on its chief ray.

Assumptions, which the fit residual tests: scalar diffraction through a uniformly
illuminated circular pupil of known sampling (``pupil_scale``, 1 = Nyquist); the
aberrations are these six Zernike terms; each varies over the sensor as a polynomial of
``degree`` (or as :data:`SEIDEL` has it). Where they fail (a Gaussian-like PSF,
higher-order or vectorial effects), :func:`~coordgate.optics.calibration.fit.calibrate`
keeps the data-driven low-rank field (:mod:`~coordgate.optics.calibration.model`).

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

__all__ = [
    "DEFAULT_DEGREE",
    "FORMS",
    "GROWTHS",
    "SEIDEL",
    "PupilField",
    "fit_pupil_field",
    "monomials",
]

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
#: How the aberrations may vary over the field: every polynomial of the degree, or only
#: as :data:`SEIDEL` has them.
FORMS = ("polynomial", "seidel")
#: The Seidel form's terms: each a Zernike term (or the pedestal) and its shape over the
#: field ``(y, x)``, as a rotationally symmetric lens has them (defocus curved as
#: ``h**2``, astigmatism as ``h**2`` and coma as ``h`` oriented along the field angle,
#: spherical constant), plus what a tilted focal plane and a decentred element add
#: (defocus linear in the position; astigmatism and coma constant over the field) and the
#: pedestal, constant and ``h**2``. Each Zernike component has its own weight, so either
#: orientation convention is in the span. Fifteen numbers for the whole field instead of
#: the 42 of degree-2 polynomials (see the module docstring).
SEIDEL = (
    ("defocus", lambda y, x: np.ones_like(y)),
    ("defocus", lambda y, x: y),
    ("defocus", lambda y, x: x),
    ("defocus", lambda y, x: y**2 + x**2),
    ("astigmatism_cos", lambda y, x: np.ones_like(y)),
    ("astigmatism_sin", lambda y, x: np.ones_like(y)),
    ("astigmatism_cos", lambda y, x: x**2 - y**2),
    ("astigmatism_sin", lambda y, x: 2 * x * y),
    ("coma_cos", lambda y, x: np.ones_like(y)),
    ("coma_sin", lambda y, x: np.ones_like(y)),
    ("coma_cos", lambda y, x: x),
    ("coma_sin", lambda y, x: y),
    ("spherical", lambda y, x: np.ones_like(y)),
    ("pedestal", lambda y, x: np.ones_like(y)),
    ("pedestal", lambda y, x: y**2 + x**2),
)
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
    each bead's relative L2 fit residual; form: one of :data:`FORMS` (a held-out refit
    keeps it); pedestal: (M,) the pedestal's polynomial (None: zero).
    """

    psf_size: int
    polynomials: np.ndarray
    positions: np.ndarray
    residuals: np.ndarray
    degree: int = DEFAULT_DEGREE
    pupil_scale: float = 1.0
    max_extrapolation: float = DEFAULT_MAX_EXTRAPOLATION
    form: str = "polynomial"
    pedestal: np.ndarray | None = None

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
        basis = _basis(self.form, self.degree)
        polynomials, _, _ = _least_squares(
            self._pupil, target, design, _weights(_with_pedestal(self.polynomials), basis),
            np.zeros((len(psfs), 2)), _REFIT, basis,
        )  # fmt: skip
        polynomials = _expand(polynomials, basis)
        return PupilField(self.psf_size, polynomials[:, :-1], np.asarray(positions),
                          np.zeros(len(psfs)), self.degree, self.pupil_scale,
                          self.max_extrapolation, self.form)  # fmt: skip


def _basis(form: str, degree: int) -> np.ndarray | None:
    """The polynomials (J, M, 7) spanning ``form`` at ``degree`` (None: every polynomial)."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if form == "polynomial":
        return None
    if degree < 2:
        raise ValueError(f"the Seidel form needs degree >= 2, got {degree}")
    line = np.linspace(-1, 1, 5)
    points = np.stack([a.ravel() for a in np.meshgrid(line, line, indexing="ij")], 1)
    design = monomials(points, degree)
    columns = [*ABERRATIONS, "pedestal"]
    basis = []
    for name, shape in SEIDEL:
        values = np.zeros((len(points), len(columns)))
        values[:, columns.index(name)] = shape(*points.T)
        basis.append(np.linalg.lstsq(design, values, rcond=None)[0])
    return np.stack(basis)


def _expand(parameters: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """Polynomials (M, 7) from fitted parameters: themselves, or weights (J,) of ``basis``."""
    return parameters if basis is None else np.tensordot(parameters, basis, 1)


def _weights(polynomials: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """The parameters of polynomials (M, 7): themselves, or their least-squares weights
    (J,) in ``basis`` (their projection on its span)."""
    if basis is None:
        return polynomials
    return np.linalg.lstsq(basis.reshape(len(basis), -1).T, polynomials.ravel(), rcond=None)[0]


def _with_pedestal(polynomials: np.ndarray, pedestal: np.ndarray | None = None) -> np.ndarray:
    """Polynomials (M, 6) of the aberrations with the pedestal's (M,) as a last column
    (None: zero): (M, 7)."""
    if pedestal is None:
        return np.pad(polynomials, ((0, 0), (0, 1)))
    return np.column_stack([polynomials, pedestal])


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
    parameters: np.ndarray,
    shifts: np.ndarray,
    iterations: int,
    basis: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """L-BFGS of polynomials (M, 7) of the terms of :func:`_model` (with ``basis`` (J, M,
    7): their weights (J,) in it) and shifts (N, 2) for PSFs (N, K, K) with ``design``
    (N, M) monomials: returns both and the final sum of squared differences."""
    parameters = torch.tensor(parameters, dtype=torch.float64, requires_grad=True)
    shifts = torch.tensor(shifts, dtype=torch.float64, requires_grad=True)
    spanned = None if basis is None else torch.from_numpy(basis)

    def loss_of() -> torch.Tensor:
        polynomials = parameters if spanned is None else torch.tensordot(parameters, spanned, 1)
        return ((_model(pupil, design @ polynomials, shifts) - target) ** 2).sum()

    optimiser = lbfgs([parameters, shifts], iterations)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = loss_of()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        loss = float(loss_of())
    return parameters.detach().numpy(), shifts.detach().numpy(), loss


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


def _seidel_starts(
    basis: np.ndarray, shifts: np.ndarray, start: tuple[PupilField, np.ndarray] | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Weights of :data:`SEIDEL` (J,) and shifts: one per
    :data:`~coordgate.optics.calibration.pupil.STARTS` (its defocus and spherical
    constant), and the projection on ``basis`` (the Seidel form's, :func:`_basis`) of a
    fitted ``start`` field (with its shifts)."""
    names = [name for name, _ in SEIDEL]
    starts = []
    for defocus, spherical in STARTS:
        weights = np.zeros(len(SEIDEL))
        weights[names.index("defocus")], weights[names.index("spherical")] = defocus, spherical
        starts.append((weights, shifts))
    if start is not None:
        field, start_shifts = start
        polynomials = _with_pedestal(field.polynomials, field.pedestal)
        starts.append((_weights(polynomials, basis), start_shifts))
    return starts


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
    form: str = "polynomial",
    start: tuple[PupilField, np.ndarray] | None = None,
) -> tuple[PupilField, np.ndarray, np.ndarray]:
    """Fit the pupil field to PSFs (N, K, K) at normalised positions (N, 2) (y, x).

    anchors (A, 2), anchor_coefficients (A, len(ABERRATIONS)): single-PSF pupil fits
    the anchor start is made of (even terms up to the twin sign); the grown starts are the
    others (see the module docstring). shifts (N, 2) px: where each PSF's centre is
    thought to be, relative to its centre pixel (None: there). form: one of
    :data:`FORMS`; the Seidel form starts from the
    :data:`~coordgate.optics.calibration.pupil.STARTS` and from ``start`` (a fitted field
    and its shifts, projected on the form), not from the anchors. Returns the field, each
    PSF's fitted shift (N, 2) px (PSF ``i``'s chief ray is at its centre plus it) and
    each PSF's pedestal (N,): the share of its window's sum that its background took
    too much (see the module docstring).
    """
    check_pupil_scale(pupil_scale)
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
        raise ValueError(f"degree must be a non-negative integer, got {degree!r}")
    basis = _basis(form, degree)
    target = torch.as_tensor(np.asarray(psfs), dtype=torch.float64)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    design = torch.from_numpy(monomials(positions, degree))
    needed = design.shape[1] if basis is None else len(basis)
    if len(positions) < needed:
        raise ValueError(
            f"a degree-{degree} {form} pupil field needs at least {needed} PSFs, "
            f"got {len(positions)}"
        )
    pupil = PupilFit(target.shape[-1], pupil_scale)
    shifts = np.zeros((len(target), 2)) if shifts is None else np.asarray(shifts, np.float64)
    if basis is None:
        anchored = _signed_start(np.asarray(anchors), np.asarray(anchor_coefficients), degree)
        starts = [
            (_with_pedestal(anchored), shifts),
            *_grown_starts(pupil, target, positions, degree, shifts),
        ]
        iterations = _ITERATIONS
    else:
        starts, iterations = _seidel_starts(basis, shifts, start), _STAGE_ITERATIONS
    fits = [
        _least_squares(pupil, target, design, parameters, start_shifts, iterations, basis)
        for parameters, start_shifts in starts
    ]
    parameters, shifts, _ = min(fits, key=lambda fit: fit[2])
    parameters, shifts, _ = _least_squares(
        pupil, target, design, parameters, shifts, _POLISH, basis
    )
    polynomials = _expand(parameters, basis)
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
        form=form,
        pedestal=polynomials[:, -1],
    )
    return field, shifts, design.numpy() @ polynomials[:, -1]
