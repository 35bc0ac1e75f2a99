"""Real microscopy and astronomy images that ship inside scikit-image's wheel.

They give a real-image check with no download: only images bundled in the installed
package are used (``skimage.data`` functions that would fetch over the network, such as
``cells3d`` or ``human_mitosis``, are left out). scikit-image is an optional ("study")
dependency, imported on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["SAMPLES", "Sample", "sample_image", "sample_images"]


@dataclass(frozen=True)
class Sample:
    """A bundled real image: its field (``microscopy`` / ``astronomy``) and what it shows."""

    name: str
    kind: str
    description: str
    load: Callable[[], np.ndarray]


def _cell() -> np.ndarray:
    from skimage import data

    return data.cell()


def _ihc_channel(index: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import color, data

        # Colour deconvolution gives stain densities: bright where the stain is, on a dark
        # background, like a fluorescence channel.
        return color.rgb2hed(data.immunohistochemistry())[..., index]

    return load


def _gray(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import color, data

        image = getattr(data, name)()
        return color.rgb2gray(image) if image.ndim == 3 else image

    return load


SAMPLES: dict[str, Sample] = {
    s.name: s
    for s in [
        Sample("cell", "microscopy", "quantitative phase image of a cell in saline", _cell),
        Sample(
            "ihc_nuclei",
            "microscopy",
            "hematoxylin (nuclear) stain of an immunohistochemistry section",
            _ihc_channel(0),
        ),
        Sample(
            "ihc_dab",
            "microscopy",
            "DAB (protein) stain of an immunohistochemistry section",
            _ihc_channel(2),
        ),
        Sample(
            "hubble_deep_field", "astronomy", "Hubble deep field, grey", _gray("hubble_deep_field")
        ),
        Sample("moon", "astronomy", "lunar surface", _gray("moon")),
    ]
}


def sample_image(name: str) -> np.ndarray:
    """One bundled image as float32 (H, W), min-max scaled to [0, 1]."""
    if name not in SAMPLES:
        raise ValueError(f"unknown sample image {name!r}, expected one of {sorted(SAMPLES)}")
    try:
        image = np.asarray(SAMPLES[name].load(), dtype=np.float64)
    except ImportError as error:
        raise RuntimeError(
            "sample images need scikit-image: pip install 'coordgate[study]'"
        ) from error
    low, high = image.min(), image.max()
    return ((image - low) / max(high - low, 1e-12)).astype(np.float32)


def sample_images(kind: str | None = None) -> dict[str, np.ndarray]:
    """All bundled images (or those of ``kind``: ``microscopy`` / ``astronomy``) by name."""
    kinds = {s.kind for s in SAMPLES.values()}
    if kind is not None and kind not in kinds:
        raise ValueError(f"kind must be one of {sorted(kinds)} or None, got {kind!r}")
    return {n: sample_image(n) for n, s in SAMPLES.items() if kind in (None, s.kind)}
