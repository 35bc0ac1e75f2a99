"""Bead extraction: detect isolated sub-resolution beads in a frame, cut them out, register.

A frame is a 2-D array of intensities (any offset; a background is estimated). Each
detected bead gets a record, :class:`Bead`, whose ``reason`` says why it was rejected
(``None`` when it is used). The steps, all in pixels of the frame:

1. *Background and noise.* A coarse background map is the bilinear interpolation of
   block medians (blocks of ``4 K`` px for PSFs of ``K`` px); the noise ``sigma`` is the
   robust spread (MAD) of differences of horizontally adjacent pixels, which smooth
   backgrounds and sparse beads hardly touch.
2. *Detection.* The background-subtracted frame is smoothed by a Gaussian of ``K / 8`` px
   (a blob filter: a defocused, ring-shaped PSF gives one peak); peaks are maxima over a
   ``K`` x ``K`` neighbourhood above ``DETECTION_SIGMA`` noise units of the smoothed frame,
   and the footprint of every object is where the smoothed frame exceeds
   ``FOOTPRINT_SIGMA`` units.
3. *Measurement.* Around each peak, an odd window of ``K + 2 * MARGIN`` px is cut, centred
   on the pixel nearest the bead's centroid; the local background (median of a ring just
   outside the window, other objects masked) is subtracted. ``flux`` is the sum of the
   central ``K`` x ``K`` pixels and ``snr = flux / (sigma * K)`` (the flux over the noise of
   ``K**2`` background pixels).
4. *Rejection,* first reason wins: ``border`` (the window leaves the frame),
   ``low_snr`` (``snr`` below the threshold), ``saturated`` (a pixel of the ``K`` x ``K``
   window at the saturation level), ``overlap`` (another object's peak within the
   minimum separation, or bright pixels of the window, above ``OVERLAP_SIGMA`` noise
   units of the smoothed frame, nearer another object's peak than this bead's: the
   footprints of close objects merge, so each pixel is given to its nearest peak).
   ``doublet`` (flux far above the median bead's: two beads closer than the PSF) and
   ``shape_outlier`` (a residual far above the others' against the fitted field) are
   decided by the calibration over all beads, see :mod:`coordgate.optics.calibration.fit`.

Sub-pixel registration uses :func:`fourier_shift`: the extra ``MARGIN`` px of each
window absorb the wrap-around of the shift and are cropped afterwards.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "DETECTION_SIGMA",
    "FOOTPRINT_SIGMA",
    "MARGIN",
    "OVERLAP_SIGMA",
    "REJECTION_REASONS",
    "Bead",
    "BeadWindows",
    "centroids",
    "find_beads",
    "fourier_shift",
    "noise_sigma",
    "saturation_level",
]

#: Why a detected bead is not used, in the order the checks run.
REJECTION_REASONS = ("border", "low_snr", "saturated", "overlap", "doublet", "shape_outlier")
#: Extra pixels around the K x K window that absorb sub-pixel Fourier shifts.
MARGIN = 3
#: Smoothed-frame peaks above this many noise units are objects (beads, faint or not).
DETECTION_SIGMA = 5.0
#: Smoothed-frame pixels above this many noise units belong to an object's footprint.
FOOTPRINT_SIGMA = 3.0
#: Another object's light in a bead's window above this many noise units (smoothed) is
#: an overlap; fainter wings are left to the background and the shape-outlier check.
OVERLAP_SIGMA = 30.0
# Width of the background ring outside a bead's window, px.
_RING = 4
# With a noise-free frame, sigma falls back to this fraction of the brightest signal.
_SIGMA_FLOOR = 1e-4


@dataclass
class Bead:
    """One detected object: where it is, how bright, and whether it is used.

    ``row``, ``col``: its centre in the frame, px (pixel centres at integers);
    ``flux``: background-subtracted sum over the ``K`` x ``K`` window; ``snr``: see the
    module docstring; ``reason``: one of ``REJECTION_REASONS``, ``None`` when used;
    ``residual``: relative L2 distance to the fitted field at its position (after a fit).
    """

    frame: int
    row: float
    col: float
    flux: float
    snr: float
    background: float
    reason: str | None = None
    residual: float = math.nan

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class BeadWindows:
    """A frame's detected objects and the windows of those that passed its checks.

    beads: every detected object's record; windows: (N, W, W) background-subtracted,
    W = K + 2 * MARGIN, centred on the integer pixels ``centres`` (N, 2) of the beads
    ``[beads[i] for i in kept]`` (N indices).
    """

    beads: list[Bead]
    windows: np.ndarray
    centres: np.ndarray
    kept: list[int]


def noise_sigma(frame: np.ndarray) -> float:
    """Robust per-pixel noise: 1.4826 * MAD of horizontal neighbour differences / sqrt(2)."""
    diff = np.diff(frame, axis=1).ravel()
    if diff.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(diff - np.median(diff))) / math.sqrt(2))


def background_map(frame: np.ndarray, block: int) -> np.ndarray:
    """Smooth background: block medians, bilinearly interpolated (held flat at the edges)."""
    from scipy.interpolate import RegularGridInterpolator

    h, w = frame.shape
    rows = np.array_split(np.arange(h), max(1, round(h / block)))
    cols = np.array_split(np.arange(w), max(1, round(w / block)))
    medians = np.array([[np.median(frame[np.ix_(r, c)]) for c in cols] for r in rows])
    if medians.shape == (1, 1):
        return np.full_like(frame, medians[0, 0])
    centre_r = np.array([r.mean() for r in rows])
    centre_c = np.array([c.mean() for c in cols])
    # A single block along an axis is padded to two identical ones so the grid is 2-D.
    if len(centre_r) == 1:
        centre_r, medians = np.array([0.0, h - 1.0]), np.repeat(medians, 2, axis=0)
    if len(centre_c) == 1:
        centre_c, medians = np.array([0.0, w - 1.0]), np.repeat(medians, 2, axis=1)
    interpolate = RegularGridInterpolator((centre_r, centre_c), medians)
    rr, cc = np.meshgrid(
        np.clip(np.arange(h), centre_r[0], centre_r[-1]),
        np.clip(np.arange(w), centre_c[0], centre_c[-1]),
        indexing="ij",
    )
    return interpolate(np.stack([rr, cc], axis=-1))


def saturation_level(frame: np.ndarray) -> float | None:
    """The frame's maximum when it is a clipped plateau (two adjacent pixels at the
    maximum, which noise makes unlikely otherwise), else ``None`` (nothing saturated)."""
    from scipy import ndimage

    top = frame == frame.max()
    if top.sum() < 2:
        return None
    neighbours = ndimage.convolve(top.astype(np.int32), np.ones((3, 3), np.int32), mode="constant")
    return float(frame.max()) if bool((top & (neighbours >= 2)).any()) else None


def fourier_shift(images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Translate each image by ``shifts`` (rows, cols) px: (N, H, W), (N, 2) -> (N, H, W).

    ``out(p) = image(p - shift)`` with the image taken as periodic (a phase ramp on its
    FFT); H and W should be odd so no Nyquist term is left unpaired.
    """
    h, w = images.shape[-2:]
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.fftfreq(w)[None, :]
    shifts = np.asarray(shifts, dtype=np.float64)
    phase = np.exp(-2j * np.pi * (shifts[:, 0, None, None] * ky + shifts[:, 1, None, None] * kx))
    return np.fft.ifft2(np.fft.fft2(images) * phase).real


def centroids(images: np.ndarray) -> np.ndarray:
    """Intensity centroids relative to the centre pixel: (N, k, k) -> (N, 2) (rows, cols)."""
    k = images.shape[-1]
    r = np.arange(k) - k // 2
    total = images.sum(axis=(-2, -1))
    return np.stack(
        [(images.sum(-1) * r).sum(-1) / total, (images.sum(-2) * r).sum(-1) / total], axis=-1
    )


def _peaks(smooth: np.ndarray, threshold: float, size: int) -> np.ndarray:
    """One pixel (row, col) per local maximum over size x size above threshold: (P, 2)."""
    from scipy import ndimage

    is_peak = (smooth == ndimage.maximum_filter(smooth, size=size, mode="nearest")) & (
        smooth > threshold
    )
    # A flat top (saturation) gives a group of tied maxima: one peak per group.
    groups, count = ndimage.label(is_peak, structure=np.ones((3, 3), bool))
    if count == 0:
        return np.zeros((0, 2), dtype=int)
    return np.array(ndimage.maximum_position(smooth, groups, range(1, count + 1)), dtype=int)


def _local_background(
    frame: np.ndarray, labels: np.ndarray, centre: tuple[int, int], half: int, fallback: float
) -> float:
    """Median of the ring between the half-width ``half`` window and ``half + _RING``,
    pixels of any object's footprint excluded."""
    h, w = frame.shape
    r, c = centre
    outer = half + _RING
    r0, r1, c0, c1 = (
        max(r - outer, 0),
        min(r + outer + 1, h),
        max(c - outer, 0),
        min(c + outer + 1, w),
    )
    patch, patch_labels = frame[r0:r1, c0:c1], labels[r0:r1, c0:c1]
    rr, cc = np.meshgrid(np.arange(r0, r1) - r, np.arange(c0, c1) - c, indexing="ij")
    ring = (np.maximum(np.abs(rr), np.abs(cc)) > half) & (patch_labels == 0)
    return float(np.median(patch[ring])) if ring.sum() >= 8 else fallback


def find_beads(
    frame: np.ndarray,
    psf_size: int,
    *,
    frame_index: int = 0,
    snr: float = 20.0,
    min_separation: float | None = None,
    saturation: float | None = None,
) -> BeadWindows:
    """Detect, measure and check the beads of one frame (see the module docstring).

    frame: (H, W); psf_size: K (odd); snr: the least ``snr`` of a used bead;
    min_separation: the least distance to another object's peak, px (default K/2;
    neighbours farther away are still rejected when their footprint enters the window);
    saturation: the level at which pixels clip (default: :func:`saturation_level`).
    Returns every detected object's record and the windows of those not rejected.
    """
    from scipy import ndimage

    frame = np.asarray(frame, dtype=np.float64)
    k, half = psf_size, psf_size // 2
    separation = float(k / 2 if min_separation is None else min_separation)
    level = saturation_level(frame) if saturation is None else float(saturation)
    signal = frame - background_map(frame, max(4 * k, 32))
    sigma = noise_sigma(frame)
    if sigma <= 0:
        sigma = _SIGMA_FLOOR * max(float(np.abs(signal).max()), 1e-300)
    width = max(1.0, k / 8)
    smooth = ndimage.gaussian_filter(signal, width, mode="nearest")
    # The noise of a Gaussian-smoothed white-noise image: sigma * ||g||_2.
    sigma_smooth = sigma / (2 * math.sqrt(math.pi) * width)
    peaks = _peaks(smooth, DETECTION_SIGMA * sigma_smooth, 2 * half + 1)
    labels, _ = ndimage.label(smooth > FOOTPRINT_SIGMA * sigma_smooth)
    bright = smooth > OVERLAP_SIGMA * sigma_smooth
    h, w = frame.shape
    reach = half + MARGIN
    records, windows, centres, kept = [], [], [], []
    for index, (pr, pc) in enumerate(peaks):
        own = labels[pr, pc]
        row, col = _footprint_centroid(signal, labels == own, (pr, pc), half)
        cr, cc = round(row), round(col)
        background = _local_background(
            frame, labels, (min(max(cr, 0), h - 1), min(max(cc, 0), w - 1)), reach, 0.0
        )
        bead = Bead(frame_index, row, col, math.nan, math.nan, background)
        records.append(bead)
        if not (reach <= cr < h - reach and reach <= cc < w - reach):
            bead.reason = "border"
            continue
        window = frame[cr - reach : cr + reach + 1, cc - reach : cc + reach + 1] - background
        core = (slice(cr - half, cr + half + 1), slice(cc - half, cc + half + 1))
        bead.flux = float(window[MARGIN:-MARGIN, MARGIN:-MARGIN].sum())
        bead.snr = bead.flux / (sigma * k)
        others = np.delete(peaks, index, axis=0)
        nearest = np.hypot(*(others - [pr, pc]).T).min() if len(others) else math.inf
        if not bead.snr >= snr:
            bead.reason = "low_snr"
        elif level is not None and frame[core].max() >= level:
            bead.reason = "saturated"
        elif nearest < separation or _light_of_others(bright[core], (cr, cc), (pr, pc), others):
            bead.reason = "overlap"
        else:
            windows.append(window)
            centres.append((cr, cc))
            kept.append(len(records) - 1)
    size = 2 * reach + 1
    return BeadWindows(
        records,
        np.array(windows, dtype=np.float64).reshape(-1, size, size),
        np.array(centres, dtype=np.int64).reshape(-1, 2),
        kept,
    )


def _light_of_others(
    bright: np.ndarray, centre: tuple[int, int], peak: tuple[int, int], others: np.ndarray
) -> bool:
    """Whether bright pixels of a window (centred on pixel ``centre``) lie nearer another
    object's peak than this bead's ``peak``: the footprints of close objects merge, so
    each pixel is given to its nearest peak."""
    half = bright.shape[0] // 2
    near = others[np.abs(others - np.asarray(centre)).max(1) <= 3 * half + 1]
    if not len(near) or not bright.any():
        return False
    rows, cols = np.nonzero(bright)
    pixels = np.stack([rows, cols], 1) + np.asarray(centre) - half
    own = np.hypot(*(pixels - np.asarray(peak)).T)
    other = np.hypot(pixels[:, None, 0] - near[None, :, 0], pixels[:, None, 1] - near[None, :, 1])
    return bool((other.min(1) < own).any())


def _footprint_centroid(
    signal: np.ndarray, footprint: np.ndarray, peak: tuple[int, int], half: int
) -> tuple[float, float]:
    """Centroid of the positive signal of an object's footprint near its peak (rows, cols)."""
    h, w = signal.shape
    pr, pc = peak
    r0, r1 = max(pr - half, 0), min(pr + half + 1, h)
    c0, c1 = max(pc - half, 0), min(pc + half + 1, w)
    patch = np.where(footprint[r0:r1, c0:c1], np.clip(signal[r0:r1, c0:c1], 0, None), 0)
    total = patch.sum()
    if total <= 0:
        return float(pr), float(pc)
    rr, cc = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
    return float((patch * rr).sum() / total), float((patch * cc).sum() / total)
