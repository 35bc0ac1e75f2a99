"""The Calibrate widget's logic: bead frames to a PSF field file, and layers that show how.

:func:`calibrate_beads` runs :func:`coordgate.optics.calibration.calibrate` on a bead
layer's frames (taken as whole sensor frames) and saves the field where asked;
:func:`calibration_layers` turns the result into layers: the used and the rejected beads
as points (each rejection labelled with its reason), the calibrated field's PSF grid as
a montage, and its FWHM over the sensor as a coarse map laid over the bead image.
:func:`available` says whether the calibration library is importable here (the widget
shows an explanation instead of its controls when it is not).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from coordgate.napari.fields import psf_montage
from coordgate.napari.layers import as_frames

__all__ = [
    "FWHM_CELLS",
    "available",
    "beads_sample",
    "calibrate_beads",
    "calibration_layers",
    "fwhm_map",
]

LayerData = tuple[Any, dict[str, Any], str]
#: Cells per axis of the FWHM map laid over the sensor.
FWHM_CELLS = 32


def available() -> tuple[bool, str]:
    """(whether calibration can run here, why not)."""
    try:
        from coordgate.optics.calibration import calibrate, fwhm  # noqa: F401
    except ImportError as error:  # an older install, or SciPy missing
        return False, f"coordgate.optics.calibration is not available: {error}"
    return True, ""


def calibrate_beads(
    data: Any, psf_size: int, *, snr: float | None = None, out: str | Path | None = None
) -> Any:
    """The :class:`~coordgate.optics.calibration.Calibration` of a bead layer's frames
    (..., H, W), each a whole sensor frame; its field is saved to ``out`` (.npz) if given.
    """
    from coordgate.optics.calibration import calibrate

    if out is not None and Path(out).suffix != ".npz":
        raise ValueError(f"the PSF field is saved as a .npz file, got {str(out)!r}")
    options = {} if snr is None else {"snr": snr}
    result = calibrate(as_frames(data), psf_size, **options)
    if out is not None:
        result.field.save(out)
    return result


def fwhm_map(field: Any, cells: int = FWHM_CELLS) -> np.ndarray:
    """FWHM (px) of ``field``'s PSF at the centre of each of cells x cells equal cells of
    the sensor: (cells, cells)."""
    from coordgate.optics.calibration import fwhm

    centres = (2 * np.arange(cells) + 1) / cells - 1
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    return fwhm(field.psfs_at(yy.ravel(), xx.ravel()).numpy()).reshape(cells, cells)


def _bead_points(beads: Sequence[Any], stacked: bool) -> np.ndarray:
    rows = [([b.frame] if stacked else []) + [b.row, b.col] for b in beads]
    return np.array(rows, dtype=np.float64).reshape(-1, 3 if stacked else 2)


def calibration_layers(
    result: Any,
    name: str,
    *,
    stacked: bool = False,
    scale: Sequence[float] = (1.0, 1.0),
    translate: Sequence[float] = (0.0, 0.0),
    field_file: str | Path | None = None,
) -> list[LayerData]:
    """Layers of a calibration of the bead layer ``name``: used beads, rejected beads
    (labelled by reason), the PSF grid montage and the FWHM map.

    The points and the map lie over the bead layer (its ``scale``/``translate``; with
    ``stacked`` the points carry their frame index too). The montage stands apart; it
    names the ``field_file`` the field was saved to (metadata ``psf_field``), which the
    Deconvolve widget offers.
    """
    scale = tuple(float(s) for s in scale)
    translate = tuple(float(t) for t in translate)
    used = [b for b in result.beads if b.reason is None]
    rejected = [b for b in result.beads if b.reason is not None]
    placed = {"scale": scale, "translate": translate}
    points = {"size": result.field.psf_size, "face_color": "transparent", **placed}
    h, w = result.sensor_size
    cell = np.array([h / FWHM_CELLS, w / FWHM_CELLS])
    plane_scale, plane_translate = np.array(scale[-2:]), np.array(translate[-2:])
    summary = result.summary()
    return [
        (
            _bead_points(used, stacked),
            {"name": f"{name} beads used", "border_color": "lime", **points},
            "points",
        ),
        (
            _bead_points(rejected, stacked),
            {
                "name": f"{name} beads rejected",
                "border_color": "red",
                "symbol": "x",
                "features": {"reason": [b.reason for b in rejected]},
                "text": {"string": "{reason}", "color": "red", "size": 8},
                **points,
            },
            "points",
        ),
        (
            psf_montage(result.field.grid().numpy()),
            {
                "name": f"{name} calibrated PSF grid",
                "colormap": "magma",
                "metadata": {
                    "calibration": {k: summary[k] for k in ("beads", "rank")},
                    **({} if field_file is None else {"psf_field": str(field_file)}),
                },
            },
            "image",
        ),
        (
            fwhm_map(result.field),
            {
                "name": f"{name} FWHM (px)",
                "colormap": "viridis",
                "opacity": 0.5,
                "scale": tuple(plane_scale * cell),
                "translate": tuple(plane_translate + plane_scale * (cell / 2 - 0.5)),
            },
            "image",
        ),
    ]


def beads_sample() -> list[LayerData]:
    """A simulated 512x512 image of 120 beads seen through a lens with astigmatism and
    coma (the calibration's own test case), to try the Calibrate widget on."""
    from coordgate.optics import PSFField
    from coordgate.optics.calibration import simulate_beads

    field = PSFField.default(astigmatism=0.15, coma=0.1)
    beads = simulate_beads(field, 512, 120, seed=0)
    return [(beads.image.astype(np.float32), {"name": "beads (simulated)"}, "image")]
