"""CoordGate: multiply feature channels by a gate computed from sensor coordinates.

Paper Eq. (3): ``y[i, a] = h(x)[i, a] * g(C[i])[a]``. The gate ``g`` depends on nothing but
the coordinates, so once trained it is a constant map: in eval mode it is computed once
per (size, origin, full_size, device, dtype) and cached, and inference costs one
elementwise multiply, in place on the convolution's output
(:func:`~coordgate.layers.fused.gated_conv`).

The MLP gate of a batch of frames runs once over the union of their pixels
(:func:`~coordgate.frames.pixel_union`): a batch of random training crops, each with its
own sensor origin, costs one pass of the encoder over the distinct pixels the crops cover
(overlapping crops share theirs), gathered into one gate per crop; exact, because the gate
is a pointwise function of the coordinates, and gradients flow back through the gather to
every pixel's encoder evaluation. The encoder runs hidden-major, (features, points), so each
Linear is one matrix product over all the points.

Precision. The coordinates, the encoder and the low-resolution map's interpolation are
float32 (or the parameters' float64) also when the features are bf16 or float16, under
autocast or not; only the gate is cast to the features' dtype. In bf16 the coordinates of a
256-px sensor's outer pixels are 2 px apart, and on the CPU oneDNN's bf16 matrix product is
slow for a number of points that changes every step (the union of random crops): a CG
U-Net(3) training step under bf16 autocast, one thread, 16 crops of 64² with random
origins, took 0.219 s with a bf16 encoder and 0.067 s with this float32 one (0.11 s in
float32 throughout).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import nn

from coordgate.frames import (
    Frame,
    FrameLike,
    PixelUnion,
    Where,
    batch_frames,
    pixel_union,
    resolve_frame,
)
from coordgate.layers.shapes import check_dim, check_features

__all__ = ["GATE_MODES", "CoordGate", "GateMode", "coordinate_encoder", "encode_pixels"]

#: How a gate is computed from the coordinates (see :class:`CoordGate`).
GateMode = Literal["mlp", "map", "lowres"]
GATE_MODES: tuple[GateMode, ...] = get_args(GateMode)
# The eval-mode gate cache keeps the most recently used gates within both bounds.
_CACHE_ENTRIES = 64
_CACHE_BYTES = 256 * 2**20
# Reduced-precision floats, for which coordinates and the encoder run in float32.
_REDUCED = (torch.float16, torch.bfloat16)
# Working memory of the encoder's hidden activations when an eval gate is built in bands.
_BAND_BYTES = 32 * 2**20


def coordinate_encoder(
    dim: int, out_features: int, hidden: int, layers: int, activation: type[nn.Module] = nn.GELU
) -> nn.Sequential:
    """A pixel-wise MLP (points, dim) -> (points, out_features) of ``layers`` Linear layers
    with ``activation`` between consecutive ones (bare stacked Linears would collapse to an
    affine ramp of the coordinates)."""
    if layers < 1 or hidden < 1:
        raise ValueError(f"layers and hidden must be >= 1, got {layers=}, {hidden=}")
    widths = [dim] + [hidden] * (layers - 1) + [out_features]
    modules: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        modules += [nn.Linear(a, b)] + ([activation()] if i < layers - 1 else [])
    return nn.Sequential(*modules)


def encode_pixels(encoder: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Apply a pixel-wise ``encoder`` to static inputs (F_in, *size) -> (F_out, *size)."""
    flat = encoder(inputs.reshape(inputs.shape[0], -1).transpose(0, 1))
    return flat.transpose(0, 1).reshape(flat.shape[1], *inputs.shape[1:])


def _keys_kernel(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel (a = -0.5): C1-smooth, interpolating, sums to one."""
    t = t.abs()
    near = (1.5 * t - 2.5) * t * t + 1
    far = ((-0.5 * t + 2.5) * t - 4) * t + 2
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def cubic_weights(coords: torch.Tensor, knots: int) -> torch.Tensor:
    """Weights (len(coords), knots) that interpolate ``knots`` values spread evenly over
    [-1, 1] at ``coords``, with Keys' cubic kernel and the edge values repeated outside."""
    t = (coords + 1) * (knots - 1) / 2
    positions = torch.arange(-1, knots + 1, device=coords.device, dtype=coords.dtype)
    w = _keys_kernel(t[:, None] - positions[None, :])
    if knots == 1:
        return w.sum(1, keepdim=True)
    inner = w[:, 1:-1].clone()
    inner[:, 0] += w[:, 0]
    inner[:, -1] += w[:, -1]
    return inner


class CoordGate(nn.Module):
    """Multiply features by a gate computed from sensor coordinates.

    x: (N, C, *spatial) -> (N, C, *spatial), with ``dim`` spatial axes.

    Args:
        channels: number of feature channels C (one gate value per channel and pixel).
        dim: number of spatial axes (1, 2 or 3).
        hidden: width of the coordinate encoder's hidden layers (``mode="mlp"``); None:
            as wide as ``channels``, the paper's CG(L,k,c,p) encoder of p layers of c nodes.
        layers: number of fully-connected layers of the encoder (``mode="mlp"``), with
            a nonlinearity between consecutive layers so the gate is not an affine ramp.
        mode: ``"mlp"`` (pixel-wise MLP on coordinates, any input size), ``"map"`` (a
            directly trainable map of fixed ``size``, paper §III) or ``"lowres"`` (a trainable
            ``grid``-sized map upsampled with cubic interpolation, any input size).
        size: spatial size of the full frame for ``mode="map"``.
        grid: knots per axis of the ``"lowres"`` map.
        activation: nonlinearity class between the encoder's layers.

    The gate starts at the identity (all ones): the encoder's last layer is zero-initialised
    with a bias of one, and the maps start at one.

    >>> import torch
    >>> gate = CoordGate(8)
    >>> x = torch.rand(2, 8, 32, 48)
    >>> bool(torch.equal(gate(x), x))  # the identity until trained
    True
    >>> gate(x[..., :16, :16], origin=(16, 32), full_size=(32, 48)).shape  # a crop
    torch.Size([2, 8, 16, 16])
    """

    def __init__(
        self,
        channels: int,
        *,
        dim: int = 2,
        hidden: int | None = 32,
        layers: int = 2,
        mode: GateMode = "mlp",
        size: Sequence[int] | None = None,
        grid: int = 8,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        if mode not in GATE_MODES:
            raise ValueError(f"mode must be one of {GATE_MODES}, got {mode!r}")
        self.channels, self.dim, self.mode = channels, check_dim(dim), mode
        self.size: tuple[int, ...] | None = None
        self.encoder: nn.Sequential | None = None
        self.map: nn.Parameter | None = None
        if mode == "mlp":
            hidden = channels if hidden is None else hidden
            self.encoder = coordinate_encoder(dim, channels, hidden, layers, activation)
            last = self.encoder[-1]
            nn.init.zeros_(last.weight)
            nn.init.ones_(last.bias)
            self.hidden, self.layers = hidden, layers
        elif mode == "map":
            if size is None or len(size) != dim:
                raise ValueError(f"mode='map' needs size with {dim} entries, got {size!r}")
            self.size = tuple(int(s) for s in size)
            self.map = nn.Parameter(torch.ones(channels, *self.size))
        else:
            if grid < 1:
                raise ValueError(f"grid must be >= 1, got {grid!r}")
            self.grid = grid
            self.map = nn.Parameter(torch.ones(channels, *([grid] * dim)))
        # key -> gate
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def extra_repr(self) -> str:
        detail = {
            "mlp": lambda: f"hidden={self.hidden}, layers={self.layers}",
            "map": lambda: f"size={self.size}",
            "lowres": lambda: f"grid={self.grid}",
        }[self.mode]()
        return f"{self.channels}, dim={self.dim}, mode={self.mode!r}, {detail}"

    @property
    def cache_bytes(self) -> int:
        """Memory held by the eval-mode gate cache (at most 256 MiB and 64 gates)."""
        return sum(g.numel() * g.element_size() for g in self._cache.values())

    def train(self, mode: bool = True) -> CoordGate:
        # Entering training frees the eval gates; eval() on an eval model keeps them (a
        # parameter change invalidates them through the cache key anyway).
        if mode or self.training:
            self._cache.clear()
        return super().train(mode)

    def gate(
        self,
        size: Sequence[int],
        origin: FrameLike | Frame = None,
        full_size: FrameLike = None,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """The gate g(C) for an input of spatial ``size`` at ``origin`` in ``full_size``
        (or in the :class:`~coordgate.frames.Frame` given as ``origin``).

        Returns (C, *size). Always recomputed (see ``forward`` for the cached path).
        """
        size = tuple(int(s) for s in size)
        frame = resolve_frame(size, origin, full_size)
        param = next(self.parameters())
        device = param.device if device is None else device
        dtype = param.dtype if dtype is None else dtype
        if self.mode == "map":
            return self._crop_map(size, frame).to(dtype)
        if self.mode == "mlp":
            points = pixel_union(size, [frame], device=device, dtype=_exact(dtype)).points
            return self._encode(points, dtype).view(self.channels, *size)
        exact = _exact(dtype)
        with torch.autocast(torch.device(device).type, enabled=False):
            axes = frame.axes(size, device=device, dtype=exact)
            out = self.map.to(exact)
            for a, coords in enumerate(axes):
                w = cubic_weights(coords, self.grid)  # (size[a], grid)
                out = torch.tensordot(out, w, dims=([1 + a], [1]))  # interpolated axis last
                out = torch.movedim(out, out.ndim - 1, 1 + a)
        return out.to(dtype)

    def gates(
        self,
        size: Sequence[int],
        origins: Sequence[Sequence[float]],
        full_sizes: Sequence[Sequence[float]],
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """The gates of K frames at once: ``origins`` / ``full_sizes`` (K, dim) -> (K, C, *size).

        Equal to stacking :meth:`gate` over the frames; the MLP gate evaluates all of them
        once over the union of their pixels (see the module docstring). Always recomputed.
        """
        size = tuple(int(s) for s in size)
        if len(origins) != len(full_sizes) or not len(origins):
            raise ValueError(
                f"origins and full_sizes must give the same number (>= 1) of frames, "
                f"got {len(origins)} and {len(full_sizes)}"
            )
        frames = [resolve_frame(size, o, f) for o, f in zip(origins, full_sizes)]
        return self._gates(size, frames, device=device, dtype=dtype)

    def _gates(
        self,
        size: tuple[int, ...],
        frames: Sequence[Frame],
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """:meth:`gates` of validated frames."""
        if not self._encodes_pixels():
            return torch.stack([self.gate(size, f, device=device, dtype=dtype) for f in frames])
        param = next(self.parameters())
        device = param.device if device is None else device
        dtype = param.dtype if dtype is None else dtype
        union = pixel_union(size, frames, device=device, dtype=_exact(dtype))
        return self._union_gates(size, union, dtype)

    def _encodes_pixels(self) -> bool:
        """Whether the gate is the encoder on coordinates, evaluated over a union of pixels;
        other gates (maps, or a subclass's own gate()) are stacked frame by frame."""
        return self.mode == "mlp" and type(self).gate is CoordGate.gate

    def _union_gates(
        self, size: tuple[int, ...], union: PixelUnion, dtype: torch.dtype
    ) -> torch.Tensor:
        """The encoder over the union's points, gathered into each frame's gate (K, C, *size)
        of ``dtype``."""
        out = self._encode(union.points, dtype)
        if union.index is None:
            return out.view(1, self.channels, *size)
        count = union.index.shape[0]
        gates = out.index_select(1, union.index.view(-1)).view(self.channels, count, *size)
        return gates.transpose(0, 1)  # a strided view: the multiply reads it as it is

    def _encode(self, points: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The MLP gate at P points: coordinates (dim, P) -> gate values (C, P) of ``dtype``,
        computed in float32 or wider, autocast off (see the module docstring)."""
        exact = _exact(points.dtype)
        with torch.autocast(points.device.type, enabled=False):
            h = points.to(exact)
            for module in self.encoder:
                if isinstance(module, nn.Linear):
                    weight, bias = module.weight.to(exact), module.bias.to(exact)
                    h = torch.addmm(bias[:, None], weight, h)
                else:
                    h = module(h.unsqueeze(0)).squeeze(0)  # pointwise, features on axis 1
        return h.to(dtype)

    def _crop_map(self, size: tuple[int, ...], frame: Frame) -> torch.Tensor:
        origin, full_size = frame
        if tuple(full_size) != tuple(float(s) for s in self.size) or any(
            o != math.floor(o) for o in origin
        ):
            raise ValueError(
                f"CoordGate(mode='map') is trained on a frame of size {self.size}: "
                f"full_size must be {self.size} and origin whole pixels, got "
                f"full_size={full_size}, origin={origin}"
            )
        index = tuple(slice(int(o), int(o) + s) for o, s in zip(origin, size))
        return self.map[(slice(None),) + index]

    def _cache_key(self, size, frame: Frame, device, dtype) -> tuple:
        params = tuple((p.data_ptr(), p._version) for p in self.parameters())
        return (size, frame.origin, frame.full_size, str(device), dtype, params)

    def _cached_gate(self, size, frame: Frame, device, dtype) -> torch.Tensor:
        """The eval gate (C, *size) from the cache."""
        key = self._cache_key(size, frame, device, dtype)
        entry = self._cache.get(key)
        if entry is None:
            with torch.inference_mode(False), torch.no_grad():
                gate = self._gate_in_bands(size, frame, device, dtype)
            entry = self._cache[key] = gate
            while len(self._cache) > 1 and (
                len(self._cache) > _CACHE_ENTRIES or self.cache_bytes > _CACHE_BYTES
            ):
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return entry

    def _gate_in_bands(self, size, frame: Frame, device, dtype) -> torch.Tensor:
        """:meth:`gate`, built a band of rows at a time so that the encoder's hidden
        activations stay within ``_BAND_BYTES`` (each pixel's value is unchanged)."""
        hidden = getattr(self, "hidden", 1) if self.mode == "mlp" else 1
        row = math.prod(size[1:]) * hidden * torch.finfo(dtype).bits // 8
        step = max(1, _BAND_BYTES // max(row, 1))
        if self.mode != "mlp" or step >= size[0]:
            return self.gate(size, frame, device=device, dtype=dtype)
        out = torch.empty(self.channels, *size, device=device, dtype=dtype)
        origin = frame.origin
        for r in range(0, size[0], step):
            band = (min(step, size[0] - r),) + tuple(size[1:])
            shifted = Frame((origin[0] + r,) + tuple(origin[1:]), frame.full_size)
            out[:, r : r + band[0]] = self.gate(band, shifted, device=device, dtype=dtype)
        return out

    def forward(
        self, x: torch.Tensor, origin: Where = None, full_size: FrameLike = None
    ) -> torch.Tensor:
        """x: (N, C, *spatial) -> x * g(C), same shape.

        ``origin`` / ``full_size`` place ``x`` in the sensor frame, in ``x``'s own pixel
        units (fractional at a downsampled level: ``origin / 2**level``). ``origin`` may
        also be an (N, dim) tensor, one origin per sample (e.g. random training crops), or
        a validated :class:`~coordgate.frames.Frame` / :class:`~coordgate.frames.BatchFrames`.
        In eval mode the gate is a cached constant; tracing and export compute it in the graph.
        """
        return x * self.weights_for(x, origin, full_size)

    def weights_for(
        self, x: torch.Tensor, origin: Where = None, full_size: FrameLike = None
    ) -> torch.Tensor:
        """The gate for features ``x``, shaped to broadcast against them: (1 or N, C, *spatial).

        Per-sample frames get one gate evaluation over the union of their pixels (in eval
        mode, crops of one cached gate of the whole sensor where the frames allow).
        """
        check_features(x, self.channels, self.dim, "CoordGate")
        frames = batch_frames(x, origin, full_size)
        order, index = frames.evaluation_order()
        if self._computes_in_graph() and self._encodes_pixels():
            # the gates of one level share its union of pixels
            union = frames.pixel_union(device=x.device, dtype=_exact(x.dtype))
            weights = self._union_gates(frames.size, union, x.dtype)
        else:
            weights = self.frame_weights(frames.size, order, like=x)
        return weights if index is None else weights[index]

    def frame_weights(
        self, size: tuple[int, ...], frames: Sequence[Frame], *, like: torch.Tensor
    ) -> torch.Tensor:
        """The gates of K validated frames (K, C, *size) on ``like``'s device and dtype.

        Training and export evaluate all frames at once, over the union of their pixels
        (:meth:`gates`). In eval mode, frames whose origins and common ``full_size`` are
        whole pixels (the whole image, crops and tiles on the pooling grid, at every U-Net
        level) are cut from one cached gate of the whole frame; another single frame has its
        own cached gate.
        """
        if self._computes_in_graph():
            return self._gates(size, frames, device=like.device, dtype=like.dtype)
        whole = self._frame_table(frames, like)
        if whole is not None:
            crops = [
                whole[
                    (slice(None),)
                    + tuple(slice(int(o), int(o) + n) for o, n in zip(f.origin, size))
                ]
                for f in frames
            ]
            return torch.stack(crops) if len(crops) > 1 else crops[0][None]
        if len(frames) == 1:
            return self._cached_gate(size, frames[0], like.device, like.dtype)[None]
        return self._gates(size, frames, device=like.device, dtype=like.dtype)

    def _frame_table(self, frames: Sequence[Frame], like: torch.Tensor) -> torch.Tensor | None:
        """The cached gate of the whole common frame when every crop lies on its pixels."""
        full = frames[0].full_size
        whole = tuple(int(f) for f in full)
        values = [v for f in frames for v in f.origin] + list(full)
        if any(f.full_size != full for f in frames) or any(v != int(v) for v in values):
            return None
        table_bytes = self.channels * math.prod(whole) * like.element_size()
        if table_bytes > _CACHE_BYTES:
            return None
        return self._cached_gate(whole, Frame((0.0,) * len(whole), full), like.device, like.dtype)

    def _computes_in_graph(self) -> bool:
        """Training, tracing and export compute the gate in the graph; eval caches it."""
        exporting = torch.jit.is_tracing() or torch.compiler.is_compiling()
        return self.training or exporting


def _exact(dtype: torch.dtype) -> torch.dtype:
    """The dtype coordinates and the encoder run in for features of ``dtype``."""
    return torch.float32 if dtype in _REDUCED else dtype
