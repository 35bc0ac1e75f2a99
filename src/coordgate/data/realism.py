"""How close the synthetic microscopy is to real images: statistics and a side-by-side figure.

Both sets are percentile-normalised per image (1 / 99.8, clipped to [0, 1]) and
compared by their intensity histograms, radially averaged power spectra (and the
spectral slope, the exponent of ``P(f) ~ f**slope`` over mid frequencies), the fraction
of bright (foreground) pixels and the mean gradient magnitude (edge density).
The real set is random crops of the bundled microscopy images
(:mod:`coordgate.data.samples`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from coordgate.atomic import atomic_write_text
from coordgate.data.normalization import PercentileNormalizer

__all__ = [
    "compare_with_real",
    "image_statistics",
    "intensity_histogram",
    "radial_power_spectrum",
    "real_crops",
]

# Mid-frequency band (cycles per pixel) where the spectral slope is fitted: above the
# image-size scale, below where the sharp structures' finite width bends the spectrum.
_SLOPE_BAND = (0.02, 0.2)
_FOREGROUND = 0.2


def _normalised(images: np.ndarray) -> np.ndarray:
    """(N, H, W) float64, each image percentile-normalised and clipped to [0, 1]."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3 or images.shape[0] == 0:
        raise ValueError(f"expected a stack of images (N, H, W), got shape {images.shape}")
    norm = PercentileNormalizer(clip=True)
    return np.stack([norm.fitted_to(im).normalize(im) for im in images])


def radial_power_spectrum(images: np.ndarray, bins: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Mean radially averaged power spectrum of (N, H, W) images.

    Each image has its mean removed and is scaled to unit variance first, so spectra
    compare shapes, not brightness. Returns (frequencies in cycles/px, power), one entry
    per non-empty bin of ``bins`` equal bins from 0 to 0.5.
    """
    x = np.asarray(images, dtype=np.float64)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    x = x / np.maximum(x.std(axis=(1, 2), keepdims=True), 1e-12)
    power = (np.abs(np.fft.fft2(x)) ** 2).mean(axis=0) / x[0].size
    fy = np.fft.fftfreq(x.shape[1])[:, None]
    fx = np.fft.fftfreq(x.shape[2])[None, :]
    radius = np.sqrt(fy**2 + fx**2).reshape(-1)
    edges = np.linspace(0, 0.5, bins + 1)
    which = np.digitize(radius, edges) - 1
    keep = (which >= 0) & (which < bins) & (radius > 0)
    total = np.bincount(which[keep], power.reshape(-1)[keep], bins)
    count = np.bincount(which[keep], minlength=bins)
    filled = count > 0
    return ((edges[:-1] + edges[1:]) / 2)[filled], total[filled] / count[filled]


def intensity_histogram(images: np.ndarray, bins: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Density of normalised intensities of (N, H, W) images: (bin centres, density)."""
    density, edges = np.histogram(_normalised(images), bins=bins, range=(0, 1), density=True)
    return (edges[:-1] + edges[1:]) / 2, density


def image_statistics(images: np.ndarray) -> dict[str, float]:
    """Summary numbers of (N, H, W) images (see the module docstring)."""
    x = _normalised(images)
    freqs, power = radial_power_spectrum(x)
    band = (freqs >= _SLOPE_BAND[0]) & (freqs <= _SLOPE_BAND[1])
    slope = np.polyfit(np.log(freqs[band]), np.log(np.maximum(power[band], 1e-30)), 1)[0]
    gy, gx = np.gradient(x, axis=(1, 2))
    return {
        "mean": float(x.mean()),
        "std": float(x.std()),
        "median": float(np.median(x)),
        "foreground_fraction": float((x > _FOREGROUND).mean()),
        "spectral_slope": float(slope),
        "mean_gradient": float(np.sqrt(gy**2 + gx**2).mean()),
    }


def real_crops(size: int, n: int, *, seed: int = 0, kind: str = "microscopy") -> np.ndarray:
    """``n`` random ``size`` x ``size`` crops, spread evenly over the bundled real images."""
    from coordgate.data.samples import sample_images

    images = [im for im in sample_images(kind).values() if min(im.shape) >= size]
    if not images:
        raise ValueError(f"no bundled {kind} image is at least {size}x{size} pixels")
    rng = np.random.default_rng(seed)
    crops = []
    for k in range(n):
        image = images[k % len(images)]
        r = rng.integers(0, image.shape[0] - size + 1)
        c = rng.integers(0, image.shape[1] - size + 1)
        crops.append(image[r : r + size, c : c + size])
    return np.stack(crops)


def compare_with_real(
    out_dir: str | os.PathLike, *, n: int = 48, size: int = 128, seed: int = 0
) -> dict[str, object]:
    """Write ``comparison.png`` (synthetic vs real microscopy, side by side, with
    histograms and power spectra) and ``comparison.json`` to ``out_dir``; return the
    statistics of both sets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from coordgate.data.synthetic import synthetic_microscopy

    sets = {
        "synthetic": synthetic_microscopy(n, size, seed=seed)[:, 0].numpy(),
        "real microscopy": real_crops(size, n, seed=seed),
    }
    stats = {name: image_statistics(images) for name, images in sets.items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    shown = 6
    fig = plt.figure(figsize=(2 * shown, 7.5))
    grid = fig.add_gridspec(3, shown, height_ratios=[1, 1, 1.4])
    for row, (name, images) in enumerate(sets.items()):
        for col, image in enumerate(_normalised(images[:shown])):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.set_axis_off()
            if col == 0:
                ax.set_title(name, loc="left", fontsize=10)
    hist_ax = fig.add_subplot(grid[2, : shown // 2])
    spec_ax = fig.add_subplot(grid[2, shown // 2 :])
    for name, images in sets.items():
        hist_ax.semilogy(*intensity_histogram(images), label=name)
        spec_ax.loglog(*radial_power_spectrum(_normalised(images)), label=name)
    hist_ax.set(xlabel="normalised intensity", ylabel="density", title="intensity histogram")
    spec_ax.set(xlabel="frequency (cycles/px)", ylabel="power", title="radial power spectrum")
    hist_ax.legend()
    spec_ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "comparison.png", dpi=100)
    plt.close(fig)
    record = {"n": n, "size": size, "seed": seed, "statistics": stats}
    atomic_write_text(out_dir / "comparison.json", json.dumps(record, indent=2))
    return record
