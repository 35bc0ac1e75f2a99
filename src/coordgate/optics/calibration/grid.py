"""Import of measured PSF grids: a TIFF stack of PSFs and a CSV of their sensor positions.

The stack holds one PSF per page (``K`` x ``K``, ``K`` odd, the PSF centred on the centre
pixel), the CSV one row per page: the PSF's position on the sensor in pixels, ``y``
(row) then ``x`` (column), pixel centres at integers. A header row naming the columns
``y``/``x`` or ``row``/``col`` (any order) is optional. Each PSF has negative pixels
(background-subtraction noise) set to zero and is normalised to unit sum.

Positions that form a complete rectilinear grid (every combination of the distinct rows
and columns, once) become a :class:`~coordgate.optics.MeasuredField` as they are;
scattered positions are fitted with the same smooth low-rank model as beads
(:mod:`coordgate.optics.calibration.model`) and sampled on a regular grid.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from coordgate.images import read_frames
from coordgate.optics.calibration.beads import Bead, centroids
from coordgate.optics.calibration.fit import (
    CALIBRATION_GRID_SIZE,
    Calibration,
    sample_field,
    sensor_positions,
)
from coordgate.optics.calibration.model import DEFAULT_MAX_EXTRAPOLATION, fit_smooth_field
from coordgate.optics.field import MeasuredField

__all__ = ["DEFAULT_MAX_OFFSET", "import_psf_grid", "read_positions"]

#: A PSF whose centroid is farther than this from its centre pixel (px) is refused.
DEFAULT_MAX_OFFSET = 1.0


def read_positions(path: str | Path) -> np.ndarray:
    """Positions (N, 2) (y, x) px from a CSV of two columns, with or without a header."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"positions file not found: {path}")
    with path.open(newline="") as handle:
        rows = [r for r in csv.reader(handle) if any(cell.strip() for cell in r)]
    if not rows:
        raise ValueError(f"{path} holds no positions")
    order = (0, 1)
    header = [cell.strip().lower() for cell in rows[0]]
    names = {"y": 0, "row": 0, "x": 1, "col": 1, "column": 1}
    if {h for h in header if h in names} and not _numeric(rows[0]):
        columns = {names[h]: i for i, h in enumerate(header) if h in names}
        if set(columns) != {0, 1}:
            raise ValueError(f"{path}: the header must name a y (row) and an x (col) column")
        order, rows = (columns[0], columns[1]), rows[1:]
    try:
        positions = np.array([[float(r[order[0]]), float(r[order[1]])] for r in rows])
    except (ValueError, IndexError) as error:
        raise ValueError(
            f"{path}: every row needs two numbers, y and x in pixels ({error})"
        ) from None
    if not np.isfinite(positions).all():
        raise ValueError(f"{path}: positions must be finite numbers")
    return positions.reshape(-1, 2)


def _numeric(row: list[str]) -> bool:
    try:
        [float(cell) for cell in row]
        return True
    except ValueError:
        return False


def _check_pages(path: Path) -> None:
    """Refuse a TIFF whose pages differ in size (it reads as several series)."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise ValueError(f"{path}: a PSF stack is a (multi-page) TIFF, got {path.suffix!r}")
    if not path.is_file():
        raise FileNotFoundError(f"PSF stack not found: {path}")
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            shapes = sorted({tuple(page.shape[-2:]) for page in tif.pages})
    except Exception as error:  # tifffile raises many types on non-TIFF files
        raise ValueError(f"cannot read PSF stack {path}: {error}") from None
    if len(shapes) > 1:
        raise ValueError(f"{path}: the PSFs must all have one size, got pages of {shapes}")


def _rectilinear(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(rows, cols, order) when positions are every (row, col) pair once, else None."""
    rows, cols = np.unique(positions[:, 0]), np.unique(positions[:, 1])
    if len(rows) * len(cols) != len(positions) or min(len(rows), len(cols)) < 2:
        return None
    keys = {(float(y), float(x)): i for i, (y, x) in enumerate(positions)}
    if len(keys) != len(positions):
        return None
    order = np.array([keys[(float(y), float(x))] for y in rows for x in cols])
    return rows, cols, order


def import_psf_grid(
    psfs_path: str | Path,
    positions_path: str | Path,
    sensor_size: tuple[int, int],
    *,
    grid_size: int = CALIBRATION_GRID_SIZE,
    rank: int | None = None,
    smoothing: float | None = None,
    max_offset: float = DEFAULT_MAX_OFFSET,
    max_extrapolation: float = DEFAULT_MAX_EXTRAPOLATION,
) -> Calibration:
    """A field from measured PSFs (see the module docstring); sensor_size (H, W) px.

    Raises ``ValueError`` naming the problem for a count mismatch between pages and
    positions, non-square or even-sized PSFs, PSFs whose centroid lies more than
    ``max_offset`` px from the centre pixel, and positions outside the sensor.
    """
    h, w = (int(s) for s in sensor_size)
    if min(h, w) < 1:
        raise ValueError(f"sensor_size must be two positive integers, got {sensor_size!r}")
    psfs_path = Path(psfs_path)
    _check_pages(psfs_path)
    psfs = read_frames(psfs_path).astype(np.float64)
    positions = read_positions(positions_path)
    n, ky, kx = psfs.shape
    if len(positions) != n:
        raise ValueError(
            f"{psfs_path} holds {n} PSFs but {positions_path} gives {len(positions)} positions"
        )
    if ky != kx or ky % 2 == 0:
        raise ValueError(
            f"PSFs must be square with an odd size (a centre pixel), got {ky}x{kx} in {psfs_path}"
        )
    outside = (positions < -0.5) | (positions > np.array([h, w]) - 0.5)
    if outside.any():
        bad = np.flatnonzero(outside.any(1))
        raise ValueError(
            f"positions outside the {h}x{w} sensor (rows {bad[:5].tolist()} of the CSV, e.g. "
            f"{positions[bad[0]].tolist()}); positions are pixels, 0 to H-1 and 0 to W-1"
        )
    psfs = np.clip(psfs, 0, None)
    totals = psfs.sum(axis=(-2, -1))
    if not (totals > 0).all():
        raise ValueError(f"PSF page(s) {np.flatnonzero(totals <= 0).tolist()} hold no light")
    psfs /= totals[:, None, None]
    offsets = np.linalg.norm(centroids(psfs), axis=1)
    if (offsets > max_offset).any():
        page = int(offsets.argmax())
        raise ValueError(
            f"PSF page {page} is off-centre: its centroid lies {offsets[page]:.2f} px from the "
            f"centre pixel (at most {max_offset} allowed); centre each PSF on its middle pixel"
        )
    normalised = sensor_positions(positions[:, 0], positions[:, 1], (h, w))
    beads = [Bead(0, float(y), float(x), 1.0, float("inf"), 0.0) for y, x in positions]
    model = fit_smooth_field(
        psfs, normalised, rank=rank, smoothing=smoothing, max_extrapolation=max_extrapolation
    )
    grid = _rectilinear(normalised)
    if grid is not None:
        rows, cols, order = grid
        field = MeasuredField(
            torch.from_numpy(psfs[order].reshape(len(rows), len(cols), ky, kx)), rows, cols
        )
    else:
        field = sample_field(model, grid_size)
    residuals = np.linalg.norm(
        (psfs - model.psfs_at(normalised[:, 0], normalised[:, 1])).reshape(n, -1), axis=1
    ) / np.linalg.norm(psfs.reshape(n, -1), axis=1)
    for bead, residual in zip(beads, residuals):
        bead.residual = float(residual)
    return Calibration(
        field=field,
        model=model,
        beads=beads,
        psfs=psfs,
        positions=normalised,
        sensor_size=(h, w),
        settings={
            "rank": rank,
            "smoothing": smoothing,
            "max_offset": max_offset,
            "rectilinear": grid is not None,
        },
        source="grid",
    )
