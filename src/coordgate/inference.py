"""Apply a trained model to images of any size: whole-image or tiled, on sensor coordinates.

:func:`predict` runs a model on whole images or on overlapping tiles. Every window passes
its own global origin to the model, so coordinate-aware layers see each pixel where it sits
on the sensor, and an output pixel is taken only from windows in which it lies at least
half a receptive field away from an edge the window shares with the image's interior
(never where the network saw its zero padding instead of real neighbours;
:func:`coordgate.tiling.plan_windows` places and weighs the windows). Overlaps blend with a
raised-cosine ramp inside that valid band. With window starts on multiples of the
network's ``required_multiple`` (its pooling grid), tiled prediction then reproduces
whole-image prediction.

An image whose size is not a multiple of ``required_multiple`` is covered by windows
that are (the largest such multiple, at both ends, blended), so the coordinates stay on
the sensor; only an image smaller than one multiple is padded (reflect), and a
coordinate-aware model then needs room for the padding inside its sensor frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from coordgate.frames import Frame, FrameLike, resolve_frame
from coordgate.models.interface import DeblurringModel, check_deblurring_model
from coordgate.tiling import TilePlan, balanced_tile, plan_windows

__all__ = [
    "Tile",
    "default_overlap",
    "default_tile",
    "predict",
]

#: How :func:`predict` tiles an image: None (whole), ``"auto"`` (by memory) or the tile
#: side in pixels, one int or (height, width).
Tile = int | Sequence[int] | Literal["auto"] | None
_RAMP = 16  # pixels of raised-cosine blending beyond the two half receptive fields


def _round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def default_overlap(model: DeblurringModel) -> int:
    """Overlap between neighbouring tiles: two half receptive fields plus a blending ramp,
    rounded up to the model's ``required_multiple``."""
    return _round_up(2 * (model.receptive_field // 2) + _RAMP, model.required_multiple)


def default_tile(model: DeblurringModel, memory_budget: int = 1 << 30, itemsize: int = 4) -> int:
    """The largest tile side whose estimated activations fit in ``memory_budget`` bytes,
    a multiple of the model's ``required_multiple``, and at least two overlaps (so that
    at least about half of each tile is new output)."""
    multiple = model.required_multiple
    side = int(math.sqrt(memory_budget / (model.activation_channels * itemsize)))
    return max(side // multiple * multiple, 2 * default_overlap(model))


def _as_batch(image, in_channels: int) -> tuple[torch.Tensor, int]:
    """``image`` (H, W), (C, H, W) or (N, C, H, W), array or tensor -> float (N, C, H, W)."""
    if isinstance(image, np.ndarray):
        if not np.isrealobj(image):
            raise ValueError(f"image must hold real numbers, got {image.dtype}")
        x = torch.from_numpy(np.asarray(image, dtype=np.float32))
    elif isinstance(image, torch.Tensor):
        if image.is_complex():
            raise ValueError(f"image must hold real numbers, got {image.dtype}")
        x = image
    else:
        raise ValueError(f"image must be a numpy array or torch tensor, got {type(image).__name__}")
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"image must be (H, W), (C, H, W) or (N, C, H, W), got {tuple(x.shape)}")
    ndim = x.ndim
    x = x.reshape((1,) * (4 - ndim) + tuple(x.shape))
    if x.numel() == 0:
        raise ValueError(f"image is empty, shape {tuple(image.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(
            f"the model takes {in_channels} channel(s): image must be (H, W), "
            f"({in_channels}, H, W) or (N, {in_channels}, H, W), got {tuple(image.shape)}"
        )
    return x, ndim


def _tile_sizes(tile, multiple: int) -> tuple[int, int]:
    sizes = (tile, tile) if isinstance(tile, int) else tuple(tile)
    if len(sizes) != 2 or any(
        isinstance(s, bool) or not isinstance(s, int) or s < multiple or s % multiple for s in sizes
    ):
        raise ValueError(
            f"tile must be 'auto', None or 1-2 positive multiples of the model's "
            f"required multiple {multiple}, got {tile!r}"
        )
    return sizes


def _padding(length: int, origin: float, full: float, multiple: int, aware: bool):
    """(before, after) padding that brings a too-short axis up to ``multiple`` pixels,
    inside the sensor frame when the model reads coordinates."""
    total = max(multiple - length, 0)
    after = total if not aware else min(total, int(math.floor(full - origin - length)))
    before = total - after
    if aware and before > origin:
        raise ValueError(
            f"an image axis of {length} pixels is shorter than the model's required multiple "
            f"{multiple}, and the sensor frame (origin {origin}, full_size {full}) leaves no "
            f"room to pad it; give a larger image"
        )
    return before, after


def _estimated_bytes(model: DeblurringModel, pixels: int, batch: int, itemsize: int) -> int:
    return pixels * batch * model.activation_channels * itemsize


def predict(
    model: DeblurringModel,
    image: np.ndarray | torch.Tensor,
    *,
    tile: Tile = None,
    overlap: int | None = None,
    origin: FrameLike = None,
    full_size: FrameLike = None,
    batch_size: int = 4,
    memory_budget: int = 1 << 30,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray | torch.Tensor:
    """Run ``model`` on ``image`` in eval mode, without gradients, on the model's device.

    image: (H, W), (C, H, W) or (N, C, H, W) numpy array or tensor, C = model.in_channels.
    Returns the output in the same layout with C = model.out_channels, as a float numpy
    array for an array input, else a tensor on the input's device.

    Args:
        tile: None (whole image), ``"auto"`` (whole image unless its estimated activation
            memory exceeds ``memory_budget`` bytes, else tiles no larger than
            :func:`default_tile`, sized by :func:`~coordgate.tiling.balanced_tile`), or the
            tile side (one int, or (height, width)) in pixels, a multiple of
            ``model.required_multiple``.
        overlap: pixels shared by neighbouring tiles; default :func:`default_overlap`.
            At least the receptive field for tiles to match whole-image prediction.
        origin, full_size: where the image lies on the sensor (full-resolution pixels);
            default: the image is the whole frame.
        batch_size: windows run through the model at once (fewer if the estimated
            memory of a batch exceeds ``memory_budget``).
        memory_budget: bytes of activations to aim for (an estimate, see
            ``model.activation_channels``).
        progress: called as ``progress(done, total)`` with the number of windows run
            after each batch of them; an exception raised by it stops the prediction
            (this is how a caller cancels).

    >>> import torch
    >>> from coordgate.models import build_model
    >>> model = build_model("cg-unet3", base_channels=4)
    >>> image = torch.rand(100, 120)  # any size: padded to the model's multiple, then cropped
    >>> predict(model, image).shape
    torch.Size([100, 120])
    >>> tiled = predict(model, image, tile=96)  # overlap: the receptive field (64 px)
    >>> bool((tiled - predict(model, image)).abs().max() < 1e-5)  # tiles match the whole
    True
    """
    model = check_deblurring_model(model, "predict")
    parameter = next(model.parameters())
    x, ndim = _as_batch(image, model.in_channels)
    h, w = x.shape[2:]
    frame = resolve_frame((h, w), origin, full_size)
    overlap = _check_batching(model, batch_size, overlap)
    itemsize = parameter.element_size()
    sizes = _tile_sizes_for(model, tile, (h, w), overlap, memory_budget, itemsize)
    x, pads = _pad_for_model(model, x.to(device=parameter.device, dtype=parameter.dtype), frame)
    origin_padded = [o - p[0] for o, p in zip(frame.origin, pads)]
    rows, cols = (
        plan_windows(length, size, overlap, model.required_multiple, model.receptive_field // 2)
        for length, size in zip(x.shape[2:], sizes)
    )
    per_batch = batch_size
    while per_batch > 1 and _estimated_bytes(model, rows.size * cols.size, per_batch, itemsize) > (
        memory_budget
    ):
        per_batch //= 2
    out = _run_windows(model, x, rows, cols, origin_padded, frame.full_size, per_batch, progress)
    out = out[:, :, pads[0][0] : pads[0][0] + h, pads[1][0] : pads[1][0] + w]
    if ndim < 4:
        out = out[0, 0] if ndim == 2 and out.shape[1] == 1 else out[0]
    if isinstance(image, np.ndarray):
        return out.float().cpu().numpy()
    return out.to(image.device)


def _check_batching(model: DeblurringModel, batch_size: int, overlap: int | None) -> int:
    """Validate ``batch_size`` and ``overlap``; returns the overlap (default: the model's)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if overlap is None:
        overlap = default_overlap(model)
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f"overlap must be a non-negative integer, got {overlap!r}")
    return overlap


def _tile_sizes_for(
    model: DeblurringModel,
    tile: Tile,
    shape: tuple[int, int],
    overlap: int,
    memory_budget: int,
    itemsize: int,
) -> tuple[int | None, int | None]:
    """The (height, width) of the tiles ``predict`` runs (None: the whole axis at once)."""
    if tile == "auto":
        if _estimated_bytes(model, shape[0] * shape[1], 1, itemsize) <= memory_budget:
            return (None, None)
        largest = default_tile(model, memory_budget, itemsize)
        sizes = tuple(balanced_tile(n, largest, overlap, model.required_multiple) for n in shape)
    else:
        sizes = (None, None) if tile is None else _tile_sizes(tile, model.required_multiple)
    if any(s is not None and overlap >= s for s in sizes):
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile {sizes}")
    return sizes


def _pad_for_model(
    model: DeblurringModel, x: torch.Tensor, frame: Frame
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """``x`` (N, C, H, W) padded to the model's size multiple, and the (before, after)
    padding of each axis."""
    h, w = x.shape[2:]
    multiple, aware = model.required_multiple, model.uses_coordinates
    pads = [_padding(*a, multiple, aware) for a in zip((h, w), frame.origin, frame.full_size)]
    if any(sum(p) for p in pads):
        # reflect needs more pixels than it pads; a 1-pixel axis can only be replicated
        mode = "reflect" if min(h, w) > max(max(p) for p in pads) else "replicate"
        x = F.pad(x, (*pads[1], *pads[0]), mode=mode)
    return x, pads


def _run_windows(
    model: DeblurringModel,
    x: torch.Tensor,
    rows: TilePlan,
    cols: TilePlan,
    origin: Sequence[float],
    full_size: Sequence[float],
    per_batch: int,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Weighted sum of the model's outputs over all windows, divided by the summed weights.

    x: (N, C, H, W) -> (N, out_channels, H, W)
    """
    device, dtype = x.device, x.dtype
    accumulate = torch.promote_types(dtype, torch.float32)
    jobs = [
        (i, r, c, wr, wc)
        for i in range(x.shape[0])
        for r, wr in zip(rows.starts, rows.weights)
        for c, wc in zip(cols.starts, cols.weights)
    ]
    out = total = None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for k in range(0, len(jobs), per_batch):
                batch = jobs[k : k + per_batch]
                crops = torch.stack(
                    [x[i, :, r : r + rows.size, c : c + cols.size] for i, r, c, _, _ in batch]
                )
                origins = torch.tensor(
                    [[origin[0] + r, origin[1] + c] for _, r, c, _, _ in batch],
                    dtype=torch.float64,
                )
                y = model(crops, origin=origins, full_size=full_size)
                if out is None:
                    out = torch.zeros(
                        x.shape[0], y.shape[1], *x.shape[2:], device=device, dtype=accumulate
                    )
                    total = torch.zeros(x.shape[2:], device=device, dtype=torch.float64)
                for (i, r, c, wr, wc), y_window in zip(batch, y):
                    weight = torch.outer(wr, wc).to(device)
                    window = (slice(r, r + rows.size), slice(c, c + cols.size))
                    out[i][(slice(None), *window)] += y_window.to(accumulate) * weight.to(
                        accumulate
                    )
                    if i == 0:
                        total[window] += weight
                # The gates' caches are kept across batches (and calls, for a model in eval
                # mode): windows on the pooling grid cut their gates from one cached gate
                # of the sensor per level (see CoordGate.frame_weights).
                if progress is not None:
                    progress(k + len(batch), len(jobs))
    finally:
        model.train(was_training)
    return (out / total.to(accumulate)).to(dtype)
