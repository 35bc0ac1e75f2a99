"""CoordGate: efficiently computing spatially-varying convolutions in CNNs.

The package root re-exports the layers; the study (optics, data, models, training,
experiments) lives in the sub-packages.
"""

from coordgate.frames import coordinate_grid
from coordgate.layers import (
    GATE_MODES,
    AddCoords,
    CoordConv,
    CoordGate,
    CoordGateConv,
    LocallyConnected,
    PixelAdaptiveConv,
)

__all__ = [
    "GATE_MODES",
    "AddCoords",
    "CoordConv",
    "CoordGate",
    "CoordGateConv",
    "LocallyConnected",
    "PixelAdaptiveConv",
    "coordinate_grid",
]
__version__ = "0.1.0"
