"""Export a checkpoint in one of :data:`FORMATS`: what ``coordgate export`` and the napari
Export widget call."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from coordgate.export.deblurrer import FrameDeblurrer
from coordgate.export.formats import export_onnx, export_torchscript

__all__ = ["FORMATS", "SUFFIXES", "export_checkpoint"]

#: The formats a checkpoint exports to, and the file suffix each is written with.
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "bioimageio": ".zip"}
FORMATS = tuple(SUFFIXES)


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    format: str,
    *,
    normalisation: str = "checkpoint",
    frame: np.ndarray | None = None,
    authors: Sequence[str] | None = None,
    license: str = "MIT",
) -> Path:
    """Write ``checkpoint`` to ``out`` as ``format`` (one of :data:`FORMATS`); returns the
    path. ``normalisation`` as for ``coordgate deblur``; ``frame``, ``authors`` and
    ``license`` are the bioimageio package's
    (:func:`~coordgate.export.bioimageio.export_bioimageio`)."""
    if format not in SUFFIXES:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    out = Path(out)
    if out.suffix != SUFFIXES[format]:
        raise ValueError(f"a {format} export is written to a {SUFFIXES[format]} file, got {out}")
    if format == "bioimageio":
        from coordgate.export.bioimageio import export_bioimageio

        return export_bioimageio(
            checkpoint, out, normalisation=normalisation, frame=frame, authors=authors,
            license=license,
        )  # fmt: skip
    deblurrer, _ = FrameDeblurrer.from_checkpoint(checkpoint, normalisation)
    out.parent.mkdir(parents=True, exist_ok=True)
    write = export_onnx if format == "onnx" else export_torchscript
    return write(deblurrer, out)
