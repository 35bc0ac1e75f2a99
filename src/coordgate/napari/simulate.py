"""The Simulate blur widget's logic: a PSF field applied to a layer, with optional noise.

The field is the default lens (:meth:`coordgate.optics.PSFField.default`), the quick
Gaussian field, or a ``.npz`` file (saved by ``coordgate simulate``, a measured grid,
or a calibrated field). Frames are blurred as ``coordgate simulate`` blurs them: the
low-rank operator with mirrored borders, integer images scaled to [0, 1] first, then
Poisson-Gaussian noise with its photon peak at intensity 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coordgate.napari.layers import as_frames

if TYPE_CHECKING:
    from coordgate.frames import FrameLike

__all__ = ["FIELDS", "blur_stack", "load_field"]

#: The fields the widget offers: two built in, and a file.
FIELDS = ("default lens", "gaussian", "file")
# the widget's words for the built-in fields, and their names in coordgate.optics
_BUILT_IN = {"default lens": "default", "gaussian": "gaussian"}


def load_field(kind: str, path: str | Path | None = None) -> Any:
    """The PSFField named by ``kind`` (one of :data:`FIELDS`; ``file`` reads ``path``)."""
    from coordgate.optics import PSFField

    if kind in _BUILT_IN:
        return PSFField.from_spec(_BUILT_IN[kind])
    if kind != "file":
        raise ValueError(f"field must be one of {FIELDS}, got {kind!r}")
    if path is None or not str(path) or Path(path).is_dir():
        raise ValueError("choose a PSF field .npz file")
    return PSFField.load(path)


def blur_stack(
    data: np.ndarray,
    field: Any,
    *,
    origin: FrameLike = None,
    full_size: FrameLike = None,
    photons: float | None = None,
    read_noise: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """Every (H, W) frame of ``data`` (..., H, W) blurred by ``field`` where it lies on the
    sensor (``origin``, ``full_size``; default: the frame is the whole sensor), with
    Poisson-Gaussian noise when ``photons`` is given. Returns float32 of data's shape."""
    import torch

    from coordgate.optics import SpatiallyVaryingBlur, poisson_gaussian

    frames = as_frames(data)
    if np.issubdtype(np.asarray(data).dtype, np.integer):
        frames /= np.iinfo(np.asarray(data).dtype).max
    operator = SpatiallyVaryingBlur(
        field,
        frames.shape[-2:],
        method="lowrank",
        padding="reflect",
        origin=origin,
        full_size=full_size,
    )
    with torch.no_grad():
        blurred = operator.A(torch.from_numpy(frames)[:, None])
        if photons is not None:
            generator = torch.Generator().manual_seed(int(seed))
            blurred = poisson_gaussian(
                blurred.clamp_min(0), photons=photons, read_noise=read_noise, generator=generator
            )
    return blurred[:, 0].numpy().astype(np.float32).reshape(np.shape(data))
