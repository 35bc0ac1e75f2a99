"""Image files: read TIFF / PNG / JPEG into frames, write float32 TIFF and PNG previews.

A file may hold several 2D frames (multipage TIFF, ImageJ hyperstacks, animated PNG) and
several channels (RGB, or a TIFF ``C`` / ``S`` axis). :func:`read_frames` turns any of
them into a stack of single-channel float32 frames, which is what the blur model
works on. A TIFF's pixel size (:func:`read_pixel_size`: its resolution tags, with the unit
of its ResolutionUnit tag or of ImageJ's metadata) can be written again with the
result. ``tifffile`` and ``Pillow`` are imported on first use, so the modules that
import this one need only torch and numpy until a file is read or written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from coordgate.atomic import replace_atomically

__all__ = [
    "IMAGE_SUFFIXES",
    "PixelSize",
    "check_image_path",
    "frame_info",
    "montage",
    "read_frames",
    "read_image",
    "read_pixel_size",
    "write_png_preview",
    "write_tiff",
]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_TIFF = (".tif", ".tiff")
_CHANNEL_AXES = "CS"
# Pillow modes that are converted before reading: palette and odd colour models to RGB,
# and alpha dropped (it is not an intensity).
_PIL_CONVERT = {"P": "RGB", "PA": "RGB", "RGBA": "RGB", "LA": "L", "1": "L", "CMYK": "RGB"}


def check_image_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path; ``FileNotFoundError`` when it is no file, ``ValueError`` when its
    format is none of :data:`IMAGE_SUFFIXES`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported image format {path.suffix!r}, expected one of "
            f"{', '.join(IMAGE_SUFFIXES)}"
        )
    return path


def _read_tiff(path: Path) -> tuple[np.ndarray, str]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        return series.asarray(), series.axes


def _read_pil(path: Path) -> tuple[np.ndarray, str]:
    from PIL import Image, ImageSequence

    with Image.open(path) as image:
        frames = []
        for frame in ImageSequence.Iterator(image):
            mode = _PIL_CONVERT.get(frame.mode)
            frames.append(np.asarray(frame.convert(mode) if mode else frame))
    if len({f.shape for f in frames}) != 1:
        raise ValueError(f"frames of different shapes: {sorted({f.shape for f in frames})}")
    stack = np.stack(frames)
    axes = "IYXS" if stack.ndim == 4 else "IYX"
    return (stack[0], axes[1:]) if len(frames) == 1 else (stack, axes)


def _read(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Pixels as stored and their axes (tifffile letters: Y, X; C/S channels; others frames)."""
    path = check_image_path(path)
    reader = _read_tiff if path.suffix.lower() in _TIFF else _read_pil
    try:
        array, axes = reader(path)
    except Exception as error:  # readers raise many types on malformed files
        raise ValueError(f"cannot read image {path}: {error}") from error
    if array.size == 0 or "Y" not in axes or "X" not in axes:
        raise ValueError(f"cannot read image {path}: no 2D image in it (shape {array.shape})")
    return array, axes


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The pixels of an image file as stored: native dtype, e.g. (H, W), (F, H, W), (H, W, 3).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for
    an unsupported, corrupt or non-image file.
    """
    return _read(path)[0]


def _to_frames(array: np.ndarray, axes: str, channel: int | None, path: Path) -> np.ndarray:
    """(F, H, W) float32 from an array with tifffile axes letters."""
    data = array.astype(np.float32, copy=False)
    channel_axes = [i for i, a in enumerate(axes) if a in _CHANNEL_AXES]
    n_channels = int(np.prod([data.shape[i] for i in channel_axes], dtype=int))
    if channel is not None and not 0 <= channel < n_channels:
        raise ValueError(f"{path} has {n_channels} channel(s), channel {channel} was asked for")
    frame_axes = [i for i, a in enumerate(axes) if a not in _CHANNEL_AXES + "YX"]
    order = frame_axes + channel_axes + [axes.index("Y"), axes.index("X")]
    data = np.transpose(data, order)
    h, w = data.shape[-2:]
    data = data.reshape(-1, n_channels, h, w)
    data = data.mean(axis=1) if channel is None else data[:, channel]
    return np.ascontiguousarray(data, dtype=np.float32)


def read_frames(path: str | os.PathLike, *, channel: int | None = None) -> np.ndarray:
    """All 2D frames of an image file as a float32 stack (F, H, W), values unscaled.

    Multipage and multi-dimensional files (e.g. ImageJ ``TZCYX``) give one frame per
    plane. Multichannel files (RGB, TIFF ``C``/``S`` axes) are averaged over channels,
    or reduced to ``channel`` when given.
    """
    array, axes = _read(path)
    return _to_frames(array, axes, channel, Path(path))


def frame_info(path: str | os.PathLike) -> tuple[int, tuple[int, int]]:
    """``(number of frames, (H, W))`` of an image file, reading only its header when possible."""
    path = check_image_path(path)
    try:
        if path.suffix.lower() in _TIFF:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape, axes = series.shape, series.axes
        else:
            from PIL import Image

            with Image.open(path) as image:
                return int(getattr(image, "n_frames", 1)), (image.height, image.width)
    except Exception as error:  # readers raise many types on malformed files
        raise ValueError(f"cannot read image {path}: {error}") from error
    if "Y" not in axes or "X" not in axes:
        raise ValueError(f"cannot read image {path}: no 2D image in it (shape {shape})")
    n = int(np.prod([s for s, a in zip(shape, axes) if a not in _CHANNEL_AXES + "YX"], dtype=int))
    return n, (int(shape[axes.index("Y")]), int(shape[axes.index("X")]))


class PixelSize(NamedTuple):
    """The size of a pixel: ``y`` and ``x`` in ``unit`` ("um", "cm", "inch", ...; "" when
    the file names none).

    >>> PixelSize(0.65, 0.65, "um")
    PixelSize(y=0.65, x=0.65, unit='um')
    """

    y: float
    x: float
    unit: str


# TIFF ResolutionUnit values (tifffile.RESUNIT) and the names used for them; only inch and
# centimetre are baseline TIFF, other units are written as ImageJ writes them.
_RESOLUTION_UNITS = {2: "inch", 3: "cm", 4: "mm", 5: "um"}
_BASELINE_UNITS = {"inch": 2, "cm": 3}


def read_pixel_size(path: str | os.PathLike) -> PixelSize | None:
    """The pixel size a TIFF records (resolution tags, and the unit of its ResolutionUnit
    tag or ImageJ metadata), or None when it records none or the file is no TIFF."""
    path = check_image_path(path)
    if path.suffix.lower() not in _TIFF:
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            per_unit_x, per_unit_y = page.resolution
            unit = (tif.imagej_metadata or {}).get("unit") or _RESOLUTION_UNITS.get(
                int(page.resolutionunit), ""
            )
    except Exception as error:  # readers raise many types on malformed files
        raise ValueError(f"cannot read image {path}: {error}") from error
    if not unit and (per_unit_x, per_unit_y) == (1, 1):
        return None
    if not (per_unit_x > 0 and per_unit_y > 0):
        return None
    return PixelSize(1 / per_unit_y, 1 / per_unit_x, str(unit))


def _tiff_resolution(pixel_size: PixelSize | None, ndim: int) -> dict:
    """tifffile.imwrite keyword arguments that record ``pixel_size`` for an image of
    ``ndim`` axes ((F, H, W) is a stack of planes, never ImageJ's default of channels)."""
    if pixel_size is None:
        return {}
    y, x, unit = pixel_size
    if not (x > 0 and y > 0):
        raise ValueError(f"a pixel size must be positive, got {pixel_size}")
    resolution = {"resolution": (1 / x, 1 / y)}
    if not unit or unit in _BASELINE_UNITS:
        return {**resolution, "resolutionunit": _BASELINE_UNITS.get(unit, 1)}
    axes = "ZYX" if ndim == 3 else "YX"
    return {**resolution, "imagej": True, "metadata": {"unit": unit, "axes": axes}}


def _as_numpy(image: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        return image.detach().cpu().numpy()
    return np.asarray(image)


def write_tiff(
    path: str | os.PathLike,
    image: np.ndarray | torch.Tensor,
    *,
    pixel_size: PixelSize | None = None,
) -> Path:
    """Write (H, W) or (F, H, W) as a float32 (multipage) TIFF, recording ``pixel_size``
    when given; returns the path."""
    import tifffile

    data = _as_numpy(image)
    if data.ndim not in (2, 3) or data.size == 0:
        raise ValueError(f"write_tiff expects an (H, W) or (F, H, W) image, got {data.shape}")
    data = np.ascontiguousarray(data, dtype=np.float32)
    options = _tiff_resolution(pixel_size, data.ndim)
    # minisblack: a 3- or 4-frame stack must not be taken for RGB(A) planes.
    return replace_atomically(
        Path(path), lambda tmp: tifffile.imwrite(tmp, data, photometric="minisblack", **options)
    )


def write_png_preview(
    path: str | os.PathLike,
    image: np.ndarray | torch.Tensor,
    *,
    percentiles: tuple[float, float] | None = (1.0, 99.8),
) -> Path:
    """Write an (H, W) or (H, W, 3) image as a PNG for viewing; returns the path.

    With ``percentiles`` (the default) the image is stretched so those percentiles map to
    black and white (8 bit). With ``percentiles=None`` it is written as is: uint8 and
    uint16 exactly (16-bit PNG for uint16), floats taken to lie in [0, 1].
    """
    from PIL import Image

    data = _as_numpy(image)
    if not (data.ndim == 2 or (data.ndim == 3 and data.shape[-1] == 3)) or data.size == 0:
        raise ValueError(f"write_png_preview expects (H, W) or (H, W, 3), got {data.shape}")
    if percentiles is not None:
        low, high = np.percentile(data, percentiles)
        data = (data.astype(np.float64) - low) / max(high - low, 1e-12)
    elif data.dtype in (np.uint8, np.uint16):
        return replace_atomically(Path(path), lambda tmp: Image.fromarray(data).save(tmp))
    elif not np.issubdtype(data.dtype, np.floating):
        raise ValueError(
            f"write_png_preview without percentiles takes uint8, uint16 or float, got {data.dtype}"
        )
    data = np.round(np.clip(data, 0, 1) * 255).astype(np.uint8)
    return replace_atomically(Path(path), lambda tmp: Image.fromarray(data).save(tmp))


def montage(
    images: Sequence[np.ndarray | torch.Tensor], columns: int, *, gap: int = 2, fill: float = 1.0
) -> np.ndarray:
    """Tile 2D images (each (H, W) or (1, H, W)) row by row into one (H', W') float array."""
    arrays = [np.squeeze(_as_numpy(im)).astype(np.float32) for im in images]
    if not arrays or any(a.ndim != 2 for a in arrays) or columns < 1:
        shapes = [a.shape for a in arrays]
        raise ValueError(
            f"montage expects >= 1 2D images and columns >= 1, got {shapes}, {columns}"
        )
    h = max(a.shape[0] for a in arrays)
    w = max(a.shape[1] for a in arrays)
    rows = -(-len(arrays) // columns)
    out = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap), fill, np.float32)
    for k, a in enumerate(arrays):
        r, c = divmod(k, columns)
        out[
            r * (h + gap) : r * (h + gap) + a.shape[0], c * (w + gap) : c * (w + gap) + a.shape[1]
        ] = a
    return out
