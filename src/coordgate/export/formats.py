"""Write a :class:`~coordgate.export.deblurrer.FrameDeblurrer` as ONNX or TorchScript.

Both files take the whole sensor frame, (1, C, H, W) float32 in its own intensities, and
give the deblurred frame in the same intensities; both carry the deblurrer's
:meth:`~coordgate.export.deblurrer.FrameDeblurrer.metadata` as JSON (ONNX: the
``coordgate`` metadata property; TorchScript: the extra file ``coordgate.json``).

- ONNX goes through torch's ``torch.export``-based exporter (the legacy TorchScript-based
  one is deprecated and has no FFT, which MultiWienerNet needs). Its input has a fixed
  shape, so onnxruntime refuses any other with "Got invalid dimensions for input".
- TorchScript traces the deblurrer and wraps the trace in a scripted check of the input
  shape (a trace alone would not check it), saying what the input must be.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from coordgate.atomic import atomic_write
from coordgate.export.deblurrer import FrameDeblurrer

__all__ = ["INPUT_NAME", "ONNX_OPSET", "OUTPUT_NAME", "export_onnx", "export_torchscript"]

INPUT_NAME, OUTPUT_NAME = "frame", "deblurred"
#: The ONNX operator set the files are written with.
ONNX_OPSET = 18
_METADATA_FILE = "coordgate.json"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence what tracing says about a trace that holds for this one input shape only
    (the point of the export), torch's deprecation of TorchScript and the ONNX exporter's
    notes on operators of packages that are not installed (torchvision)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)
            # torch 2.13 deprecates TorchScript, which deepImageJ and QuPath still read
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def _metadata(deblurrer: FrameDeblurrer) -> str:
    """The deblurrer's metadata as JSON; a model option that JSON cannot hold (a tensor
    given to a model built directly) is named by its type."""
    return json.dumps(deblurrer.metadata(), default=lambda value: f"<{type(value).__name__}>")


def _shape_text(deblurrer: FrameDeblurrer) -> str:
    return "x".join(str(s) for s in deblurrer.shape)


def export_onnx(deblurrer: FrameDeblurrer, path: str | Path) -> Path:
    """Write ``deblurrer`` to ``path`` as an ONNX model (input ``frame``, output
    ``deblurred``, fixed shape); returns the path."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError as error:
        raise RuntimeError(
            "ONNX export needs onnx and onnxscript: pip install 'coordgate[bioimageio]'"
        ) from error
    with _quiet():
        program = torch.onnx.export(
            deblurrer.eval(),
            (deblurrer.example_input(),),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=ONNX_OPSET,
            verbose=False,
        )
    proto = program.model_proto
    proto.doc_string = (
        f"coordgate: deblurs one whole {_shape_text(deblurrer)} sensor frame; "
        "a crop or a tile of it is refused"
    )
    onnx.helper.set_model_props(proto, {"coordgate": _metadata(deblurrer)})
    return atomic_write(path, proto.SerializeToString())


class _ShapeChecked(nn.Module):
    """A traced deblurrer that first checks its input's shape (TorchScript-scriptable)."""

    def __init__(self, traced: torch.jit.ScriptModule, shape: list[int], message: str) -> None:
        super().__init__()
        self.traced = traced
        self.shape = shape
        self.message = message

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if list(x.shape) != self.shape:
            raise ValueError(self.message + ", got shape " + str(list(x.shape)))
        return self.traced(x)


def export_torchscript(deblurrer: FrameDeblurrer, path: str | Path) -> Path:
    """Write ``deblurrer`` to ``path`` as a TorchScript module (``torch.jit.load``); returns
    the path."""
    deblurrer = deblurrer.eval()
    with torch.no_grad(), _quiet():
        # torch 2.13 re-traces to check and then differs in module type names only; the
        # tests compare the outputs instead.
        traced = torch.jit.trace(deblurrer, (deblurrer.example_input(),), check_trace=False)
    kind = "coordinate-aware: " if deblurrer.uses_coordinates else ""
    message = (
        f"this model ({kind}trained on one sensor) takes the whole sensor frame of shape "
        f"{list(deblurrer.shape)}, not a crop or tile of it"
    )
    scripted = torch.jit.script(_ShapeChecked(traced, list(deblurrer.shape), message))
    buffer = io.BytesIO()
    extra = {_METADATA_FILE: _metadata(deblurrer)}
    torch.jit.save(scripted, buffer, _extra_files=extra)
    return atomic_write(path, buffer.getvalue())
