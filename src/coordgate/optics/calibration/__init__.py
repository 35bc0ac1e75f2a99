"""Calibration: a PSF field from images of randomly scattered sub-resolution beads, or
from a measured PSF grid, with a report of its own accuracy.

Typical use::

    from coordgate.optics.calibration import calibrate, write_report
    result = calibrate(frames, psf_size=21)      # frames: (F, H, W) bead images
    result.field.save("field.npz")               # a MeasuredField; PSFField.load reads it
    write_report(result, "report/")

The steps are documented where they live: bead detection, measurement and rejection in
:mod:`~coordgate.optics.calibration.beads`; registration and the rejection of doublets
and shape outliers in :mod:`~coordgate.optics.calibration.fit`; the smooth low-rank field
and its extrapolation beyond the outermost beads in
:mod:`~coordgate.optics.calibration.model`; the physical alternative, a diffraction
pupil whose Zernike aberrations are polynomials of the field position, in
:mod:`~coordgate.optics.calibration.pupil_field`; PSF-grid import in
:mod:`~coordgate.optics.calibration.grid`; simulated beads of a known field and errors
against it in :mod:`~coordgate.optics.calibration.simulate`.

What beads cannot tell: their true positions are unknown, so a shift of the PSF that
varies smoothly over the sensor (distortion) is invisible. Calibrated PSFs are centred
on their chief ray, found by fitting the diffraction pupil to their shape
(:mod:`~coordgate.optics.calibration.pupil`; coma moves the centroid off it), or on
their intensity centroid with ``centre="centroid"``.

Needs NumPy and SciPy (the ``study`` extra); the core layers do not import this package.
"""

from coordgate.optics.calibration.beads import REJECTION_REASONS, Bead, find_beads
from coordgate.optics.calibration.fit import Calibration, calibrate, sample_field
from coordgate.optics.calibration.grid import import_psf_grid, read_positions
from coordgate.optics.calibration.model import SmoothField, fit_smooth_field
from coordgate.optics.calibration.report import fwhm, write_report
from coordgate.optics.calibration.simulate import BeadImage, field_errors, simulate_beads

__all__ = [
    "REJECTION_REASONS",
    "Bead",
    "BeadImage",
    "Calibration",
    "SmoothField",
    "calibrate",
    "field_errors",
    "find_beads",
    "fit_smooth_field",
    "fwhm",
    "import_psf_grid",
    "read_positions",
    "sample_field",
    "simulate_beads",
    "write_report",
]
