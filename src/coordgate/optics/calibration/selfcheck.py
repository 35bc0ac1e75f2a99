"""The calibration's self-check: how well the field predicts beads it was not fitted to,
region by region, against the noise floor; and whether the PSF fits its window.

*Held-out residuals.* The used beads are split into ``FOLDS`` folds; the field is
refitted without each fold (``refit``: the low-rank field with its rank and smoothing
kept, the pupil field from its own solution) and predicts the fold's PSFs. A bead's
residual is ``||measured - predicted|| / ||predicted||`` (unit-sum PSFs; its sub-pixel
centre is the full fit's, a nuisance of two numbers).

*Noise floor.* What noise alone leaves of a perfect prediction: a bead of flux ``F``
(photo-electrons, or the image's units) on a background of per-pixel noise ``sigma``
has ``K**2 sigma**2 + F`` of noise variance in its window (read and background noise,
and the bead's own photon noise when the image is in photo-electrons), so its floor is
``sqrt(K**2 sigma**2 + F) / (F ||p||)`` for the unit-sum PSF ``p``.

*Regions.* The sensor is cut into ``REGIONS`` x ``REGIONS`` squares of normalised
coordinates; each reports its used beads, the median held-out residual, the median
floor and their ratio (the median of the per-bead ratios). A region is
``poorly_constrained`` with fewer than ``MIN_REGION_BEADS`` beads, ``high_residual``
when the ratio exceeds ``HIGH_RATIO``; the whole calibration is ``"poor"`` when a region
with beads exceeds ``FAR_RATIO``, the field's held-out residual far above the noise.

*Truncation.* The fitted diffraction model, rendered on a window four times as wide,
tells how much of each region's PSF falls outside the ``K`` x ``K`` window; above
``MAX_OUTSIDE`` a warning names the smallest odd size that would hold all but that
fraction. A calibrated PSF is normalised inside its window, so what is cut off is lost
to the field, and the cut wings of neighbouring beads are taken for background.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

__all__ = [
    "FAR_RATIO",
    "FOLDS",
    "HIGH_RATIO",
    "MAX_OUTSIDE",
    "MIN_REGION_BEADS",
    "REGIONS",
    "describe_worst",
    "held_out_residuals",
    "noise_floors",
    "regional_map",
    "summarise",
    "truncation",
]

FOLDS = 3
REGIONS = 3
MIN_REGION_BEADS = 3
#: Held-out residual / noise floor above which a region is flagged, and above which the
#: calibration is called poor.
HIGH_RATIO = 1.5
FAR_RATIO = 2.0
#: The largest fraction of a PSF's energy outside its window that passes unwarned.
MAX_OUTSIDE = 0.05
_WIDEST = 4


class PredictsPSFs(Protocol):
    """A fitted field, as far as the self-check needs one: its PSFs at sensor positions."""

    def psfs_at(self, y: Any, x: Any) -> np.ndarray: ...


def held_out_residuals(
    psfs: np.ndarray,
    positions: np.ndarray,
    refit: Callable[[np.ndarray], PredictsPSFs],
    folds: int = FOLDS,
) -> np.ndarray:
    """Each PSF's residual against a field refitted without its fold: (N, K, K) -> (N,).

    ``refit(mask)`` fits the field to ``psfs[mask]`` at ``positions[mask]``. The folds
    interleave a fixed random order of the beads, so each spans the sensor.

    >>> from coordgate.optics.calibration.model import fit_smooth_field
    >>> rng = np.random.default_rng(0)
    >>> positions = rng.uniform(-1, 1, (30, 2))
    >>> psfs = np.full((30, 5, 5), 1 / 25) + 1e-4 * rng.standard_normal((30, 5, 5))
    >>> refit = lambda m: fit_smooth_field(psfs[m], positions[m], rank=1, smoothing=1.0)
    >>> bool(held_out_residuals(psfs, positions, refit).max() < 0.05)
    True
    """
    n = len(psfs)
    fold = np.empty(n, dtype=int)
    fold[np.random.default_rng(0).permutation(n)] = np.arange(n) % folds
    residuals = np.empty(n)
    for f in range(folds):
        held = fold == f
        predicted = refit(~held).psfs_at(positions[held, 0], positions[held, 1])
        difference = (psfs[held] - predicted).reshape(held.sum(), -1)
        norm = np.linalg.norm(predicted.reshape(held.sum(), -1), axis=1)
        residuals[held] = np.linalg.norm(difference, axis=1) / norm
    return residuals


def noise_floors(psfs: np.ndarray, fluxes: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Relative L2 residual noise alone leaves: (N, K, K), fluxes (N,), sigmas (N,) -> (N,)."""
    k = psfs.shape[-1]
    norms = np.linalg.norm(psfs.reshape(len(psfs), -1), axis=1)
    return np.sqrt(k * k * sigmas**2 + np.maximum(fluxes, 0)) / (fluxes * norms)


def _region_of(positions: np.ndarray, regions: int) -> np.ndarray:
    """Region (row, col) index of each normalised position (N, 2) -> (N, 2)."""
    return np.clip(((positions + 1) / 2 * regions).astype(int), 0, regions - 1)


def _bounds(index: int, regions: int) -> list[float]:
    return [round(-1 + 2 * index / regions, 3), round(-1 + 2 * (index + 1) / regions, 3)]


def regional_map(
    positions: np.ndarray,
    residuals: np.ndarray,
    floors: np.ndarray,
    regions: int = REGIONS,
) -> list[dict[str, Any]]:
    """One record per region, rows top to bottom: bounds, beads, held-out residual, floor,
    their ratio (NaN without beads) and flags (see the module docstring)."""
    index = _region_of(positions, regions)
    records = []
    for row in range(regions):
        for col in range(regions):
            inside = (index[:, 0] == row) & (index[:, 1] == col)
            count = int(inside.sum())
            nan = float("nan")
            ratio = float(np.median(residuals[inside] / floors[inside])) if count else nan
            flags = (["poorly_constrained"] if count < MIN_REGION_BEADS else []) + (
                ["high_residual"] if count and ratio > HIGH_RATIO else []
            )
            records.append(
                {
                    "region": [row, col],
                    "y": _bounds(row, regions),
                    "x": _bounds(col, regions),
                    "beads": count,
                    "held_out_residual": float(np.median(residuals[inside])) if count else nan,
                    "noise_floor": float(np.median(floors[inside])) if count else nan,
                    "ratio": ratio,
                    "flags": flags,
                }
            )
    return records


def truncation(
    aberrations_at: Callable[[np.ndarray, np.ndarray], np.ndarray],
    psf_size: int,
    pupil_scale: float,
    regions: int = REGIONS,
) -> list[dict[str, Any]]:
    """Energy outside the ``psf_size`` window at each region's centre, from the fitted
    diffraction model (``aberrations_at(y, x)`` -> (M, 6) RMS waves): one record per
    region, rows top to bottom, with ``outside`` (fraction) and ``holding_size`` (the
    smallest odd window with at most ``MAX_OUTSIDE`` outside, up to 4 K + 1)."""
    import torch

    from coordgate.optics.psf import diffraction_psfs

    centres = np.array([-1 + 2 * (i + 0.5) / regions for i in range(regions)])
    yy, xx = (a.ravel() for a in np.meshgrid(centres, centres, indexing="ij"))
    wide = _WIDEST * psf_size + 1
    coefficients = torch.as_tensor(aberrations_at(yy, xx), dtype=torch.float64)
    psfs = diffraction_psfs(wide, coefficients, pupil_scale=pupil_scale).numpy()
    centre = wide // 2
    sizes = np.arange(psf_size, wide + 1, 2)
    inside = np.stack(
        [psfs[:, centre - s // 2 : centre + s // 2 + 1, centre - s // 2 : centre + s // 2 + 1]
         .sum(axis=(-2, -1)) for s in sizes],
        axis=1,
    )  # fmt: skip
    records = []
    for i, (y, x) in enumerate(zip(yy, xx)):
        holds = np.flatnonzero(1 - inside[i] <= MAX_OUTSIDE)
        records.append(
            {
                "region": [i // regions, i % regions],
                "y": float(y),
                "x": float(x),
                "outside": float(1 - inside[i, 0]),
                "holding_size": int(sizes[holds[0]]) if len(holds) else None,
            }
        )
    return records


def _where(record: dict[str, Any]) -> str:
    (y0, y1), (x0, x1) = record["y"], record["x"]
    return f"region y {y0:+.2f}..{y1:+.2f}, x {x0:+.2f}..{x1:+.2f}"


def summarise(
    regions: list[dict[str, Any]], truncated: list[dict[str, Any]] | None, psf_size: int
) -> dict[str, Any]:
    """The self-check record: the regional map, truncation, warnings (with their
    numbers), the worst region (highest ratio) and a verdict, ``"good"``, ``"warnings"``
    or ``"poor"`` (see the module docstring)."""
    warnings = []
    for record in regions:
        if "poorly_constrained" in record["flags"]:
            warnings.append(
                f"{_where(record)}: {record['beads']} used bead(s), poorly constrained "
                f"(fewer than {MIN_REGION_BEADS}); image more beads there"
            )
        if "high_residual" in record["flags"]:
            warnings.append(
                f"{_where(record)}: held-out beads are {record['held_out_residual']:.0%} "
                f"from the field, {record['ratio']:.1f}x the noise floor "
                f"({record['noise_floor']:.0%})"
            )
    if truncated:
        spill = max(truncated, key=lambda r: r["outside"])
        if spill["outside"] > MAX_OUTSIDE:
            size = spill["holding_size"]
            advice = (
                f"--psf-size {size} would hold all but {MAX_OUTSIDE:.0%}"
                if size
                else f"even {_WIDEST * psf_size + 1} px would not hold all but {MAX_OUTSIDE:.0%}"
            )
            warnings.append(
                f"bead energy reaches the window edge: {spill['outside']:.0%} of the PSF at "
                f"({spill['y']:+.2f}, {spill['x']:+.2f}) lies outside {psf_size}x{psf_size}; "
                f"{advice}"
            )
    measured = [r for r in regions if r["beads"]]
    worst = max(measured, key=lambda r: r["ratio"]) if measured else None
    far = worst is not None and worst["ratio"] > FAR_RATIO
    return {
        "regions": regions,
        "truncation": truncated,
        "worst_region": worst,
        "warnings": warnings,
        "verdict": "poor" if far else ("warnings" if warnings else "good"),
        "rule": (
            f"{FOLDS}-fold held-out residual per bead over its noise floor, median per "
            f"region of a {REGIONS}x{REGIONS} map; flagged above {HIGH_RATIO}, poor above "
            f"{FAR_RATIO}; fewer than {MIN_REGION_BEADS} beads: poorly constrained; more "
            f"than {MAX_OUTSIDE:.0%} of the PSF outside the window: truncated"
        ),
    }


def describe_worst(check: dict[str, Any]) -> str:
    """One line on the worst region of a self-check record."""
    worst = check["worst_region"]
    if worst is None:
        return "self-check: no region has used beads"
    return (
        f"self-check ({check['verdict']}): worst {_where(worst)}, {worst['beads']} beads, "
        f"held-out residual {worst['held_out_residual']:.1%} = {worst['ratio']:.2f}x the "
        f"noise floor {worst['noise_floor']:.1%}"
    )
