"""The U-Net family of paper Fig. 4(a): U-Net(d), CG U-Net(d) and CoordConv-UNet.

U-Net(d) has ``d`` resolution levels; level ``l`` runs two 3x3 convolutions + ReLU with
``base_channels * 2**l`` channels (``n_c[d] = base_channels * 2**(d-1)`` in the deepest),
skip connections concatenate encoder and decoder features, a 1x1 convolution gives the
output. Choices where the paper leaves room:

- Downsampling is a 2x2 max-pool and upsampling a 2x2 transposed convolution of stride 2
  that halves the channels (Ronneberger et al.'s "up-conv"): learnable, on exactly the
  pooling grid, one ONNX operator.
- CG U-Net(d) puts a :class:`~coordgate.layers.CoordGate` at every resolution change
  (paper: "at each down- or up-sampling point"): on the output of each encoder level's
  convolutions before its max-pool (the gated features feed the pool and the skip), and
  on the output of the bottleneck and of each decoder level before its up-convolution:
  ``2 * (d - 1)`` gates. Like Fig. 2 (conv block ``h`` then gate), each gate weighs the
  channels of the convolutions just before it.
- CoordConv-UNet (El Jurdi et al. 2021) makes the first convolution of every level a
  :class:`~coordgate.layers.CoordConv`, so coordinates reach every resolution.

Sensor coordinates: ``origin`` / ``full_size`` are given in full-resolution pixels; level
``l`` sees ``origin / 2**l`` and ``full_size / 2**l``, so every level agrees on where a
pixel sits on the sensor (see :mod:`coordgate.layers.coords`). ``origin`` may be an (N, 2)
tensor of per-sample origins (random crops in one batch); each distinct frame's gate or
coordinate map is computed once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from coordgate.layers import CoordConv, CoordGate
from coordgate.layers.coords import resolve_frame
from coordgate.layers.shapes import check_features
from coordgate.models.registry import register_model

__all__ = [
    "COORDINATE_MODES",
    "CoordConvUNet",
    "CoordGateUNet",
    "BatchFrames",
    "UNet",
    "apply_coord_conv",
    "apply_gate",
    "batch_frames",
    "check_image",
]

COORDINATE_MODES = ("none", "gate", "coordconv")
DEPTHS = (3, 4, 5, 6)

Frame = float | Sequence[float] | torch.Tensor | None


@dataclass(frozen=True)
class BatchFrames:
    """The sensor frames of a batch (full-resolution pixels).

    ``origins[k]`` / ``full_sizes[k]`` describe frame k; ``inverse`` (N,) gives each
    sample's frame, or is None when the whole batch shares frame 0.
    """

    origins: tuple[tuple[float, float], ...]
    full_sizes: tuple[tuple[float, float], ...]
    inverse: torch.Tensor | None

    def scaled(self, k: int, level: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Frame k in the pixel units of U-Net level ``level`` (2**level coarser)."""
        scale = 2**level
        return (
            tuple(o / scale for o in self.origins[k]),
            tuple(f / scale for f in self.full_sizes[k]),
        )

    def per_sample(self, frame_map) -> torch.Tensor:
        """Stack ``frame_map(k) -> (C, h, w)`` over the frames and give every sample its
        frame's map: (N, C, h, w). Each frame's map is computed once."""
        maps = torch.stack([frame_map(k) for k in range(len(self.origins))])
        return maps[self.inverse]


def _per_sample(value: Frame, name: str, n: int, default: Sequence[float]) -> torch.Tensor:
    """``value`` as a float64 (n, 2) CPU tensor, one row per sample."""
    if value is None:
        return torch.tensor([list(default)] * n, dtype=torch.float64)
    rows = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    if rows.ndim < 2 and rows.numel() in (1, 2):
        rows = rows.reshape(1, -1).expand(n, 2)
    if tuple(rows.shape) != (n, 2):
        raise ValueError(
            f"{name} must be 2 numbers or an (N, 2) tensor with N = {n} samples, "
            f"got shape {tuple(rows.shape)}"
        )
    return rows


def batch_frames(x: torch.Tensor, origin: Frame = None, full_size: Frame = None) -> BatchFrames:
    """The sensor frames of the samples of ``x`` (N, C, H, W), validated.

    ``origin`` / ``full_size``: None (the input is the whole frame), 2 numbers shared by
    the batch, or (N, 2) tensors of per-sample values. Raises ``ValueError`` when a frame
    does not contain its input.
    """
    size = tuple(x.shape[2:])
    if not any(isinstance(v, torch.Tensor) and v.ndim == 2 for v in (origin, full_size)):
        o, f = resolve_frame(size, origin, full_size)
        return BatchFrames((o,), (f,), None)
    n = x.shape[0]
    rows = torch.cat(
        [_per_sample(origin, "origin", n, (0, 0)), _per_sample(full_size, "full_size", n, size)],
        dim=1,
    )
    unique, inverse = torch.unique(rows, dim=0, return_inverse=True)
    frames = [resolve_frame(size, row[:2], row[2:]) for row in unique.tolist()]
    return BatchFrames(
        tuple(o for o, _ in frames),
        tuple(f for _, f in frames),
        None if len(frames) == 1 else inverse.to(x.device),
    )


def apply_gate(gate: CoordGate, x: torch.Tensor, frames: BatchFrames, level: int) -> torch.Tensor:
    """``gate`` on x (N, C, h, w) at U-Net level ``level``, each sample in its own frame.

    Per-sample frames multiply by one (N, C, h, w) gate built from one gate map per
    distinct frame, rather than splitting the batch.
    """
    if frames.inverse is None:
        return gate(x, *frames.scaled(0, level))
    size, like = x.shape[2:], dict(device=x.device, dtype=x.dtype)
    return x * frames.per_sample(lambda k: gate.gate(size, *frames.scaled(k, level), **like))


def apply_coord_conv(
    conv: CoordConv, x: torch.Tensor, frames: BatchFrames, level: int
) -> torch.Tensor:
    """``conv`` on x (N, C, h, w) at U-Net level ``level``, each sample in its own frame."""
    if frames.inverse is None:
        return conv(x, *frames.scaled(0, level))
    empty = x.new_empty(1, 0, *x.shape[2:])
    coords = frames.per_sample(lambda k: conv.add_coords(empty, *frames.scaled(k, level))[0])
    return conv.conv(torch.cat([x, coords], dim=1))


class _LevelBlock(nn.Module):
    """Two 3x3 convolutions + ReLU; the first one optionally a CoordConv.

    x: (N, in_channels, h, w) -> (N, out_channels, h, w)
    """

    def __init__(self, in_channels: int, out_channels: int, coord_conv: bool) -> None:
        super().__init__()
        self.coord_conv = coord_conv
        self.first = (
            CoordConv(in_channels, out_channels, 3)
            if coord_conv
            else nn.Conv2d(in_channels, out_channels, 3, padding=1)
        )
        self.second = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, frames: BatchFrames | None, level: int) -> torch.Tensor:
        x = apply_coord_conv(self.first, x, frames, level) if self.coord_conv else self.first(x)
        return F.relu(self.second(F.relu(x)))


def check_image(x: torch.Tensor, channels: int, multiple: int, name: str) -> None:
    """Raise ``ValueError`` unless x is a float (N, channels, H, W) tensor with H and W
    divisible by ``multiple``; the message names the model ``name``."""
    check_features(x, channels, 2, name)
    if not x.is_floating_point():
        raise ValueError(f"{name} expects a floating-point tensor, got {x.dtype}")
    if x.shape[2] % multiple or x.shape[3] % multiple:
        raise ValueError(
            f"{name} needs H and W divisible by {multiple} (2**(depth-1)), got "
            f"{tuple(x.shape[2:])}; pad or tile the image, e.g. with "
            f"coordgate.inference.predict(model, image)"
        )


def _check_options(depth: int, in_channels: int, out_channels: int, base_channels: int) -> None:
    for name, value in dict(
        depth=depth, in_channels=in_channels, out_channels=out_channels, base_channels=base_channels
    ).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if depth < 2:
        raise ValueError(f"depth must be >= 2 (at least one down/up-sampling), got {depth}")


class UNet(nn.Module):
    """U-Net(d) of paper Fig. 4(a), optionally coordinate-aware.

    x: (N, in_channels, H, W) -> (N, out_channels, H, W), with H and W divisible by
    ``required_multiple = 2**(depth - 1)``.

    Args:
        depth: number of resolution levels d (d - 1 down- and up-samplings).
        in_channels, out_channels: image channels in and out.
        base_channels: channels of the first level; level l has ``base_channels * 2**l``.
        coordinates: ``"none"`` (plain U-Net: ``origin`` / ``full_size`` are accepted and
            ignored), ``"gate"`` (CG U-Net) or ``"coordconv"`` (CoordConv-UNet).
        gate_options: keyword arguments of every :class:`CoordGate` (``coordinates="gate"``).
        residual: add the input to the output (the network learns the correction to the
            blurred image; needs ``in_channels == out_channels``).
    """

    def __init__(
        self,
        depth: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 16,
        *,
        coordinates: str = "none",
        gate_options: Mapping[str, object] | None = None,
        residual: bool = False,
    ) -> None:
        super().__init__()
        _check_options(depth, in_channels, out_channels, base_channels)
        if residual and in_channels != out_channels:
            raise ValueError(
                f"residual=True needs in_channels == out_channels, got {in_channels} and "
                f"{out_channels}"
            )
        self.residual = bool(residual)
        if coordinates not in COORDINATE_MODES:
            raise ValueError(f"coordinates must be one of {COORDINATE_MODES}, got {coordinates!r}")
        if gate_options and coordinates != "gate":
            raise ValueError(f"gate_options need coordinates='gate', got {coordinates!r}")
        self.depth, self.in_channels, self.out_channels = depth, in_channels, out_channels
        self.base_channels, self.coordinates = base_channels, coordinates
        self.uses_coordinates = coordinates != "none"
        widths = [base_channels * 2**level for level in range(depth)]
        coord_conv = coordinates == "coordconv"
        self.encoder = nn.ModuleList(
            _LevelBlock(c_in, c_out, coord_conv)
            for c_in, c_out in zip([in_channels] + widths[:-1], widths)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2)
            for level in range(depth - 1)
        )
        self.decoder = nn.ModuleList(
            _LevelBlock(2 * widths[level], widths[level], coord_conv) for level in range(depth - 1)
        )
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        self.down_gates = self.up_gates = None
        if coordinates == "gate":
            options = dict(gate_options or {})
            # down_gates[l] gates level l before its pool; up_gates[l] gates level l + 1
            # before its up-convolution.
            self.down_gates = nn.ModuleList(
                CoordGate(widths[l], **options) for l in range(depth - 1)
            )
            self.up_gates = nn.ModuleList(
                CoordGate(widths[l + 1], **options) for l in range(depth - 1)
            )

    @property
    def required_multiple(self) -> int:
        """H and W must be multiples of this (one pixel at the deepest level)."""
        return 2 ** (self.depth - 1)

    @property
    def receptive_field(self) -> int:
        """Width in pixels of the input window an output pixel can depend on (upper bound).

        Each 3x3 convolution at level l widens it by 2 * 2**l pixels, each 2x resampling
        between levels l and l + 1 (pool down, up-convolution up) by 2**l.
        """
        convs = sum(2 * 2 * 2**level for level in range(self.depth))
        convs += sum(2 * 2 * 2**level for level in range(self.depth - 1))
        resampling = sum(2 * 2**level for level in range(self.depth - 1))
        return 1 + convs + resampling

    @property
    def activation_channels(self) -> int:
        """Floats held per input pixel at peak during inference (for tile planning):
        skips, the level-0 decoder's concatenation and convolutions, gate maps and the
        caller's buffers. Measured on CPU for CG U-Net(3): about 12 * base_channels + 48."""
        return 12 * self.base_channels + 48

    def extra_repr(self) -> str:
        return (
            f"depth={self.depth}, base_channels={self.base_channels}, "
            f"coordinates={self.coordinates!r}, residual={self.residual}"
        )

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless x fits (see :func:`check_image`)."""
        check_image(
            x, self.in_channels, self.required_multiple, f"{type(self).__name__}({self.depth})"
        )

    def _gate(self, gates: nn.ModuleList | None, index: int, x, frames, level: int):
        return x if gates is None else apply_gate(gates[index], x, frames, level)

    def forward(
        self, x: torch.Tensor, origin: Frame = None, full_size: Frame = None
    ) -> torch.Tensor:
        """x: (N, in_channels, H, W) -> (N, out_channels, H, W).

        ``origin`` / ``full_size`` place x on the sensor in full-resolution pixels: None,
        2 numbers for the batch, or (N, 2) tensors per sample (see :func:`batch_frames`).
        """
        self.check_input(x)
        frames = batch_frames(x, origin, full_size) if self.uses_coordinates else None
        image, skips = x, []
        for level, block in enumerate(self.encoder):
            if level:
                x = F.max_pool2d(x, 2)
            x = block(x, frames, level)
            if level < self.depth - 1:
                x = self._gate(self.down_gates, level, x, frames, level)
                skips.append(x)
        for level in reversed(range(self.depth - 1)):
            x = self.up[level](self._gate(self.up_gates, level, x, frames, level + 1))
            x = self.decoder[level](torch.cat([skips[level], x], dim=1), frames, level)
        return self.head(x) + image if self.residual else self.head(x)


class CoordGateUNet(UNet):
    """CG U-Net(d): U-Net(d) with a CoordGate at every down- and up-sampling point.

    x: (N, in_channels, H, W) -> (N, out_channels, H, W). ``gate_options`` go to every
    :class:`CoordGate` (default: ``mode="mlp"`` with the layer's default encoder).
    """

    def __init__(
        self,
        depth: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 16,
        *,
        residual: bool = False,
        **gate_options,
    ) -> None:
        super().__init__(
            depth,
            in_channels,
            out_channels,
            base_channels,
            coordinates="gate",
            gate_options=gate_options,
            residual=residual,
        )


class CoordConvUNet(UNet):
    """CoordConv-UNet: U-Net(d) whose first convolution at every level is a CoordConv.

    x: (N, in_channels, H, W) -> (N, out_channels, H, W).
    """

    def __init__(
        self,
        depth: int = 6,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 16,
        *,
        residual: bool = False,
    ) -> None:
        super().__init__(
            depth,
            in_channels,
            out_channels,
            base_channels,
            coordinates="coordconv",
            residual=residual,
        )


def _builder(model: type[UNet], depth: int):
    def build(**options) -> UNet:
        return model(depth, **options)

    return build


def _register_depths() -> None:
    for depth in DEPTHS:
        register_model(
            f"unet{depth}",
            f"U-Net({depth}) of paper Fig. 4(a): in_channels, out_channels, base_channels",
        )(_builder(UNet, depth))
        register_model(
            f"cg-unet{depth}",
            f"CG U-Net({depth}): U-Net({depth}) with a CoordGate at every down/up-sampling "
            "point: base_channels, CoordGate options (mode, hidden, layers, grid)",
        )(_builder(CoordGateUNet, depth))


_register_depths()


@register_model(
    "coordconv-unet6",
    "CoordConv-UNet: U-Net(6) with a CoordConv first at every level: base_channels",
)
def build_coordconv_unet6(**options) -> CoordConvUNet:
    return CoordConvUNet(6, **options)
