"""The calibration report: JSON, a per-bead CSV, a montage of measured vs fitted PSFs and
a map of the PSF width (FWHM) over the sensor.

FWHM here is the diameter of the disc whose area equals the area where the PSF is at
least half its maximum (the PSF bilinearly upsampled 4x first), so it is defined for
asymmetric and ring-shaped PSFs too and equals the usual FWHM for a round one.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from coordgate.optics.calibration.fit import Calibration

__all__ = ["fwhm", "write_report"]

_UPSAMPLE = 4
_MONTAGE_SIDE = 4
_MAP_POINTS = 33


def fwhm(psfs: np.ndarray) -> np.ndarray:
    """Equivalent-disc FWHM (px) of PSFs (..., k, k) -> (...); see the module docstring."""
    from scipy import ndimage

    psfs = np.asarray(psfs, dtype=np.float64)
    flat = psfs.reshape(-1, *psfs.shape[-2:])
    widths = []
    for psf in flat:
        fine = ndimage.zoom(psf, _UPSAMPLE, order=1)
        area = (fine >= fine.max() / 2).sum() / _UPSAMPLE**2
        widths.append(2 * math.sqrt(area / math.pi))
    return np.array(widths).reshape(psfs.shape[:-2])


def _spread_choice(positions: np.ndarray, side: int) -> list[int]:
    """Indices of up to side**2 distinct points nearest a side x side grid over [-1, 1]."""
    line = np.linspace(-0.8, 0.8, side)
    chosen: list[int] = []
    for y in line:
        for x in line:
            order = np.argsort(np.hypot(positions[:, 0] - y, positions[:, 1] - x))
            free = [int(i) for i in order if int(i) not in chosen]
            if free:
                chosen.append(free[0])
    return chosen


def _montage_figure(calibration: Calibration, path: Path) -> None:
    from coordgate.plots.common import image_panel, new_figure, save_figure

    chosen = _spread_choice(calibration.positions, _MONTAGE_SIDE)
    fitted = calibration.model.psfs_at(
        calibration.positions[chosen, 0], calibration.positions[chosen, 1]
    )
    columns = 2 * _MONTAGE_SIDE
    rows = math.ceil(len(chosen) / _MONTAGE_SIDE)
    figure = new_figure(1.1 * columns, 1.25 * rows)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for n, (i, model) in enumerate(zip(chosen, fitted)):
        measured = calibration.psfs[i]
        top = max(measured.max(), model.max())
        y, x = calibration.positions[i]
        r, c = divmod(n, _MONTAGE_SIDE)
        error = np.linalg.norm(measured - model) / np.linalg.norm(model)
        image_panel(axes[r, 2 * c], measured, f"bead ({y:+.2f},{x:+.2f})", vmin=0, vmax=top)
        image_panel(axes[r, 2 * c + 1], model, f"fitted, {100 * error:.0f}%", vmin=0, vmax=top)
    figure.suptitle("measured beads (left) and the fitted field (right); % = relative L2")
    save_figure(figure, path)


def _width_figure(calibration: Calibration, path: Path) -> None:
    from coordgate.plots.common import FONT_SIZE, image_panel, new_figure, save_figure

    line = np.linspace(-1, 1, _MAP_POINTS)
    yy, xx = np.meshgrid(line, line, indexing="ij")
    widths = fwhm(calibration.field.psfs_at(yy.ravel(), xx.ravel()).numpy())
    figure = new_figure(4.2, 3.6)
    ax = figure.subplots()
    image_panel(ax, widths.reshape(yy.shape), "PSF FWHM (px) over the sensor", colorbar=True)
    scale = (_MAP_POINTS - 1) / 2
    h, w = calibration.sensor_size
    markers = {None: ("o", "white", "used")}
    for bead in calibration.beads:
        style = markers.get(bead.reason, ("x", "red", "rejected"))
        ax.plot(
            ((2 * bead.col + 1) / w) * scale,
            ((2 * bead.row + 1) / h) * scale,
            style[0],
            color=style[1],
            markersize=3,
            markerfacecolor="none",
        )
    ax.set_xlim(-0.5, _MAP_POINTS - 0.5)
    ax.set_ylim(_MAP_POINTS - 0.5, -0.5)
    ax.set_xlabel("x (o used bead, x rejected)", fontsize=FONT_SIZE)
    save_figure(figure, path)


def write_report(
    calibration: Calibration, directory: str | Path, extra: dict | None = None
) -> dict[str, Path]:
    """Write ``calibration.json``, ``beads.csv``, ``beads.png`` and ``fwhm.png``.

    ``extra`` entries (inputs, timings) are added to the JSON. Returns the paths by name.
    """
    from coordgate.report import write_csv, write_json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    summary = {**(extra or {}), **calibration.summary()}
    line = np.linspace(-1, 1, 5)
    yy, xx = np.meshgrid(line, line, indexing="ij")
    summary["fwhm_px_5x5"] = {
        "positions": line.tolist(),
        "fwhm": fwhm(calibration.field.psfs_at(yy.ravel(), xx.ravel()).numpy())
        .reshape(5, 5)
        .tolist(),
    }
    paths = {
        "json": write_json(summary, directory / "calibration.json"),
        "csv": write_csv(summary["per_bead"], directory / "beads.csv"),
        "montage": directory / "beads.png",
        "fwhm": directory / "fwhm.png",
    }
    _montage_figure(calibration, paths["montage"])
    _width_figure(calibration, paths["fwhm"])
    return paths
