"""The U-Net family of paper Fig. 4(a): U-Net(d), CG U-Net(d), CoordConv-UNet, and the
pixel-adaptive (PAC) and locally-connected (LCN) U-Nets the paper argues against (§II).

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
- PAC U-Net(d) makes the convolution whose output a CG U-Net gates (the second of every
  gated level) a :class:`~coordgate.layers.PixelAdaptiveConv` guided by learned features
  of that level's sensor coordinates: the same places, adaptive kernels instead of gates.
- LCN U-Net(d) makes both convolutions of the deepest level (the bottleneck)
  :class:`~coordgate.layers.LocallyConnected` layers with one kernel per position of a
  fixed sensor ``frame`` (see :class:`LocallyConnectedUNet` for why there).

Sensor coordinates: ``origin`` / ``full_size`` are given in full-resolution pixels; level
``l`` sees ``origin / 2**l`` and ``full_size / 2**l``, so every level agrees on where a
pixel sits on the sensor (see :mod:`coordgate.frames`). ``origin`` may be an (N, 2)
tensor of per-sample origins (random crops in one batch); each distinct frame's coordinate
map is computed once, and the gates of all the frames in one batched pass.

Inference: the second convolution of every level runs with its ReLU inside and the level's
gate multiplying its output in place (:func:`~coordgate.layers.fused.gated_conv`), so a
gate costs one multiply; tiles on the pooling grid take their gates from one cached gate
of the whole sensor per level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from coordgate.frames import BatchFrames, FrameLike, batch_frames
from coordgate.layers import CoordConv, CoordGate, LocallyConnected, PixelAdaptiveConv
from coordgate.layers.fused import gated_conv
from coordgate.layers.shapes import check_features
from coordgate.models.registry import register_model

__all__ = [
    "COORDINATE_MODES",
    "CoordinateMode",
    "CoordConvUNet",
    "CoordGateUNet",
    "LocallyConnectedUNet",
    "PixelAdaptiveUNet",
    "UNet",
    "check_image",
    "check_residual",
]

#: How a U-Net is made aware of sensor coordinates (see :class:`UNet`).
CoordinateMode = Literal["none", "gate", "coordconv", "pac", "local"]
COORDINATE_MODES: tuple[CoordinateMode, ...] = get_args(CoordinateMode)


class _LevelBlock(nn.Module):
    """Two 3x3 convolutions + ReLU, either of them possibly coordinate-aware, and
    optionally a CoordGate on the output.

    x: (N, in_channels, h, w) -> (N, out_channels, h, w)
    """

    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.first, self.second = first, second

    def forward(
        self, x: torch.Tensor, frames: BatchFrames | None, gate: CoordGate | None = None
    ) -> torch.Tensor:
        """``frames``: the batch's frames at this level (None for a plain U-Net)."""
        x = self._conv_relu(self.first, x, frames)
        return self._conv_relu(self.second, x, frames, gate)

    @staticmethod
    def _conv_relu(
        conv: nn.Module,
        x: torch.Tensor,
        frames: BatchFrames | None,
        gate: CoordGate | None = None,
    ) -> torch.Tensor:
        if not isinstance(conv, nn.Conv2d):
            y = F.relu(conv(x, frames))
            return y if gate is None else gate(y, frames)
        weights = None
        if gate is not None:
            like = x.new_empty(1).expand(x.shape[0], conv.out_channels, *x.shape[2:])
            weights = gate.weights_for(like, frames)
        # In inference the ReLU runs inside the convolution and the gate multiplies its
        # output in place (gated_conv).
        return gated_conv(conv, x, weights, relu=True)


def _block_kinds(
    coordinates: CoordinateMode, decoder: bool, level: int, depth: int
) -> tuple[str, str]:
    """The kinds of a level block's two convolutions under each coordinate mode."""
    # A CG U-Net gates the output of every encoder level (the deepest is the bottleneck)
    # and of every decoder level but the last; PAC adapts the convolution before each gate.
    gated = not decoder or level > 0
    if coordinates == "coordconv":
        return "coordconv", "conv"
    if coordinates == "pac" and gated:
        return "conv", "pac"
    if coordinates == "local" and level == depth - 1:
        return "local", "local"
    return "conv", "conv"


def _conv(
    kind: str, c_in: int, c_out: int, options: Mapping, size: tuple[int, int] | None
) -> nn.Module:
    """A 3x3 'same' convolution of ``kind`` (see :func:`_block_kinds`)."""
    if kind == "coordconv":
        return CoordConv(c_in, c_out, 3)
    if kind == "pac":
        return PixelAdaptiveConv(c_in, c_out, 3, **options)
    if kind == "local":
        return LocallyConnected(c_in, c_out, 3, size)
    return nn.Conv2d(c_in, c_out, 3, padding=1)


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


def zero_head(head: nn.Conv2d) -> None:
    """Zero a residual network's last layer, so that it starts as the identity (output =
    input): early training then cannot make the image worse than the blurred input, and
    large random corrections never drive the first steps."""
    nn.init.zeros_(head.weight)
    if head.bias is not None:
        nn.init.zeros_(head.bias)


def check_residual(residual: bool, in_channels: int, out_channels: int) -> None:
    """A residual network adds its input to its output: the channels must match."""
    if residual and in_channels != out_channels:
        raise ValueError(
            f"residual=True needs in_channels == out_channels, got {in_channels} and {out_channels}"
        )


def _check_options(depth: int, in_channels: int, out_channels: int, base_channels: int) -> None:
    for name, value in dict(
        depth=depth, in_channels=in_channels, out_channels=out_channels, base_channels=base_channels
    ).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if depth < 2:
        raise ValueError(f"depth must be >= 2 (at least one down/up-sampling), got {depth}")


def _check_frame(
    frame: int | Sequence[int] | None, coordinates: CoordinateMode, multiple: int
) -> tuple[int, int] | None:
    """``frame`` as (H, W): required by, and only by, ``coordinates="local"``."""
    if coordinates != "local":
        if frame is not None:
            raise ValueError(f"frame is only used by coordinates='local', got {coordinates!r}")
        return None
    values = (frame, frame) if isinstance(frame, int) else tuple(frame or ())
    if (
        len(values) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values)
        or any(v % multiple for v in values)
    ):
        raise ValueError(
            f"the LCN U-Net needs frame: the sensor frame (H, W) in pixels, divisible by "
            f"{multiple}; got {frame!r}"
        )
    return values


class UNet(nn.Module):
    """U-Net(d) of paper Fig. 4(a), optionally coordinate-aware.

    x: (N, in_channels, H, W) -> (N, out_channels, H, W), with H and W divisible by
    ``required_multiple = 2**(depth - 1)``.

    Args:
        depth: number of resolution levels d (d - 1 down- and up-samplings).
        in_channels, out_channels: image channels in and out.
        base_channels: channels of the first level; level l has ``base_channels * 2**l``.
        coordinates: ``"none"`` (plain U-Net: ``origin`` / ``full_size`` are accepted and
            ignored), ``"gate"`` (CG U-Net), ``"coordconv"`` (CoordConv-UNet), ``"pac"``
            (PAC U-Net) or ``"local"`` (LCN U-Net).
        layer_options: keyword arguments of every coordinate layer of the mode:
            :class:`CoordGate` (``"gate"``) or :class:`PixelAdaptiveConv` (``"pac"``).
        frame: the sensor frame (H, W) or H = W in pixels that the locally-connected
            weights cover (``"local"`` only; divisible by ``2**(depth - 1)``).
        residual: add the input to the output (the network learns the correction to the
            blurred image; needs ``in_channels == out_channels``).

    Implements :class:`~coordgate.models.DeblurringModel`.
    """

    model_spec: dict[str, object] | None = None

    def __init__(
        self,
        depth: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 16,
        *,
        coordinates: CoordinateMode = "none",
        layer_options: Mapping[str, object] | None = None,
        frame: int | Sequence[int] | None = None,
        residual: bool = False,
    ) -> None:
        super().__init__()
        _check_options(depth, in_channels, out_channels, base_channels)
        check_residual(residual, in_channels, out_channels)
        self.residual = bool(residual)
        if coordinates not in COORDINATE_MODES:
            raise ValueError(f"coordinates must be one of {COORDINATE_MODES}, got {coordinates!r}")
        if layer_options and coordinates not in ("gate", "pac"):
            raise ValueError(
                f"layer_options need coordinates='gate' or 'pac', got {coordinates!r} "
                f"with {dict(layer_options)}"
            )
        self.depth, self.in_channels, self.out_channels = depth, in_channels, out_channels
        self.base_channels, self.coordinates = base_channels, coordinates
        self.uses_coordinates = coordinates != "none"
        self.frame = _check_frame(frame, coordinates, self.required_multiple)
        options = dict(layer_options or {})
        widths = [base_channels * 2**level for level in range(depth)]
        deepest = (
            None if self.frame is None else tuple(f // self.required_multiple for f in self.frame)
        )

        def block(c_in: int, c_out: int, decoder: bool, level: int) -> _LevelBlock:
            kinds = _block_kinds(coordinates, decoder, level, depth)
            return _LevelBlock(
                _conv(kinds[0], c_in, c_out, options, deepest),
                _conv(kinds[1], c_out, c_out, options, deepest),
            )

        self.encoder = nn.ModuleList(
            block(c_in, c_out, False, level)
            for level, (c_in, c_out) in enumerate(zip([in_channels] + widths[:-1], widths))
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2)
            for level in range(depth - 1)
        )
        self.decoder = nn.ModuleList(
            block(2 * widths[level], widths[level], True, level) for level in range(depth - 1)
        )
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        if self.residual:
            zero_head(self.head)
        self.down_gates = self.up_gates = None
        if coordinates == "gate":
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
        frame = "" if self.frame is None else f", frame={self.frame}"
        return (
            f"depth={self.depth}, base_channels={self.base_channels}, "
            f"coordinates={self.coordinates!r}{frame}, residual={self.residual}"
        )

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless x fits (see :func:`check_image`)."""
        check_image(
            x, self.in_channels, self.required_multiple, f"{type(self).__name__}({self.depth})"
        )

    def _output_gate(self, level: int, decoder: bool) -> CoordGate | None:
        """The gate on the output of a level block: an encoder level's before its pool and
        skip (``down_gates``), the bottleneck's and a decoder level's before the
        up-convolution to the level above (``up_gates``)."""
        if self.down_gates is None or (decoder and level == 0):
            return None
        if decoder:
            return self.up_gates[level - 1]
        return self.down_gates[level] if level < self.depth - 1 else self.up_gates[level - 1]

    def forward(
        self, x: torch.Tensor, origin: FrameLike = None, full_size: FrameLike = None
    ) -> torch.Tensor:
        """x: (N, in_channels, H, W) -> (N, out_channels, H, W).

        ``origin`` / ``full_size`` place x on the sensor in full-resolution pixels: None,
        2 numbers for the batch, or (N, 2) tensors per sample (see
        :func:`~coordgate.frames.batch_frames`). Validated here, once; level ``l`` sees
        the frames scaled to its pixels (:meth:`~coordgate.frames.BatchFrames.scaled`).
        """
        self.check_input(x)
        levels: list[BatchFrames | None] = [None] * self.depth
        if self.uses_coordinates:
            frames = batch_frames(x, origin, full_size)
            self._check_frames(frames)
            levels = [frames.scaled(level) for level in range(self.depth)]
        image, skips = x, []
        for level, block in enumerate(self.encoder):
            if level:
                x = F.max_pool2d(x, 2)
            x = block(x, levels[level], self._output_gate(level, decoder=False))
            if level < self.depth - 1:
                skips.append(x)
        for level in reversed(range(self.depth - 1)):
            x = self.up[level](x)
            x = self.decoder[level](
                torch.cat([skips[level], x], dim=1),
                levels[level],
                self._output_gate(level, decoder=True),
            )
        return self.head(x) + image if self.residual else self.head(x)

    def _check_frames(self, frames: BatchFrames) -> None:
        """An LCN U-Net's weights cover its sensor ``frame``: inputs must lie in it, at
        origins on the deepest level's pixels."""
        if self.frame is None:
            return
        multiple = self.required_multiple
        for frame in frames.frames:
            if frame.full_size != tuple(map(float, self.frame)) or any(
                o % multiple for o in frame.origin
            ):
                raise ValueError(
                    f"the locally-connected layers hold weights for a sensor frame of "
                    f"{self.frame} pixels: full_size must be that frame and origin a multiple "
                    f"of {multiple} pixels, got full_size {frame.full_size} and origin "
                    f"{frame.origin}"
                )


class _ModeUNet(UNet):
    """A U-Net of one coordinate ``mode``; keyword options other than the U-Net's go to
    the mode's coordinate layers (``layer_options``)."""

    mode = "none"

    def __init__(
        self,
        depth: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 16,
        *,
        residual: bool = False,
        frame: int | Sequence[int] | None = None,
        **layer_options,
    ) -> None:
        super().__init__(
            depth,
            in_channels,
            out_channels,
            base_channels,
            coordinates=self.mode,
            layer_options=layer_options,
            frame=frame,
            residual=residual,
        )


class CoordGateUNet(_ModeUNet):
    """CG U-Net(d): U-Net(d) with a CoordGate at every down- and up-sampling point.

    x: (N, in_channels, H, W) -> (N, out_channels, H, W). Further keyword options go to
    every :class:`CoordGate` (default: ``mode="mlp"`` with the layer's default encoder).
    """

    mode = "gate"


class PixelAdaptiveUNet(_ModeUNet):
    """PAC U-Net(d): the convolutions a CG U-Net gates are pixel-adaptive instead.

    x: (N, in_channels, H, W) -> (N, out_channels, H, W). Further keyword options go to
    every :class:`PixelAdaptiveConv` (``guide_channels``, ``hidden``, ``layers``,
    ``max_elements``). Each is guided by learned features of its level's sensor
    coordinates, so the comparison with CG U-Net(d) isolates the mechanism: a fixed
    Gaussian pairwise kernel modulation (PAC) against a learned per-channel gate.
    """

    mode = "pac"


class LocallyConnectedUNet(_ModeUNet):
    """LCN U-Net(d): both 3x3 convolutions of the deepest level are locally connected.

    x: (N, in_channels, H, W) -> (N, out_channels, H, W) for inputs in the sensor
    ``frame`` (H, W) the weights were built for (crops at origins that are multiples of
    ``2**(depth - 1)`` pixels use the weights of the positions they cover).

    Why the bottleneck: a network whose every layer is locally connected would need a
    kernel per pixel at full resolution (``frame**2 * C**2 * 9`` weights per layer), which
    neither fits nor trains at these sizes. The deepest level has ``4**(depth - 1)`` times
    fewer positions and the widest receptive field, and it is where a CG U-Net's gates act
    on the coarsest features, so position-specific kernels there give the network
    position-dependent processing of the whole image at the least cost: the LCN
    counterpart of CoordGate's position-dependent gates. Even so it holds far more
    weights than the rest of the network (see :func:`count_parameters`).
    """

    mode = "local"


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


# The keyword options of each family's builders (registry entries).
_UNET_OPTIONS = ("in_channels", "out_channels", "base_channels", "residual")
_GATE_OPTIONS = (*_UNET_OPTIONS, "frame", "mode", "hidden", "layers", "size", "grid", "activation")
_PAC_OPTIONS = (
    *_UNET_OPTIONS,
    "frame",
    "guide_channels",
    "hidden",
    "layers",
    "bias",
    "max_elements",
)
_LCN_OPTIONS = (*_UNET_OPTIONS, "frame")
_UNET = "U-Net({0}) of paper Fig. 4(a): in_channels, out_channels, base_channels"
_CG_UNET = (
    "CG U-Net({0}): U-Net({0}) with a CoordGate at every down/up-sampling point: "
    "base_channels, CoordGate options (mode, hidden, layers, grid)"
)


unet3 = register_model("unet3", _UNET.format(3), _UNET_OPTIONS)(partial(UNet, 3))
unet4 = register_model("unet4", _UNET.format(4), _UNET_OPTIONS)(partial(UNet, 4))
unet5 = register_model("unet5", _UNET.format(5), _UNET_OPTIONS)(partial(UNet, 5))
unet6 = register_model("unet6", _UNET.format(6), _UNET_OPTIONS)(partial(UNet, 6))
cg_unet3 = register_model("cg-unet3", _CG_UNET.format(3), _GATE_OPTIONS)(partial(CoordGateUNet, 3))
cg_unet4 = register_model("cg-unet4", _CG_UNET.format(4), _GATE_OPTIONS)(partial(CoordGateUNet, 4))
cg_unet5 = register_model("cg-unet5", _CG_UNET.format(5), _GATE_OPTIONS)(partial(CoordGateUNet, 5))
cg_unet6 = register_model("cg-unet6", _CG_UNET.format(6), _GATE_OPTIONS)(partial(CoordGateUNet, 6))
cg_unet3_narrow = register_model(
    "cg-unet3-narrow",
    "CG U-Net(3) whose gate encoders are as wide as the channels they gate (8, 16, 16, 32 "
    "at base_channels 8; cg-unet3's are 32): the paper's CG(L,k,c,p) encoder of c nodes "
    "per layer, a cheaper training step on random crops: base_channels, CoordGate options",
    _GATE_OPTIONS,
)(partial(CoordGateUNet, 3, hidden=None))
coordconv_unet6 = register_model(
    "coordconv-unet6",
    "CoordConv-UNet: U-Net(6) with a CoordConv first at every level: base_channels",
    _UNET_OPTIONS,
)(partial(CoordConvUNet, 6))
pac_unet3 = register_model(
    "pac-unet3",
    "PAC U-Net(3): U-Net(3) whose convolutions before each CG gate point are pixel-adaptive "
    "convolutions guided by learned coordinate features: base_channels, PAC options "
    "(guide_channels, hidden, layers)",
    _PAC_OPTIONS,
)(partial(PixelAdaptiveUNet, 3))
lcn_unet3 = register_model(
    "lcn-unet3",
    "LCN U-Net(3): U-Net(3) whose bottleneck convolutions are locally connected over a fixed "
    "sensor frame: frame (required, pixels), base_channels",
    _LCN_OPTIONS,
)(partial(LocallyConnectedUNet, 3))
