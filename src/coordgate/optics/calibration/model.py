"""A smooth, low-rank model of PSFs measured at scattered points of the sensor.

Measured PSFs ``d_i`` (unit sum, ``K`` x ``K``) at normalised positions ``p_i`` are
modelled as ``h(p) = mean + sum_j c_j(p) b_j``:

- ``mean`` and the eigen-PSFs ``b_j`` are the mean and the leading ``rank`` principal
  components of the ``d_i`` (SVD of the centred (N, K*K) matrix): the PSF varies over
  the sensor in a few shapes, and the rest is noise;
- each coefficient ``c_j(p)`` is a *smoothing* thin-plate spline of the beads'
  coefficients over the sensor (:class:`scipy.interpolate.RBFInterpolator`, kernel
  ``r**2 log r`` plus a quadratic trend, affine below ``QUADRATIC_MIN_BEADS`` PSFs,
  smoothing ``lambda``): no symmetry or functional form is assumed, and a large
  ``lambda`` tends to the trend. The trend is quadratic because lens aberrations grow
  with the square of the field radius (field curvature, astigmatism).

``rank`` and ``lambda`` are chosen together by K-fold cross-validation: the pair whose
predictions of the held-out beads' PSFs are closest (sum of squares) wins. Measurement
noise adds the same amount to every candidate's held-out error, so the minimum picks the
model closest to the truth, not the one closest to the noise.

Extrapolation: inside the convex hull of the beads the spline interpolates. Outside
it, the spline's own continuation (its quadratic trend) is followed for at most
``max_extrapolation`` (normalised units) from the hull; farther points take the PSF at
that distance on the straight line to their nearest hull point. Why the trend and not a
held edge: random beads often leave a frame corner empty (0.44 units from the hull in
the benchmark's default-lens frame) where field curvature keeps growing; with an affine
trend held after 0.3 units, the PSF there was the sharp one of the nearest beads, 98 %
relative error against the defocused truth; with the quadratic trend followed up to
1.0 units it is 26 %.

PSFs leave :meth:`SmoothField.psfs_at` non-negative (negative values of the truncated
expansion, which are noise, are set to zero) with unit sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MAX_EXTRAPOLATION",
    "MAX_RANK",
    "MIN_BEADS",
    "QUADRATIC_MIN_BEADS",
    "SMOOTHING_GRID",
    "SmoothField",
    "fit_smooth_field",
    "minimum_beads",
]

#: The fewest PSFs a field is fitted to, whatever the rank.
MIN_BEADS = 6
#: The highest rank cross-validation tries.
MAX_RANK = 24
#: Thin-plate smoothing values cross-validation tries (positions in [-1, 1]).
SMOOTHING_GRID = tuple(float(v) for v in np.logspace(-5, 2, 8))
#: How far (normalised units) the spline's trend is followed beyond the outermost beads.
DEFAULT_MAX_EXTRAPOLATION = 1.0
#: From this many PSFs on, the spline's polynomial trend is quadratic, not affine.
QUADRATIC_MIN_BEADS = 10
_FOLDS = 5


def minimum_beads(rank: int | None) -> int:
    """The fewest PSFs a field of ``rank`` eigen-PSFs is fitted to (two per rank)."""
    return max(MIN_BEADS, 2 * (rank or 1))


class Hull:
    """The convex hull of 2-D points, with clamping of far points toward it."""

    def __init__(self, points: np.ndarray) -> None:
        from scipy.spatial import ConvexHull, QhullError

        try:
            self.vertices = points[ConvexHull(points).vertices]
        except QhullError:
            # Collinear or coincident points: their bounding box (possibly flat) instead.
            (y0, x0), (y1, x1) = points.min(0), points.max(0)
            self.vertices = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]])

    def nearest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest hull point of each point and whether the point is inside (M, 2), (M,)."""
        a = self.vertices
        b = np.roll(a, -1, axis=0)
        edge = b - a
        length2 = np.maximum((edge**2).sum(1), 1e-300)
        t = np.clip(((points[:, None] - a[None]) * edge[None]).sum(-1) / length2, 0, 1)
        foot = a[None] + t[..., None] * edge[None]
        distance = np.linalg.norm(points[:, None] - foot, axis=-1)
        nearest = foot[np.arange(len(points)), distance.argmin(1)]
        # Inside a counter- or clockwise polygon: the same side of every edge.
        cross = edge[None, :, 0] * (points[:, None, 1] - a[None, :, 1]) - edge[None, :, 1] * (
            points[:, None, 0] - a[None, :, 0]
        )
        inside = (cross >= -1e-12).all(1) | (cross <= 1e-12).all(1)
        return nearest, inside

    def clamp(self, points: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
        """Points moved to at most ``reach`` outside the hull; and their distance to it."""
        nearest, inside = self.nearest(points)
        offset = points - nearest
        distance = np.where(inside, 0.0, np.linalg.norm(offset, axis=1))
        scale = np.where(distance > reach, reach / np.maximum(distance, 1e-300), 1.0)
        return np.where(inside[:, None], points, nearest + offset * scale[:, None]), distance


@dataclass
class SmoothField:
    """A fitted model (see the module docstring); evaluate with :meth:`psfs_at`."""

    psf_size: int
    mean: np.ndarray
    basis: np.ndarray
    positions: np.ndarray
    coefficients: np.ndarray
    smoothing: float
    max_extrapolation: float = DEFAULT_MAX_EXTRAPOLATION
    cv_error: float = float("nan")
    cv_table: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._spline = _spline(self.positions, self.coefficients, self.smoothing)
        self._hull = Hull(self.positions)

    @property
    def rank(self) -> int:
        return len(self.basis)

    def extrapolation(self, y: Any, x: Any) -> np.ndarray:
        """Distance (normalised units) of each position outside the beads' hull (0 inside)."""
        points = np.stack([np.ravel(y), np.ravel(x)], axis=1).astype(np.float64)
        return self._hull.clamp(points, self.max_extrapolation)[1]

    def psfs_at(self, y: Any, x: Any) -> np.ndarray:
        """PSFs at normalised positions y, x (M,) -> (M, K, K), non-negative, unit sum."""
        points = np.stack([np.ravel(y), np.ravel(x)], axis=1).astype(np.float64)
        points, _ = self._hull.clamp(points, self.max_extrapolation)
        flat = self.mean + self._spline(points) @ self.basis
        flat = np.clip(flat, 0, None)
        total = flat.sum(1, keepdims=True)
        flat = np.where(total > 0, flat / np.where(total > 0, total, 1), 1.0 / flat.shape[1])
        return flat.reshape(-1, self.psf_size, self.psf_size)


def _spline(positions: np.ndarray, values: np.ndarray, smoothing: float):
    from scipy.interpolate import RBFInterpolator

    degree = 2 if len(positions) >= QUADRATIC_MIN_BEADS else 1
    return RBFInterpolator(
        positions, values, kernel="thin_plate_spline", smoothing=smoothing, degree=degree
    )


def _principal(data: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (P,), leading ``rank`` components (rank, P), coefficients (N, rank) of data."""
    mean = data.mean(0)
    _, _, vt = np.linalg.svd(data - mean, full_matrices=False)
    basis = vt[:rank]
    return mean, basis, (data - mean) @ basis.T


def _cross_validate(
    data: np.ndarray, positions: np.ndarray, ranks: list[int], smoothings: list[float], seed: int
) -> np.ndarray:
    """Held-out sum of squared errors for every (rank, smoothing): (len(ranks), len(smoothings))."""
    n = len(data)
    folds = np.array_split(np.random.default_rng(seed).permutation(n), min(_FOLDS, n))
    errors = np.zeros((len(ranks), len(smoothings)))
    for test in folds:
        train = np.setdiff1d(np.arange(n), test)
        mean, basis, coefficients = _principal(data[train], max(ranks))
        for j, smoothing in enumerate(smoothings):
            predicted = _spline(positions[train], coefficients, smoothing)(positions[test])
            for i, rank in enumerate(ranks):
                fit = mean + predicted[:, :rank] @ basis[:rank]
                errors[i, j] += ((fit - data[test]) ** 2).sum()
    return errors


def fit_smooth_field(
    psfs: np.ndarray,
    positions: np.ndarray,
    *,
    rank: int | None = None,
    smoothing: float | None = None,
    max_extrapolation: float = DEFAULT_MAX_EXTRAPOLATION,
    seed: int = 0,
) -> SmoothField:
    """Fit the smooth low-rank field to PSFs (N, K, K) at normalised positions (N, 2) (y, x).

    rank, smoothing: fixed values, or ``None`` to choose them by cross-validation (rank
    1 to ``MAX_RANK``, smoothing from ``SMOOTHING_GRID``). Raises ``ValueError`` with
    fewer than :func:`minimum_beads` PSFs.
    """
    psfs = np.asarray(psfs, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    n, k = len(psfs), psfs.shape[-1]
    if psfs.ndim != 3 or psfs.shape[1] != k or len(positions) != n:
        raise ValueError(
            f"need PSFs (N, K, K) and positions (N, 2), got {psfs.shape} and {positions.shape}"
        )
    needed = minimum_beads(rank)
    if n < needed:
        what = f"rank {rank}" if rank else "a smooth field"
        raise ValueError(f"{what} needs at least {needed} usable PSFs, got {n}")
    if rank is not None and not (isinstance(rank, int) and 1 <= rank <= min(n - 1, k * k)):
        raise ValueError(f"rank must be an integer from 1 to {min(n - 1, k * k)}, got {rank!r}")
    if smoothing is not None and not (np.isfinite(smoothing) and smoothing >= 0):
        raise ValueError(f"smoothing must be a non-negative number, got {smoothing!r}")
    if not max_extrapolation >= 0:
        raise ValueError(f"max_extrapolation must be >= 0, got {max_extrapolation!r}")
    data = psfs.reshape(n, -1)
    # Cross-validation trains on (folds - 1) / folds of the PSFs: ranks it can fit.
    top = min(MAX_RANK, n - n // min(_FOLDS, n) - 1, k * k)
    ranks = [rank] if rank is not None else list(range(1, max(top, 1) + 1))
    smoothings = [float(smoothing)] if smoothing is not None else list(SMOOTHING_GRID)
    errors = _cross_validate(data, positions, ranks, smoothings, seed)
    i, j = np.unravel_index(errors.argmin(), errors.shape)
    table = [
        {"rank": r, "smoothing": s, "cv_error": float(errors[a, b] / n)}
        for a, r in enumerate(ranks)
        for b, s in enumerate(smoothings)
    ]
    mean, basis, coefficients = _principal(data, ranks[i])
    return SmoothField(
        psf_size=k,
        mean=mean,
        basis=basis,
        positions=positions,
        coefficients=coefficients,
        smoothing=smoothings[j],
        max_extrapolation=float(max_extrapolation),
        cv_error=float(errors[i, j] / n),
        cv_table=table,
    )
