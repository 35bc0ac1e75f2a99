"""Where an array lies on the sensor: frames, their validation, level scaling, coordinates.

The PSF of an instrument is tied to the sensor, not to the array at hand. A :class:`Frame`
places an array on the sensor: ``origin`` is the position of its first pixel and
``full_size`` the sensor's size, per spatial axis, in the array's own pixel units. A batch
of crops has one frame per sample (:class:`BatchFrames`). Frames are validated once, where
they enter (:func:`resolve_frame`, :func:`batch_frames`), and then passed on as they are.

Coordinates: a pixel's coordinate is the position of its centre in the full frame, mapped
so that the frame's outer edges sit at -1 and +1 (torch's ``align_corners=False``
convention). Pixel ``i`` of an input whose first pixel sits at ``origin`` in a frame of
``full_size`` pixels therefore has the coordinate ``(2 * (origin + i) + 1) / full_size - 1``.

This convention makes coordinates independent of resolution: a 2x-downsampled pixel
covers two full-resolution pixels, and its coordinate is exactly the mean of theirs when
``origin`` and ``full_size`` are given in the downsampled level's own pixel units (which
may be fractional): that is what :meth:`Frame.scaled` gives for a U-Net level.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

__all__ = [
    "BatchFrames",
    "Frame",
    "FrameLike",
    "PixelUnion",
    "Where",
    "batch_frames",
    "coordinate_grid",
    "pixel_union",
    "resolve_frame",
    "stacked_axes",
]

#: An origin or a full size: None (the default), one number for every axis, one number
#: per axis, or (for a batch) an (N, dim) tensor or nested sequence, one row per sample.
FrameLike = float | Sequence[float] | Sequence[Sequence[float]] | torch.Tensor | None


class Frame(NamedTuple):
    """Where an array lies on the sensor, in the array's own pixel units.

    ``origin``: position of the array's first pixel; ``full_size``: the sensor's size; one
    float per spatial axis. Build one with :func:`resolve_frame`, which validates it.

    >>> frame = resolve_frame((32, 48), origin=(64, 0), full_size=(256, 256))
    >>> frame
    Frame(origin=(64.0, 0.0), full_size=(256.0, 256.0))
    >>> frame.scaled(2)  # the same place, 4x coarser (U-Net level 2)
    Frame(origin=(16.0, 0.0), full_size=(64.0, 64.0))
    >>> [round(float(c), 4) for c in frame.axes((32, 48))[0][:2]]
    [-0.4961, -0.4883]
    """

    origin: tuple[float, ...]
    full_size: tuple[float, ...]

    def scaled(self, level: int) -> Frame:
        """The frame in the pixel units of U-Net level ``level`` (``2**level`` coarser)."""
        scale = 2**level
        return Frame(
            tuple(o / scale for o in self.origin), tuple(f / scale for f in self.full_size)
        )

    def axes(
        self,
        size: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> list[torch.Tensor]:
        """The normalised coordinates along each axis of an array of ``size`` in this frame:
        ``len(size)`` 1-D tensors, tensor ``a`` of length ``size[a]``."""
        dtype = dtype or torch.get_default_dtype()
        return [
            (2 * (o + torch.arange(s, device=device, dtype=dtype)) + 1) / f - 1
            for s, o, f in zip(size, self.origin, self.full_size)
        ]

    def grid(
        self,
        size: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """The coordinates of every pixel of an array of ``size``: (len(size), *size)."""
        axes = self.axes(size, device=device, dtype=dtype)
        return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def _as_tuple(value: float | Sequence[float], n: int, name: str) -> tuple[float, ...]:
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (int, float)):
        return (float(value),) * n
    values = tuple(float(v) for v in value)
    if len(values) != n:
        raise ValueError(
            f"{name} must give one value per spatial axis ({n}), got {len(values)}: {values}"
        )
    return values


def resolve_frame(
    size: Sequence[int], origin: FrameLike | Frame = None, full_size: FrameLike = None
) -> Frame:
    """The validated frame of an array of spatial ``size``.

    Defaults: ``origin`` = 0 on every axis, ``full_size`` = ``size`` (the array is the
    whole frame). A :class:`Frame` given as ``origin`` was validated where it was made and
    is returned as it is. Raises ``ValueError`` when the array does not fit in the frame.
    """
    if isinstance(origin, Frame):
        return origin
    n = len(size)
    origin_t = (0.0,) * n if origin is None else _as_tuple(origin, n, "origin")
    full_t = (
        tuple(float(s) for s in size) if full_size is None else _as_tuple(full_size, n, "full_size")
    )
    for axis, (o, s, f) in enumerate(zip(origin_t, size, full_t)):
        if f <= 0:
            raise ValueError(f"full_size must be positive on every axis, got {full_t}")
        if o < 0 or o + s > f + 1e-6:
            raise ValueError(
                f"input of size {tuple(size)} at origin {origin_t} does not fit in a frame "
                f"of full_size {full_t} (axis {axis}: need 0 <= origin and "
                f"origin + size <= full_size, got {o} + {s} > {f})"
            )
    return Frame(origin_t, full_t)


@dataclass(frozen=True)
class BatchFrames:
    """The frames of a batch of N arrays of spatial ``size``.

    ``frames`` holds the distinct frames; ``inverse`` (N,) gives each sample's frame, or is
    None when the whole batch shares ``frames[0]``. Made by :func:`batch_frames`.
    """

    size: tuple[int, ...]
    frames: tuple[Frame, ...]
    inverse: torch.Tensor | None
    _unions: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def scaled(self, level: int) -> BatchFrames:
        """The frames at U-Net level ``level``, for arrays ``2**level`` times smaller."""
        return BatchFrames(
            tuple(s // 2**level for s in self.size),
            tuple(f.scaled(level) for f in self.frames),
            self.inverse,
        )

    def evaluation_order(self) -> tuple[list[Frame], torch.Tensor | None]:
        """The frames to evaluate a per-frame map on, and the index (N,) that gives each
        sample its frame's map (None: the maps are already one per sample, or one shared).

        All-distinct frames (random crops) are evaluated in sample order, with no gather;
        otherwise each distinct frame once.
        """
        if self.inverse is None:
            return [self.frames[0]], None
        if len(self.frames) == len(self.inverse):
            return [self.frames[k] for k in self.inverse.tolist()], None
        return list(self.frames), self.inverse

    def pixel_union(
        self, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> PixelUnion:
        """:func:`pixel_union` of the frames in :meth:`evaluation_order`, computed once per
        device and dtype: the gates of one U-Net level share it."""
        key = (str(device), dtype)
        if key not in self._unions:
            frames = self.evaluation_order()[0]
            self._unions[key] = pixel_union(self.size, frames, device=device, dtype=dtype)
        return self._unions[key]

    def per_sample(self, frame_maps: Callable[[list[Frame]], torch.Tensor]) -> torch.Tensor:
        """``frame_maps(frames) -> (K, ...)`` for K frames, as one map per sample:
        (N, ...), or (1, ...) when the batch shares one frame."""
        frames, index = self.evaluation_order()
        maps = frame_maps(frames)
        return maps if index is None else maps[index]


#: Where an array lies: an origin (with a separate full size), a validated :class:`Frame`,
#: or the :class:`BatchFrames` of a batch.
Where = FrameLike | Frame | BatchFrames


def _rows(value: FrameLike, name: str, n: int, default: Sequence[float]) -> torch.Tensor:
    """``value`` as a float64 (n, dim) CPU tensor, one row per sample."""
    dim = len(default)
    if value is None:
        return torch.tensor([list(default)] * n, dtype=torch.float64)
    rows = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    if rows.ndim < 2 and rows.numel() in (1, dim):
        rows = rows.reshape(1, -1).expand(n, dim)
    if tuple(rows.shape) != (n, dim):
        raise ValueError(
            f"per-sample {name}s must be {dim} numbers or an (N, {dim}) tensor with N = {n} "
            f"samples, got shape {tuple(rows.shape)}"
        )
    return rows


def _is_per_sample(value: Where) -> bool:
    if isinstance(value, Frame):
        return False
    if isinstance(value, torch.Tensor):
        return value.ndim == 2
    return isinstance(value, Sequence) and bool(value) and isinstance(value[0], Sequence)


def batch_frames(x: torch.Tensor, origin: Where = None, full_size: FrameLike = None) -> BatchFrames:
    """The validated frames of the samples of ``x`` (N, C, *spatial).

    ``origin`` / ``full_size``: None (each sample is the whole frame), one value per axis
    shared by the batch, or (N, dim) tensors / nested sequences of per-sample values.
    ``origin`` may instead be a :class:`Frame` or :class:`BatchFrames` made for arrays of
    x's size (then ``full_size`` must be None): these pass unchanged. Raises ``ValueError``
    when a frame does not contain its array.
    """
    size, n = tuple(x.shape[2:]), x.shape[0]
    if isinstance(origin, (Frame, BatchFrames)) and full_size is not None:
        raise ValueError(f"full_size must be None when origin is a {type(origin).__name__}")
    if isinstance(origin, BatchFrames):
        if origin.size != size or origin.inverse is not None and len(origin.inverse) != n:
            batch = "" if origin.inverse is None else f"{len(origin.inverse)} samples of "
            raise ValueError(
                f"the frames are of {batch}size {origin.size}, the input has shape {tuple(x.shape)}"
            )
        return origin
    if not (_is_per_sample(origin) or _is_per_sample(full_size)):
        return BatchFrames(size, (resolve_frame(size, origin, full_size),), None)
    rows = torch.cat(
        [_rows(origin, "origin", n, (0,) * len(size)), _rows(full_size, "full_size", n, size)],
        dim=1,
    )
    unique, inverse = torch.unique(rows, dim=0, return_inverse=True)
    dim = len(size)
    frames = tuple(resolve_frame(size, row[:dim], row[dim:]) for row in unique.tolist())
    return BatchFrames(size, frames, None if len(frames) == 1 else inverse.to(x.device))


def coordinate_grid(
    size: Sequence[int],
    *,
    origin: FrameLike | Frame = None,
    full_size: FrameLike = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Normalised sensor coordinates of every pixel of an input of spatial ``size``.

    Returns a tensor of shape ``(len(size), *size)``; channel ``a`` holds the coordinate
    along spatial axis ``a`` (for 2D: channel 0 varies along H, channel 1 along W).

    >>> coordinate_grid((2, 3))[1]
    tensor([[-0.6667,  0.0000,  0.6667],
            [-0.6667,  0.0000,  0.6667]])
    """
    size = tuple(int(s) for s in size)
    if not 1 <= len(size) <= 3 or any(s < 1 for s in size):
        raise ValueError(f"size must have 1 to 3 positive entries, got {size}")
    return resolve_frame(size, origin, full_size).grid(size, device=device, dtype=dtype)


def stacked_axes(
    size: Sequence[int],
    frames: Sequence[Frame],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> list[torch.Tensor]:
    """The coordinates of K frames along each axis at once: ``len(size)`` tensors,
    tensor ``a`` of shape (K, size[a]) with row k in frame k (:meth:`Frame.axes`' rule)."""
    like = dict(device=device, dtype=dtype or torch.get_default_dtype())
    origin = torch.tensor([f.origin for f in frames], **like)
    full = torch.tensor([f.full_size for f in frames], **like)
    return [
        (2 * (origin[:, a, None] + torch.arange(n, **like)) + 1) / full[:, a, None] - 1
        for a, n in enumerate(size)
    ]


class PixelUnion(NamedTuple):
    """The distinct pixels of K frames of one array size (see :func:`pixel_union`).

    ``points``: (dim, P) the coordinates of the P distinct pixels; ``index``: (K, *size)
    the point each frame's pixel is, or None for one frame (its points are its pixels in
    order).
    """

    points: torch.Tensor
    index: torch.Tensor | None


def pixel_union(
    size: Sequence[int],
    frames: Sequence[Frame],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> PixelUnion:
    """The union of the pixels of K frames of arrays of ``size``: each coordinate once.

    A pointwise map of the coordinates (a gate) evaluated at ``points`` and gathered by
    ``index`` equals the map evaluated on every frame, at the cost of the distinct pixels
    only: overlapping training crops share theirs. Pixels are the same when their
    coordinates are, computed in float64 and then cast to ``dtype``.

    >>> union = pixel_union((2, 2), [Frame((0.0, 0.0), (4.0, 4.0)), Frame((1.0, 0.0), (4.0, 4.0))])
    >>> union.points.shape[1], union.index.tolist()
    (6, [[[0, 1], [2, 3]], [[2, 3], [4, 5]]])
    """
    dtype = dtype or torch.get_default_dtype()
    if len(frames) == 1:
        grid = frames[0].grid(size, device=device, dtype=torch.float64)
        return PixelUnion(grid.reshape(len(size), -1).to(dtype), None)
    lattice = _lattice_union(size, frames, device=device, dtype=dtype)
    if lattice is not None:
        return lattice
    axes = stacked_axes(size, frames, device=device, dtype=torch.float64)
    # Number the distinct values along each axis, then each pixel by its values' numbers.
    values, key = [], None
    for a, coords in enumerate(axes):
        distinct, inverse = torch.unique(coords, return_inverse=True)
        shape = [len(frames)] + [1] * len(size)
        shape[1 + a] = size[a]
        key = inverse.view(shape) if key is None else key * len(distinct) + inverse.view(shape)
        values.append(distinct)
    keys, index = _distinct(key, math.prod(len(v) for v in values))
    coords = []
    for distinct in reversed(values):
        coords.append(distinct[keys % len(distinct)])
        keys = keys // len(distinct)
    return PixelUnion(torch.stack(coords[::-1]).to(dtype), index)


# A table of every possible pixel is marked instead of sorting the pixels while it holds at
# most this many entries per pixel.
_TABLE_FACTOR = 4


def _lattice_step(frames: Sequence[Frame]) -> int | None:
    """The smallest power of two ``s`` (at most 1024) that makes every frame's origin and
    their common full size whole numbers, or None."""
    full = frames[0].full_size
    if any(f.full_size != full for f in frames):
        return None
    values = [v for f in frames for v in f.origin] + list(full)
    for power in range(11):
        step = 2**power
        if all(float(v * step).is_integer() for v in values):
            return step
    return None


def _lattice_union(
    size: Sequence[int],
    frames: Sequence[Frame],
    *,
    device: torch.device | str | None,
    dtype: torch.dtype,
) -> PixelUnion | None:
    """:func:`pixel_union` of frames that lie on one lattice (None otherwise): crops of one
    sensor at whole-pixel origins, at every U-Net level (origins in steps of 2**-level).

    Pixel ``i`` of a frame at ``origin`` sits at lattice position ``(origin + i) * s`` of
    ``full_size * s`` positions; marking each frame's positions in a table of the lattice
    numbers the distinct pixels in the order of their coordinates, as sorting would, with
    one strided slice per frame instead of a sort over every pixel.
    """
    step = _lattice_step(frames)
    if step is None:
        return None
    lattice = [int(f * step) for f in frames[0].full_size]
    if math.prod(lattice) > _TABLE_FACTOR * len(frames) * math.prod(size):
        return None
    corners = [[int(o * step) for o in f.origin] for f in frames]
    spans = [
        tuple(slice(c, c + n * step, step) for c, n in zip(corner, size)) for corner in corners
    ]
    present = torch.zeros(lattice, dtype=torch.bool, device=device)
    for span in spans:
        present[span] = True
    numbers = (torch.cumsum(present.view(-1), 0) - 1).view(lattice)
    index = torch.stack([numbers[span] for span in spans])
    # Each axis's coordinates at its lattice positions (Frame.axes' rule), looked up.
    tables = [
        ((2 * (torch.arange(n, device=device, dtype=torch.float64) / step) + 1) / f - 1).to(dtype)
        for n, f in zip(lattice, frames[0].full_size)
    ]
    positions = present.nonzero().t()  # (dim, P)
    return PixelUnion(torch.stack([t[p] for t, p in zip(tables, positions)]), index)


def _distinct(key: torch.Tensor, bound: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sorted distinct values of an integer tensor ``key`` in [0, bound) and the index
    of each element among them (``torch.unique(key, return_inverse=True)``)."""
    if bound > _TABLE_FACTOR * key.numel():
        return torch.unique(key, return_inverse=True)
    # Marking a table of every possible key is cheaper than sorting when it is small.
    present = torch.zeros(bound, dtype=torch.bool, device=key.device)
    present[key.reshape(-1)] = True
    return present.nonzero().squeeze(1), (torch.cumsum(present, 0) - 1)[key]
