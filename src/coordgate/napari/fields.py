"""The PSF field viewer: a napari reader that shows a field ``.npz`` as a montage of PSFs.

Any file :meth:`coordgate.optics.PSFField.load` reads (written by ``coordgate simulate``,
``PSFField.save`` or a calibration, or a user's measured grid with a ``psfs`` array)
opens as one image: the PSFs on their grid of field points, top row first, each scaled
to its own peak so that their shapes compare at every position.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["get_reader", "psf_montage", "read_psf_field"]

LayerData = tuple[np.ndarray, dict[str, Any], str]
#: Pixels between neighbouring PSFs in a montage.
GAP = 2


def psf_montage(psfs: Any) -> np.ndarray:
    """PSFs (ny, nx, k, k) tiled row by row into one float32 image, each PSF divided by its
    peak, separated by :data:`GAP` pixels of 0."""
    from coordgate.images import montage

    grid = np.asarray(psfs, dtype=np.float64)
    if grid.ndim != 4 or 0 in grid.shape:
        raise ValueError(f"a PSF grid is (ny, nx, k, k), got shape {grid.shape}")
    peaks = np.abs(grid).max(axis=(-2, -1), keepdims=True)
    scaled = grid / np.where(peaks > 0, peaks, 1.0)
    ny, nx = grid.shape[:2]
    return montage(list(scaled.reshape(ny * nx, *grid.shape[2:])), nx, gap=GAP, fill=0.0)


def _holds_psfs(path: Path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as data:
            return "psfs" in data.files or "config" in data.files
    except (OSError, ValueError):
        return False


def get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """napari's reader hook: :func:`read_psf_field` for one ``.npz`` holding a PSF field,
    else None so that other readers may try."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(path)
    if path.suffix != ".npz" or not path.is_file() or not _holds_psfs(path):
        return None
    return read_psf_field


def read_psf_field(path: str | list[str]) -> list[LayerData]:
    """One image layer: the montage of the field's PSF grid, with the grid's field
    positions and the field's description in its metadata."""
    from coordgate.optics import PSFField

    path = Path(path[0] if isinstance(path, list) else path)
    field = PSFField.load(path)
    psfs = field.grid()
    y, x = field.grid_positions()
    metadata = {
        "psf_field": str(path),
        "config": field.config(),
        "grid_positions": {"y": y.tolist(), "x": x.tolist()},
        "psf_size": field.psf_size,
    }
    kwargs = {"name": f"{path.stem} PSF grid", "colormap": "magma", "metadata": metadata}
    return [(psf_montage(psfs.numpy()), kwargs, "image")]
