"""The Deconvolve widget's logic: the PSF fields on offer and deconvolving a layer's data.

:func:`deconvolve_stack` runs every frame of a layer through
:func:`coordgate.deconvolution.deconvolve_frame`, what ``coordgate deconvolve`` runs, so a
layer and the same image on the command line give the same result. The fields: those of
the Simulate widget (the default lens, the Gaussian field, a ``.npz`` file) and every
field file a layer in the viewer names in its metadata under ``psf_field``: the PSF grid
the Calibrate widget adds for the field it saved, or a field ``.npz`` opened with
File > Open.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coordgate.napari.layers import Pair, Progress, as_frames, stack_progress
from coordgate.napari.simulate import FIELDS, load_field

if TYPE_CHECKING:
    from coordgate.frames import FrameLike

__all__ = ["deconvolve_stack", "field_choices", "field_for"]


def field_choices(layers: Iterable[tuple[str, Mapping[str, Any]]]) -> list[tuple[str, str]]:
    """(label, value) of every field on offer: :data:`~coordgate.napari.simulate.FIELDS`,
    then each existing ``.npz`` that one of ``layers`` ((name, metadata) pairs) records
    under ``psf_field``, once, labelled by the layer that names it first."""
    choices = [(kind, kind) for kind in FIELDS]
    seen = set()
    for name, metadata in layers:
        path = (metadata or {}).get("psf_field")
        if isinstance(path, str) and path.endswith(".npz") and Path(path).is_file():
            if path not in seen:
                seen.add(path)
                choices.append((f"{name} ({Path(path).name})", path))
    return choices


def field_for(choice: str, path: str | Path | None = None) -> Any:
    """The PSFField of a choice of :func:`field_choices`: one of ``FIELDS`` (``file``
    reads ``path``), or a field file a layer named."""
    if choice in FIELDS:
        return load_field(choice, path)
    from coordgate.optics import PSFField

    return PSFField.load(choice)


def deconvolve_stack(
    data: np.ndarray,
    field: Any,
    settings: Any,
    *,
    origin: FrameLike = None,
    full_size: FrameLike = None,
    device: str = "auto",
    progress: Progress | None = None,
) -> tuple[np.ndarray, Pair | None, list[dict]]:
    """Deconvolve every (H, W) frame of ``data`` (..., H, W) with ``field`` and the
    :class:`~coordgate.deconvolution.DeconvolutionSettings` ``settings``: (result float32
    of data's shape, the sensor size used, each frame's summary).

    ``origin`` (row, column) and ``full_size`` place the frames on the sensor (a field
    that records its sensor size supplies the size). ``progress(done, total)`` counts
    iterations over all frames; an exception raised by it stops the run.
    """
    from coordgate.deconvolution import deconvolve_frame, field_frame
    from coordgate.devices import resolve_device

    frames = as_frames(data)
    where = field_frame(field, frames.shape[-2:], origin, full_size)
    on = resolve_device(device)
    results = [
        deconvolve_frame(
            frame,
            field,
            settings,
            origin=origin,
            full_size=full_size,
            device=on,
            progress=stack_progress(progress, i, len(frames)),
        )
        for i, frame in enumerate(frames)
    ]
    known = full_size is not None or field.sensor_size is not None
    used = where.full_size if known else None
    stack = np.stack([r.image for r in results]).reshape(np.shape(data))
    return stack, used, [r.summary() for r in results]
