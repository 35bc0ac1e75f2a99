"""Torch-only building blocks: sensor coordinates, CoordGate and its baselines."""

from coordgate.frames import coordinate_grid
from coordgate.layers.conv import CoordGateConv
from coordgate.layers.coordconv import AddCoords, CoordConv
from coordgate.layers.gate import GATE_MODES, CoordGate, GateMode
from coordgate.layers.local import LocallyConnected
from coordgate.layers.pac import PixelAdaptiveConv

__all__ = [
    "GATE_MODES",
    "AddCoords",
    "CoordConv",
    "CoordGate",
    "CoordGateConv",
    "GateMode",
    "LocallyConnected",
    "PixelAdaptiveConv",
    "coordinate_grid",
]
