"""Sample data for napari (File > Open Sample > coordgate).

- ``synthetic``: a 256x256 synthetic fluorescence-microscopy frame
  (:func:`coordgate.data.synthetic_microscopy`, seed 0) and the same frame blurred by
  the default lens with the noise of the training pairs (1000 photons at intensity 1,
  2 electrons read noise; :class:`coordgate.data.pairs.NoiseModel`), as two layers.
- the real images the project bundles (:data:`coordgate.data.samples.SAMPLES`), one
  function each, named as there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "SYNTHETIC_SIZE",
    "cell",
    "hubble_deep_field",
    "ihc_dab",
    "ihc_nuclei",
    "moon",
    "real_sample",
    "synthetic",
]

LayerData = tuple[np.ndarray, dict[str, Any], str]
SYNTHETIC_SIZE = 256


def synthetic() -> list[LayerData]:
    """A synthetic microscopy frame, sharp and blurred by the default lens with noise."""
    import torch

    from coordgate.data.pairs import NoiseModel
    from coordgate.data.synthetic import synthetic_microscopy
    from coordgate.optics import PSFField, SpatiallyVaryingBlur

    size = (SYNTHETIC_SIZE, SYNTHETIC_SIZE)
    sharp = synthetic_microscopy([0], size, seed=0)
    operator = SpatiallyVaryingBlur(PSFField.default(), size, method="lowrank", padding="reflect")
    with torch.no_grad():
        blurred = NoiseModel().apply(operator.A(sharp), torch.Generator().manual_seed(0))
    return [
        (sharp[0, 0].numpy(), {"name": "synthetic (sharp)"}, "image"),
        (blurred[0, 0].numpy(), {"name": "synthetic (blurred, default lens)"}, "image"),
    ]


def real_sample(name: str) -> list[LayerData]:
    """One of the project's bundled real images as a layer, scaled to [0, 1]."""
    from coordgate.data.samples import SAMPLES, sample_image

    sample = SAMPLES.get(name)
    if sample is None:
        raise ValueError(f"unknown sample image {name!r}, expected one of {sorted(SAMPLES)}")
    metadata = {"kind": sample.kind, "description": sample.description}
    return [(sample_image(name), {"name": name, "metadata": metadata}, "image")]


def cell() -> list[LayerData]:
    """Quantitative phase image of a cell (scikit-image)."""
    return real_sample("cell")


def ihc_nuclei() -> list[LayerData]:
    """Hematoxylin (nuclear) stain of an immunohistochemistry section (scikit-image)."""
    return real_sample("ihc_nuclei")


def ihc_dab() -> list[LayerData]:
    """DAB (protein) stain of an immunohistochemistry section (scikit-image)."""
    return real_sample("ihc_dab")


def hubble_deep_field() -> list[LayerData]:
    """Hubble deep field, grey (scikit-image)."""
    return real_sample("hubble_deep_field")


def moon() -> list[LayerData]:
    """Lunar surface (scikit-image)."""
    return real_sample("moon")
