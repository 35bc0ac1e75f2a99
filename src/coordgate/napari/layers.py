"""What the plugin reads from a napari image layer and writes back, as plain values.

A layer's last two axes are its image plane (rows, columns); any leading axes (time,
z, ...) are a stack of frames processed one by one. Where the layer lies on the sensor
comes from its ``translate`` (world units) over its ``scale`` (world units per pixel),
and the sensor's size from the widget, else from the layer's metadata under
:data:`SENSOR_SIZE`, which the plugin writes on every layer it makes.
No napari or Qt here: these functions take arrays, tuples and dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "SENSOR_SIZE",
    "as_frames",
    "layer_pixels",
    "output_layer",
    "pixel_origin",
    "sensor_size",
    "stack_progress",
]

#: Metadata key of a layer's sensor size (rows, columns), in pixels.
SENSOR_SIZE = "sensor_size"

Pair = tuple[float, float]
Progress = Callable[[int, int], None]


def pixel_origin(translate: Sequence[float], scale: Sequence[float]) -> Pair | None:
    """The sensor position (row, column) in pixels of a layer's first pixel, None at (0, 0).

    ``translate`` and ``scale`` are the layer's, one entry per axis; the image plane is
    the last two.
    """
    t = np.asarray(translate, dtype=np.float64)[-2:]
    s = np.asarray(scale, dtype=np.float64)[-2:]
    if t.shape != (2,) or s.shape != (2,) or not (s > 0).all() or not np.isfinite(t).all():
        raise ValueError(
            f"a layer needs finite translate and positive scale on its last two axes, "
            f"got translate {tuple(translate)}, scale {tuple(scale)}"
        )
    origin = np.round(t / s, 6)
    return None if not origin.any() else (float(origin[0]), float(origin[1]))


def sensor_size(given: Sequence[int], metadata: Mapping[str, Any] | None = None) -> Pair | None:
    """The sensor size (rows, columns): ``given`` when both are positive (a widget's
    fields, 0 meaning "not given"), else ``metadata[SENSOR_SIZE]``, else None."""
    if len(given) != 2 or any(v < 0 for v in given):
        raise ValueError(f"sensor size must be two non-negative numbers, got {tuple(given)}")
    if all(v > 0 for v in given):
        return (float(given[0]), float(given[1]))
    if any(v > 0 for v in given):
        raise ValueError(f"give both sensor height and width (0 for neither), got {tuple(given)}")
    recorded = (metadata or {}).get(SENSOR_SIZE)
    return None if recorded is None else (float(recorded[0]), float(recorded[1]))


def layer_pixels(data: Any, *, multiscale: bool = False, rgb: bool = False) -> Any:
    """A layer's full-resolution pixels (the first level of a multiscale layer); colour
    (RGB) layers are refused: the models and fields are single-channel."""
    if rgb:
        raise ValueError(
            "this layer is RGB: coordgate works on single-channel images; split the "
            "channels (Layers > Split RGB) and pick one"
        )
    return data[0] if multiscale else data


def as_frames(data: Any) -> np.ndarray:
    """A layer's pixels (..., H, W) as a float32 stack of frames (N, H, W), values kept."""
    array = np.asarray(data)
    if array.ndim < 2 or min(array.shape[-2:]) < 1:
        raise ValueError(f"an image layer needs at least two non-empty axes, got {array.shape}")
    if np.iscomplexobj(array) or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"the image must hold real numbers, got {array.dtype}")
    return array.reshape(-1, *array.shape[-2:]).astype(np.float32)


def stack_progress(progress: Progress | None, index: int, count: int) -> Progress | None:
    """Progress over all ``count`` frames of a stack from that of frame ``index``: a
    frame's ``(done, total)`` becomes ``(index * total + done, count * total)``."""
    if progress is None:
        return None
    return lambda done, total: progress(index * total + done, count * total)


def output_layer(
    data: np.ndarray,
    name: str,
    *,
    scale: Sequence[float],
    translate: Sequence[float],
    full_size: Pair | None,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(data, keyword arguments of ``viewer.add_image``) of a result that lies where its
    input lay: same scale and translate, the sensor size recorded in its metadata."""
    record = dict(metadata or {})
    if full_size is not None:
        record[SENSOR_SIZE] = [float(v) for v in full_size]
    kwargs = {
        "name": name,
        "scale": tuple(scale),
        "translate": tuple(translate),
        "metadata": record,
    }
    return data, kwargs
