"""Run a trained model outside coordgate: ONNX, TorchScript and BioImage Model Zoo packages.

Every format holds a :class:`FrameDeblurrer`: the checkpoint's deblurring of one whole
sensor frame (normalisation, the network with its gates frozen for the sensor, and back
to the frame's intensities), equal to ``coordgate deblur`` on such a frame.
:func:`export_checkpoint` writes any of :data:`FORMATS`; the bioimageio package needs the
optional extra ``coordgate[bioimageio]``.
"""

from coordgate.export.checkpoint import FORMATS, SUFFIXES, export_checkpoint
from coordgate.export.deblurrer import FrameDeblurrer, PercentileBounds
from coordgate.export.formats import export_onnx, export_torchscript

__all__ = [
    "FORMATS",
    "SUFFIXES",
    "FrameDeblurrer",
    "PercentileBounds",
    "export_checkpoint",
    "export_onnx",
    "export_torchscript",
]
