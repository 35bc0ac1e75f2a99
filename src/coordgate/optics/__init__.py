"""Optics: PSF models and fields, spatially-varying blur operators, noise (and its level
estimated from an image), and classical restoration (Wiener, Richardson-Lucy). Torch and
NumPy only.

Typical use::

    field = PSFField.default()                       # the paper's lens (Fig. 5)
    blur = SpatiallyVaryingBlur(field, (128, 128), method="lowrank")
    y = poisson_gaussian(blur.A(x), photons=1000, read_noise=2, generator=g)
"""

from coordgate.optics.blur import (
    METHODS,
    BlurOperator,
    ExactBlur,
    FieldBlur,
    LowRankBlur,
    Method,
    ShiftInvariantBlur,
    SpatiallyVaryingBlur,
    TiledBlur,
)
from coordgate.optics.boundary import PADDINGS, Padding
from coordgate.optics.field import (
    BUILT_IN_FIELDS,
    DEFAULT_GRID_SIZE,
    DEFAULT_MAX_DEFOCUS,
    GaussianField,
    LensField,
    MeasuredField,
    PSFField,
    field_radius,
)
from coordgate.optics.noise import NoiseLevel, estimate_noise, poisson_gaussian
from coordgate.optics.psf import (
    ABERRATIONS,
    diffraction_psf,
    gaussian_psf,
    psf_width,
    zernike,
)
from coordgate.optics.restoration import (
    multi_wiener,
    richardson_lucy,
    spatially_varying_wiener,
    wiener_deconvolution,
)

__all__ = [
    "ABERRATIONS",
    "BUILT_IN_FIELDS",
    "DEFAULT_GRID_SIZE",
    "DEFAULT_MAX_DEFOCUS",
    "BlurOperator",
    "METHODS",
    "PADDINGS",
    "ExactBlur",
    "FieldBlur",
    "GaussianField",
    "LensField",
    "LowRankBlur",
    "MeasuredField",
    "Method",
    "NoiseLevel",
    "PSFField",
    "Padding",
    "ShiftInvariantBlur",
    "SpatiallyVaryingBlur",
    "TiledBlur",
    "diffraction_psf",
    "estimate_noise",
    "field_radius",
    "gaussian_psf",
    "multi_wiener",
    "poisson_gaussian",
    "psf_width",
    "richardson_lucy",
    "spatially_varying_wiener",
    "wiener_deconvolution",
    "zernike",
]
