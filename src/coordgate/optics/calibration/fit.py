"""From bead frames to a PSF field: extraction, registration, the smooth fit, rejections.

:func:`calibrate` runs, over all frames of one instrument (one sensor size):

1. :func:`~coordgate.optics.calibration.beads.find_beads` on each frame;
2. ``doublet``: beads brighter than ``max_flux_ratio`` times the median bead (two beads
   closer than the PSF look like one bright bead);
3. a few rounds of: cut each bead's ``K`` x ``K`` PSF at its current sub-pixel centre
   (Fourier shift), normalise it to unit sum, fit the smooth low-rank field
   (:func:`~coordgate.optics.calibration.model.fit_smooth_field`), reject as
   ``shape_outlier`` the beads whose residual against the field is far above the others'
   (robust z-score above ``outlier_sigma``), and register every bead to the field's PSF
   at its position (Gauss-Newton on the sub-pixel shift, which is far less noisy than a
   centroid);
4. with ``centre="chief_ray"`` (the default), move every bead to its chief ray: the
   diffraction pupil is fitted to the field's PSFs on a 5 x 5 grid of anchor points
   (:mod:`~coordgate.optics.calibration.pupil`), the offsets between centroid and chief
   ray are interpolated to the beads (thin-plate spline), and the field is fitted once
   more to the re-centred PSFs (rank and smoothing kept);
   With ``field_model="pupil"`` (or ``"auto"``, when it predicts held-out beads as well as
   the low-rank field), the anchors' Zernike coefficients instead start a fit of the pupil
   field (:mod:`~coordgate.optics.calibration.pupil_field`: each aberration a quadratic
   polynomial of the position) to all beads; each bead moves to its fitted chief ray.
   On the benchmark's coma lens (astigmatism 0.15, coma 0.1) the low-rank field's error
   was 17.7 % median, 30-35 % in the outer ring: about 60 beads, 1-4 within 0.3 of each
   corner, per-bead PSFs 16.5 % from the truth (noise), and even noise-free PSFs at the
   same positions extrapolated to 12-18 % in the corners. The pupil field: 2-3 %;
5. sample the field onto a ``grid_size`` x ``grid_size`` grid of normalised sensor
   positions, edges included: a :class:`~coordgate.optics.MeasuredField`;
6. check it (:mod:`~coordgate.optics.calibration.selfcheck`): held-out beads per region
   against their noise floor, and the PSF energy outside the window.

Where a PSF "is": beads lie at unknown positions, so their images cannot reveal a
shift of the PSF that varies smoothly over the sensor (distortion). The registration
rounds centre each PSF on its intensity centroid (each round moves every bead by the
centroid of the fitted PSF at its position); blurring with such PSFs moves no object's
centroid. But the centroid is not the chief ray when the lens has coma: it follows the
pupil-averaged wavefront slope, and balanced coma has a mean slope (see
:mod:`~coordgate.optics.calibration.pupil`). The truth PSFs of ``LensField`` (coma 0.1
RMS waves) have their centroid 0.31 px from the chief ray in a 21 px window, 0.69 px
over the whole plane, and a 0.25 px shift of these PSFs is a 28 % relative error: so the
final step finds the chief ray from the PSF's shape. When the pupil model does not fit
(median residual above 20 %), the PSFs stay centroid-centred and the summary says so.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
import torch

from coordgate.optics.calibration.beads import (
    DETECTION_SIGMA,
    MARGIN,
    REJECTION_REASONS,
    Bead,
    centroids,
    find_beads,
    fourier_shift,
)
from coordgate.optics.calibration.model import (
    DEFAULT_MAX_EXTRAPOLATION,
    SmoothField,
    fit_smooth_field,
    minimum_beads,
)
from coordgate.optics.calibration.pupil import check_pupil_scale, chief_ray_offsets
from coordgate.optics.calibration.pupil_field import (
    DEFAULT_DEGREE,
    SEIDEL,
    PupilField,
    fit_pupil_field,
    monomials,
)
from coordgate.optics.calibration.selfcheck import (
    held_out_residuals,
    noise_floors,
    regional_map,
    summarise,
    truncation,
)
from coordgate.optics.field import MeasuredField
from coordgate.optics.psf import ABERRATIONS

__all__ = [
    "CALIBRATION_GRID_SIZE",
    "DEFAULT_MAX_FLUX_RATIO",
    "DEFAULT_OUTLIER_SIGMA",
    "DEFAULT_SNR",
    "Calibration",
    "calibrate",
    "sample_field",
    "sensor_positions",
]

DEFAULT_SNR = 20.0
#: Points per axis of the grid a calibrated field is sampled on. Between grid points the
#: field interpolates its PSFs, which costs accuracy where they change fast: the true pupil
#: polynomials of the benchmark's strongest lens (everything at its maximum, 21 px),
#: sampled on 17 x 17, are 6.5 % from the truth (median over the 5 x 5 check grid in
#: [-0.9, 0.9]^2; the project's default lens 4.7 %), on 33 x 33 1.8 % (2.0 %).
CALIBRATION_GRID_SIZE = 33
DEFAULT_MAX_FLUX_RATIO = 1.6
DEFAULT_OUTLIER_SIGMA = 5.0
# Fit / register rounds; Gauss-Newton steps per registration.
_ROUNDS = 4
_NEWTON_STEPS = 4
#: How PSFs are centred: on the chief ray found by a pupil fit, or on their centroid.
Centre = Literal["chief_ray", "centroid"]
CENTRES: tuple[Centre, ...] = get_args(Centre)
# Anchor points per axis of the chief-ray fit; the median relative residual above which
# the diffraction model is taken not to describe the PSFs.
_ANCHORS = 5
_MAX_PUPIL_RESIDUAL = 0.2
#: Which field is sampled: the pupil field, the data-driven low-rank field, or "auto":
#: the pupil field when its median held-out residual is within ``_PUPIL_TOLERANCE`` times
#: the low-rank field's.
FieldModel = Literal["auto", "pupil", "low_rank"]
FIELD_MODELS: tuple[FieldModel, ...] = get_args(FieldModel)
_PUPIL_TOLERANCE = 1.25
# "auto" tries the pupil field from this many used beads per polynomial term on: with
# fewer, its polynomials are barely determined between far-apart beads.
_PUPIL_BEADS_PER_TERM = 2


@dataclass
class Calibration:
    """A calibrated field and how it was obtained.

    field: the sampled :class:`MeasuredField`; model: the field model it was sampled
    from (a :class:`PupilField` or a :class:`SmoothField`); low_rank: the data-driven
    low-rank field (the registration's, and ``model`` itself when that is low-rank);
    beads: every detected bead's record (``reason`` None for the used ones); psfs
    (N, K, K) and positions (N, 2) normalised (y, x): the measured PSFs the model was
    fitted to; sensor_size: (H, W) px; settings: the parameters used; check: the
    self-check record (:mod:`~coordgate.optics.calibration.selfcheck`; None for a grid).
    """

    field: MeasuredField
    model: SmoothField | PupilField
    beads: list[Bead]
    psfs: np.ndarray
    positions: np.ndarray
    sensor_size: tuple[int, int]
    low_rank: SmoothField | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    source: str = "beads"
    check: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.low_rank is None and isinstance(self.model, SmoothField):
            self.low_rank = self.model
        if self.field.sensor_size is None:  # the field's positions mean this sensor's pixels
            f = self.field
            self.field = MeasuredField(f.psfs, f.y, f.x, sensor_size=self.sensor_size)

    @property
    def model_kind(self) -> str:
        """``"pupil"`` or ``"low_rank"``: which model the field was sampled from."""
        return "pupil" if isinstance(self.model, PupilField) else "low_rank"

    def counts(self) -> dict[str, Any]:
        """Beads found, used, and rejected by reason (every reason listed)."""
        reasons = Counter(b.reason for b in self.beads if b.reason is not None)
        return {
            "found": len(self.beads),
            "used": sum(b.reason is None for b in self.beads),
            "rejected": {reason: reasons.get(reason, 0) for reason in REJECTION_REASONS},
        }

    def centre_rule(self) -> str:
        """Where each PSF's centre pixel is, in words."""
        chief_ray = self.settings.get("chief_ray") or {}
        if chief_ray.get("used"):
            return "each PSF's chief ray (a fitted pupil's zero-tilt wavefront) is at its centre"
        return "each PSF's intensity centroid is at its centre pixel"

    def _inside(self) -> str:
        if self.model_kind == "pupil":
            return "Zernike polynomials of the pupil field are evaluated"
        return "thin-plate spline interpolates"

    def summary(self) -> dict[str, Any]:
        """JSON-able description: counts, rank, smoothing, residuals, extrapolation, beads."""
        grid_y, grid_x = self.field.grid_positions()
        yy, xx = np.meshgrid(grid_y.numpy(), grid_x.numpy(), indexing="ij")
        outside = self.model.extrapolation(yy, xx)
        used = [b.residual for b in self.beads if b.reason is None]
        h, w = self.sensor_size
        return {
            "source": self.source,
            "sensor_size": [h, w],
            "psf_size": self.field.psf_size,
            "grid_size": list(self.field.psfs.shape[:2]),
            "beads": self.counts(),
            "model": self.model_kind,
            "rank": self.low_rank.rank,
            "smoothing": self.low_rank.smoothing,
            "cv_error": self.low_rank.cv_error,
            "residual": {
                "median": float(np.median(used)) if used else math.nan,
                "max": float(np.max(used)) if used else math.nan,
                "definition": "||measured - fitted|| / ||fitted|| per used bead (unit-sum PSFs)",
            },
            "extrapolation": {
                "rule": (
                    f"inside the convex hull of the used beads the {self._inside()}; "
                    "outside, its trend is followed for at most "
                    f"{self.model.max_extrapolation} (normalised units), farther points "
                    "take the PSF at that distance toward the nearest hull point"
                ),
                "max_extrapolation": self.model.max_extrapolation,
                "grid_points_outside_hull": int((outside > 0).sum()),
                "grid_points": int(outside.size),
                "max_distance": float(outside.max()),
            },
            "centre": self.centre_rule(),
            "self_check": self.check,
            "settings": self.settings,
            "per_bead": [
                {
                    **b.as_dict(),
                    "y": float((2 * b.row + 1) / h - 1),
                    "x": float((2 * b.col + 1) / w - 1),
                }
                for b in self.beads
            ],
        }


def sensor_positions(rows: np.ndarray, cols: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pixel positions -> normalised sensor coordinates (N, 2) (y, x), edges at +-1."""
    h, w = size
    return np.stack([(2 * np.asarray(rows) + 1) / h - 1, (2 * np.asarray(cols) + 1) / w - 1], 1)


def sample_field(model: SmoothField | PupilField, grid_size: int) -> MeasuredField:
    """The model sampled on a grid_size x grid_size grid spanning [-1, 1], edges included."""
    if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 2:
        raise ValueError(f"grid_size must be an integer >= 2, got {grid_size!r}")
    line = np.linspace(-1, 1, grid_size)
    yy, xx = np.meshgrid(line, line, indexing="ij")
    k = model.psf_size
    psfs = model.psfs_at(yy.ravel(), xx.ravel()).reshape(grid_size, grid_size, k, k)
    return MeasuredField(torch.from_numpy(psfs), line, line)


def _cut(windows: np.ndarray, shifts: np.ndarray | None, k: int) -> np.ndarray:
    """Each bead's K x K PSF, its centre at the window centre plus ``shift`` (None: the
    window's centre pixel, no resampling), unit sum."""
    crop = slice(MARGIN, MARGIN + k)
    psfs = (windows if shifts is None else fourier_shift(windows, -shifts))[:, crop, crop]
    total = psfs.sum(axis=(-2, -1), keepdims=True)
    return psfs / np.where(total > 0, total, 1.0)


def _register(windows: np.ndarray, shifts: np.ndarray, models: np.ndarray) -> np.ndarray:
    """Sub-pixel shifts that best align each window with flux * its model PSF (Gauss-Newton).

    windows (N, W, W), shifts (N, 2) start values, models (N, K, K) -> shifts (N, 2).
    """
    n, size = windows.shape[:2]
    k = models.shape[-1]
    crop = slice(MARGIN, MARGIN + k)
    spectrum = np.fft.fft2(windows)
    ky = np.fft.fftfreq(size)[:, None]
    kx = np.fft.fftfreq(size)[None, :]
    model = models.reshape(n, -1)
    shifts = shifts.copy()
    for _ in range(_NEWTON_STEPS):
        # The window translated by -shift, and its derivatives with respect to the shift.
        phase = spectrum * np.exp(
            2j * np.pi * (shifts[:, 0, None, None] * ky + shifts[:, 1, None, None] * kx)
        )
        parts = [phase, phase * (2j * np.pi * ky), phase * (2j * np.pi * kx)]
        data, dy, dx = (np.fft.ifft2(p).real[:, crop, crop].reshape(n, -1) for p in parts)
        flux = (data * model).sum(1) / (model * model).sum(1)
        residual = data - flux[:, None] * model
        jacobian = np.stack([dy, dx], axis=-1)
        normal = np.einsum("npi,npj->nij", jacobian, jacobian) + 1e-12 * np.eye(2)
        step = -np.linalg.solve(normal, np.einsum("npi,np->ni", jacobian, residual)[..., None])
        shifts = shifts + np.clip(step[..., 0], -0.5, 0.5)
    return np.clip(shifts, -(MARGIN - 1), MARGIN - 1)


def _residuals(psfs: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    n = len(psfs)
    difference = (psfs - fitted).reshape(n, -1)
    return np.linalg.norm(difference, axis=1) / np.linalg.norm(fitted.reshape(n, -1), axis=1)


def _outliers(residuals: np.ndarray, sigma: float) -> np.ndarray:
    """Residuals far above the rest: robust z-score above sigma and 1.5x the median."""
    median = np.median(residuals)
    spread = 1.4826 * np.median(np.abs(residuals - median))
    return (residuals - median > sigma * max(spread, 1e-12)) & (residuals > 1.5 * median)


def _chief_ray(model: SmoothField, pupil_scale: float) -> tuple[dict[str, Any], Any, tuple]:
    """Chief-ray offsets of the fitted field on an anchor grid: a summary, a smooth map
    and the anchors (A, 2) with their fitted Zernike coefficients (A, 6).

    The diffraction model is fitted to the field's PSFs at ``_ANCHORS`` x ``_ANCHORS``
    points spanning the sensor (denoised by the field, so one fit per point suffices);
    a thin-plate spline of the offsets is the map: positions (N, 2) -> offsets (N, 2)
    px. The summary's ``used`` is False when the model does not describe the PSFs
    (median fit residual above ``_MAX_PUPIL_RESIDUAL``); the PSFs then stay centred on
    their centroids.
    """
    from scipy.interpolate import RBFInterpolator

    line = np.linspace(-1, 1, _ANCHORS)
    anchors = np.stack([a.ravel() for a in np.meshgrid(line, line, indexing="ij")], 1)
    offsets, coefficients, residual = chief_ray_offsets(model.psfs_at(*anchors.T), pupil_scale)
    used = bool(np.median(residual) <= _MAX_PUPIL_RESIDUAL)
    spline = RBFInterpolator(anchors, offsets, kernel="thin_plate_spline", smoothing=1e-3)
    summary = {
        "used": used,
        "pupil_scale": pupil_scale,
        "anchors": int(len(anchors)),
        "fit_residual_median": float(np.median(residual)),
        "fit_residual_max": float(residual.max()),
        "offset_max_px": float(np.abs(offsets).max()),
    }
    return summary, spline, (anchors, coefficients)


def _without_pedestals(state: _BeadFit, pedestals: np.ndarray) -> np.ndarray:
    """The windows with the active beads' pedestals (the pupil fit's shares of each K x K
    window's sum that the local background took too much: PSF wings in its ring) added
    back: each is then the pupil's PSF times a flux."""
    crop = slice(MARGIN, MARGIN + state.psf_size)
    sums = state.windows[state.active][:, crop, crop].sum(axis=(-2, -1))
    windows = state.windows.copy()
    windows[state.active] += (sums * pedestals / (1 - pedestals) / state.psf_size**2)[:, None, None]
    return windows


def _pupil_summary(
    pupil: PupilField,
    pedestals: np.ndarray,
    pupil_held_out: np.ndarray,
    low_rank_held_out: np.ndarray,
    forms: dict[str, float],
) -> dict[str, Any]:
    """The pupil field's fit: residuals beside the low-rank field's, and whether it is better.

    Better: its median held-out residual (:func:`~coordgate.optics.calibration.selfcheck.
    held_out_residuals`) is at most ``_PUPIL_TOLERANCE`` times the low-rank field's. The
    fit residuals would favour the flexible low-rank field, which fits the noise too: on
    a 15 px test lens (astigmatism 0.3, coma 0.25) it fitted the beads to 3.4 % against
    the pupil's 4.8 %, yet its field was 33 % from the truth and the pupil's 1.3 %.
    ``forms``: the median held-out residual of each pupil form fitted.
    """
    held, low_rank = float(np.median(pupil_held_out)), float(np.median(low_rank_held_out))
    return {
        "degree": pupil.degree,
        "form": pupil.form,
        "held_out_residual_median_by_form": forms,
        "pupil_scale": pupil.pupil_scale,
        "fit_residual_median": float(np.median(pupil.residuals)),
        "fit_residual_max": float(pupil.residuals.max()),
        "pedestal_median": float(np.median(pedestals)),
        "pedestal_max": float(np.abs(pedestals).max()),
        "held_out_residual_median": held,
        "low_rank_held_out_residual_median": low_rank,
        "better": bool(held <= _PUPIL_TOLERANCE * low_rank),
        "aberrations": list(ABERRATIONS),
        "polynomials": pupil.polynomials.tolist(),
    }


def _refitter(model: SmoothField | PupilField, fit, psfs: np.ndarray, positions: np.ndarray):
    """A held-out refit of ``model`` to ``psfs[mask]`` at ``positions[mask]``: the pupil
    field from its own solution, the low-rank field with its smoothing and its rank (or as
    high as the fewer beads of a fold allow, two per eigen-PSF)."""
    if isinstance(model, PupilField):
        return lambda mask: model.refit(psfs[mask], positions[mask])
    return lambda mask: fit(
        psfs[mask],
        positions[mask],
        rank=max(1, min(model.rank, int(mask.sum()) // 2)),
        smoothing=model.smoothing,
    )


def _too_few(beads: list[Bead], needed: int, k: int, rank: int | None) -> ValueError:
    """The error for too few usable beads, naming the likely cause."""
    counts = Counter(b.reason for b in beads)
    usable = counts.get(None, 0)
    detail = ", ".join(f"{r}: {counts[r]}" for r in REJECTION_REASONS if counts.get(r))
    what = f"rank {rank}" if rank else "a smooth field"
    base = f"{len(beads)} beads found, {usable} usable ({detail or 'none rejected'})"
    if counts.get("saturated") and counts["saturated"] == len(beads) - counts.get("border", 0):
        return ValueError(
            f"all {counts['saturated']} beads inside the frame are saturated: lower the "
            "exposure or the illumination, or give the true --saturation level"
        )
    overlaps = counts.get("overlap", 0)
    if overlaps and overlaps >= max(counts.get(r, 0) for r in REJECTION_REASONS):
        return ValueError(
            f"--psf-size {k} is too large for the bead spacing: {base}; {what} needs "
            f"{needed}. Use a smaller --psf-size (or --min-separation), or a sparser sample"
        )
    return ValueError(f"too few beads: {base}; {what} needs at least {needed}")


def _check_frames(frames: Any, psf_size: int) -> np.ndarray:
    """Frames as float64 (F, H, W), refused when not finite or too small for the PSF size."""
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3 or frames.size == 0:
        raise ValueError(f"frames must be (H, W) or (F, H, W), got shape {frames.shape}")
    if not np.isfinite(frames).all():
        raise ValueError("bead frames must be finite (no NaN or infinite pixels)")
    odd = isinstance(psf_size, int) and not isinstance(psf_size, bool) and psf_size % 2 == 1
    if not odd or psf_size < 3:
        raise ValueError(f"psf_size must be an odd integer >= 3, got {psf_size!r}")
    if psf_size + 2 * MARGIN > min(frames.shape[1:]):
        raise ValueError(
            f"--psf-size {psf_size} does not fit a {frames.shape[1]}x{frames.shape[2]} frame "
            f"with its {MARGIN} px registration margin"
        )
    return frames


def _extract(
    frames: np.ndarray,
    psf_size: int,
    snr: float,
    min_separation: float | None,
    saturation: float | None,
) -> tuple[list[Bead], np.ndarray, np.ndarray, list[int]]:
    """Beads of all frames: records, windows (N, W, W), integer centres (N, 2) and the
    indices of the N records the windows belong to."""
    beads, windows, centres, kept = [], [], [], []
    for index, frame in enumerate(frames):
        found = find_beads(
            frame,
            psf_size,
            frame_index=index,
            snr=snr,
            min_separation=min_separation,
            saturation=saturation,
        )
        kept += [len(beads) + i for i in found.kept]
        beads += found.beads
        windows.append(found.windows)
        centres.append(found.centres)
    if not beads:
        raise ValueError(
            f"no beads found: no object stands {DETECTION_SIGMA:g} x the noise above the "
            f"background in {len(frames)} frame(s)"
        )
    return beads, np.concatenate(windows), np.concatenate(centres).astype(np.float64), kept


def _check_options(
    centre: str,
    field_model: str,
    pupil_scale: float,
    snr: float,
    max_flux_ratio: float,
    outlier_sigma: float,
) -> None:
    if centre not in CENTRES:
        raise ValueError(f"centre must be one of {CENTRES}, got {centre!r}")
    if field_model not in FIELD_MODELS:
        raise ValueError(f"field_model must be one of {FIELD_MODELS}, got {field_model!r}")
    if field_model == "pupil" and centre != "chief_ray":
        raise ValueError(
            "the pupil field centres every PSF on its chief ray: use centre='chief_ray', "
            "or field_model='low_rank' for centroid-centred PSFs"
        )
    check_pupil_scale(pupil_scale)
    if not (snr > 0 and max_flux_ratio > 1 and outlier_sigma > 0):
        raise ValueError(
            f"need snr > 0, max_flux_ratio > 1 and outlier_sigma > 0, got {snr}, "
            f"{max_flux_ratio}, {outlier_sigma}"
        )


def _mark_doublets(beads: list[Bead], kept: list[int], max_flux_ratio: float) -> np.ndarray:
    """Reject as doublets the kept beads much brighter than the median; returns which
    kept beads are still usable (bool, one per kept bead)."""
    fluxes = np.array([beads[i].flux for i in kept])
    if len(kept) >= 3:
        for i, flux in zip(kept, fluxes):
            if flux > max_flux_ratio * np.median(fluxes):
                beads[i].reason = "doublet"
    return np.array([beads[i].reason is None for i in kept], dtype=bool)


@dataclass
class _BeadFit:
    """The kept beads' windows (N, W, W), integer centres (N, 2) and sub-pixel ``shifts``
    (N, 2) on a sensor of ``size``; ``active``: those the field is fitted to; ``psfs`` /
    ``positions``: the K×K PSFs cut at the shifts and their normalised sensor positions."""

    windows: np.ndarray
    centres: np.ndarray
    size: tuple[int, ...]
    psf_size: int
    shifts: np.ndarray
    active: np.ndarray
    psfs: np.ndarray | None = None
    positions: np.ndarray | None = None

    def cut(self) -> None:
        """Cut the PSFs at the current shifts."""
        self.psfs = _cut(self.windows, self.shifts, self.psf_size)
        self.positions = sensor_positions(*(self.centres + self.shifts).T, self.size)


def _fit_and_register(
    state: _BeadFit, beads: list[Bead], kept: list[int], fit, rank: int | None, sigma: float
) -> SmoothField:
    """Alternate fitting the smooth field and registering each bead on it, rejecting shape
    outliers from the second round on; returns the last fit."""
    needed = minimum_beads(rank)

    def fit_active() -> SmoothField:
        if state.active.sum() < needed:
            raise _too_few(beads, needed, state.psf_size, rank)
        state.cut()
        return fit(state.psfs[state.active], state.positions[state.active])

    for round_ in range(_ROUNDS):
        model = fit_active()
        fitted = model.psfs_at(state.positions[:, 0], state.positions[:, 1])
        if round_ > 0:
            active = state.active
            outliers = np.zeros_like(active)
            outliers[active] = _outliers(_residuals(state.psfs[active], fitted[active]), sigma)
            for j in np.flatnonzero(outliers):
                beads[kept[j]].reason = "shape_outlier"
            state.active = active & ~outliers
        state.shifts = _register(state.windows, state.shifts, fitted) + centroids(fitted)
    return fit_active()


def _centre_on_chief_ray(
    state: _BeadFit,
    model: SmoothField,
    fit,
    *,
    field_model: str,
    degree: int,
    pupil_scale: float,
    max_extrapolation: float,
) -> tuple[SmoothField | PupilField, SmoothField, dict[str, Any], dict[str, Any] | None]:
    """Move every PSF's centre to its chief ray and choose the field model: returns
    (model, the low-rank field, the chief-ray record, the pupil fit's summary or None)."""
    low_rank, active = model, state.active
    chief_ray, offsets_at, (anchors, coefficients) = _chief_ray(model, pupil_scale)
    few = active.sum() < _PUPIL_BEADS_PER_TERM * monomials(np.zeros((1, 2)), degree).shape[1]
    summary = None
    if field_model == "pupil" or (field_model == "auto" and not few):
        positions = state.positions[active]
        # The pupil model translates its PSFs exactly (a phase ramp), so it is fitted to
        # the windows as cut, not to windows already shifted by interpolation.
        raw = _cut(state.windows[active], None, state.psf_size)
        fitted = partial(
            _pupil_candidate, state, fit, raw, anchors, coefficients, degree=degree,
            pupil_scale=pupil_scale, max_extrapolation=max_extrapolation,
        )  # fmt: skip
        candidates = [fitted("polynomial", None)]
        if degree >= 2 and active.sum() >= len(SEIDEL):
            first = candidates[0]
            candidates.append(fitted("seidel", (first.field, first.shifts)))
        chosen = _simplest_form(candidates)
        summary = _pupil_summary(
            chosen.field,
            chosen.pedestals,
            chosen.held_out,
            held_out_residuals(
                state.psfs[active], positions, _refitter(model, fit, state.psfs[active], positions)
            ),
            {c.field.form: float(np.median(c.held_out)) for c in candidates},
        )
        if field_model == "pupil" or summary["better"]:
            # Each used bead moves to its chief ray; the rejected ones keep their shift.
            state.shifts[active] = chosen.shifts
            state.windows = chosen.corrected
            state.cut()
            return chosen.field, low_rank, chief_ray, summary
    if chief_ray["used"]:
        # One more fit of the beads re-centred on the chief ray, rank and smoothing kept.
        state.shifts = state.shifts + offsets_at(state.positions)
        state.cut()
        model = fit(
            state.psfs[active], state.positions[active], rank=model.rank, smoothing=model.smoothing
        )
    return model, model, chief_ray, summary


class _PupilCandidate(NamedTuple):
    """One pupil field fitted to the active beads: the field, their shifts (N, 2) and
    pedestals (N,), every window with the pedestals added back, the held-out residuals (N,)."""

    field: PupilField
    shifts: np.ndarray
    pedestals: np.ndarray
    corrected: np.ndarray
    held_out: np.ndarray


def _pupil_candidate(
    state: _BeadFit,
    fit,
    raw: np.ndarray,
    anchors: np.ndarray,
    coefficients: np.ndarray,
    form: str,
    start: tuple[PupilField, np.ndarray] | None,
    *,
    degree: int,
    pupil_scale: float,
    max_extrapolation: float,
) -> _PupilCandidate:
    """The pupil field of ``form`` fitted to the active beads' windows as cut (``raw``)."""
    active = state.active
    pupil, shifts, pedestals = fit_pupil_field(
        raw, state.positions[active], anchors, coefficients, shifts=state.shifts[active],
        degree=degree, pupil_scale=pupil_scale, max_extrapolation=max_extrapolation,
        form=form, start=start,
    )  # fmt: skip
    corrected = _without_pedestals(state, pedestals)
    psfs = _cut(corrected[active], shifts, state.psf_size)
    positions = state.positions[active]
    held_out = held_out_residuals(psfs, positions, _refitter(pupil, fit, psfs, positions))
    return _PupilCandidate(pupil, shifts, pedestals, corrected, held_out)


def _simplest_form(candidates: list[_PupilCandidate]) -> _PupilCandidate:
    """The last (simplest) of the :func:`_pupil_candidate` fits unless the first (the
    polynomials) predicts the same held-out beads better by more than twice the standard
    error of their paired differences: held-out residuals of beads this noisy differ by a
    few percent between equally good fits, and the polynomials' extra freedom, unseen by
    the beads, is where the field goes wrong between and beyond them."""
    first, last = candidates[0], candidates[-1]
    gains = np.asarray(last.held_out) - np.asarray(first.held_out)
    if len(gains) < 2:
        return last
    significant = gains.mean() > 2 * gains.std(ddof=1) / np.sqrt(len(gains))
    return first if significant else last


def _self_check(
    model: SmoothField | PupilField,
    fit,
    psfs: np.ndarray,
    positions: np.ndarray,
    used: list[Bead],
    pupil: dict[str, Any] | None,
) -> dict[str, Any]:
    """The self-check of the fitted field on the used beads' PSFs (N, K, K) at positions
    (N, 2); see :mod:`~coordgate.optics.calibration.selfcheck`. The truncation check
    uses the pupil fit (``pupil``: its summary) even when the low-rank field was chosen;
    without one (``centre="centroid"`` or too few beads) it is skipped."""
    k = psfs.shape[-1]
    truncated = None
    if pupil is not None:
        polynomials = np.array(pupil["polynomials"])

        def aberrations_at(y: np.ndarray, x: np.ndarray) -> np.ndarray:
            return monomials(np.stack([y, x], 1), pupil["degree"]) @ polynomials

        truncated = truncation(aberrations_at, k, pupil["pupil_scale"])
    fluxes = np.array([b.flux for b in used])
    sigmas = fluxes / (np.array([b.snr for b in used]) * k)
    fitted = model.psfs_at(positions[:, 0], positions[:, 1])
    residuals = held_out_residuals(psfs, positions, _refitter(model, fit, psfs, positions))
    return summarise(regional_map(positions, residuals, noise_floors(fitted, fluxes, sigmas)),
                     truncated, k)  # fmt: skip


def calibrate(
    frames: Any,
    psf_size: int,
    *,
    rank: int | None = None,
    smoothing: float | None = None,
    snr: float = DEFAULT_SNR,
    min_separation: float | None = None,
    saturation: float | None = None,
    max_flux_ratio: float = DEFAULT_MAX_FLUX_RATIO,
    outlier_sigma: float = DEFAULT_OUTLIER_SIGMA,
    grid_size: int = CALIBRATION_GRID_SIZE,
    max_extrapolation: float = DEFAULT_MAX_EXTRAPOLATION,
    centre: Centre = "chief_ray",
    pupil_scale: float = 1.0,
    field_model: FieldModel = "auto",
    degree: int = DEFAULT_DEGREE,
) -> Calibration:
    """Calibrate a PSF field from bead frames (F, H, W) or (H, W) of one sensor.

    psf_size: K, odd; rank / smoothing: of the smooth field (None: cross-validated);
    snr: least bead SNR; min_separation: least distance between beads, px (default K/2);
    saturation: clipping level (default: detected per frame); max_flux_ratio: beads
    brighter than this times the median are doublets; outlier_sigma: robust z-score of a
    shape outlier; grid_size: points per axis of the sampled field; centre: where each
    PSF's centre pixel is, ``"chief_ray"`` (a fit of the diffraction pupil, sampled at
    ``pupil_scale``, 1 = Nyquist; see :mod:`~coordgate.optics.calibration.pupil`) or
    ``"centroid"``; field_model: the field sampled, ``"pupil"`` (Zernike polynomials of
    ``degree`` in the position, :mod:`~coordgate.optics.calibration.pupil_field`; needs
    the chief-ray centre), ``"low_rank"`` (:mod:`~coordgate.optics.calibration.model`)
    or ``"auto"``: the pupil field unless the diffraction model predicts held-out beads
    worse than the low-rank field or there are fewer than two used beads per polynomial
    term. The result's ``check`` is the self-check.
    See the module docstring. Raises ``ValueError`` naming the problem when no usable
    field results.
    """
    frames = _check_frames(frames, psf_size)
    _check_options(centre, field_model, pupil_scale, snr, max_flux_ratio, outlier_sigma)
    beads, windows, centres, kept = _extract(frames, psf_size, snr, min_separation, saturation)
    shifts = np.array([[beads[i].row, beads[i].col] for i in kept]).reshape(-1, 2) - centres
    state = _BeadFit(windows, centres, frames.shape[1:], psf_size, shifts,
                     _mark_doublets(beads, kept, max_flux_ratio))  # fmt: skip
    fit = partial(
        fit_smooth_field, rank=rank, smoothing=smoothing, max_extrapolation=max_extrapolation
    )
    model = _fit_and_register(state, beads, kept, fit, rank, outlier_sigma)
    low_rank, chief_ray, pupil_summary = model, None, None
    if centre == "chief_ray":
        model, low_rank, chief_ray, pupil_summary = _centre_on_chief_ray(
            state,
            model,
            fit,
            field_model=field_model,
            degree=degree,
            pupil_scale=pupil_scale,
            max_extrapolation=max_extrapolation,
        )
    psfs, positions, active = state.psfs, state.positions, state.active
    fitted = model.psfs_at(positions[:, 0], positions[:, 1])
    residuals = _residuals(psfs, fitted)
    for j, i in enumerate(kept):
        beads[i].row, beads[i].col = (centres[j] + state.shifts[j]).tolist()
        beads[i].residual = float(residuals[j])
    settings = {
        "snr": snr,
        "min_separation": float(psf_size / 2 if min_separation is None else min_separation),
        "saturation": saturation,
        "max_flux_ratio": max_flux_ratio,
        "outlier_sigma": outlier_sigma,
        "rank": rank,
        "smoothing": smoothing,
        "frames": len(frames),
        "centre": centre,
        "chief_ray": chief_ray,
        "model": field_model,
        "degree": degree,
        "pupil": pupil_summary,
    }
    used = [beads[i] for j, i in enumerate(kept) if active[j]]
    return Calibration(
        field=sample_field(model, grid_size),
        model=model,
        low_rank=low_rank,
        beads=beads,
        psfs=psfs[active],
        positions=positions[active],
        sensor_size=tuple(int(s) for s in state.size),
        settings=settings,
        check=_self_check(model, fit, psfs[active], positions[active], used, pupil_summary),
    )
