"""The 1D model family of paper §IV.A: CNN(L,k,c), CCNN(L,k,c) and CG(L,k,c,p), with the
other spatially-varying methods of §II as baselines: PAC(L,k,c) and LCN(L,k).

- CNN(L,k,c): L convolutions of kernel k ('same' zero padding), c channels except the last
  which has one, ReLU between layers.
- CCNN(L,k,c): the same with every convolution a CoordConv (a coordinate channel appended).
- PAC(L,k,c): the same with every convolution a pixel-adaptive convolution guided by
  learned features of the coordinates.
- LCN(L,k): L locally-connected layers of kernel k, one channel: every output sample has
  its own kernel over a frame of ``size`` samples. LCN(1,13) can represent the study's
  matrix H but for its entries more than 6 samples off the diagonal (at most 0.11 % of the
  peak).
- CG(L,k,c,p): a convolutional block of L layers with c channels (ReLU between), a CoordGate
  whose coordinate encoder has p fully-connected layers of c nodes, then a 1x1 convolution
  to one channel.
- The random-static-input ablation of CG: the encoder reads a fixed U(-1, 1) random number
  per position instead of the coordinate (the paper reports it does not converge).

Registered as ``cnn1d``, ``ccnn1d``, ``pac1d``, ``lcn1d``, ``cg1d`` and ``cg1d-random``;
every model has a ``label`` in the paper's notation (e.g. ``"CG(1,13,8,3)"``) and a
``family``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import nn

from coordgate.frames import Frame, FrameLike, resolve_frame
from coordgate.layers import CoordConv, CoordGate, LocallyConnected, PixelAdaptiveConv
from coordgate.layers.gate import encode_pixels
from coordgate.layers.shapes import check_features
from coordgate.models.registry import build_model, register_model

__all__ = [
    "CONV_KINDS",
    "CNN1d",
    "ConvKind",
    "CoordGate1d",
    "RandomInputGate",
    "STATIC_INPUTS",
    "StaticInput",
    "build_from_label",
    "parse_label",
]

#: What a :class:`CoordGate1d`'s gate reads: the coordinates or a fixed random input.
StaticInput = Literal["coords", "random"]
STATIC_INPUTS: tuple[StaticInput, ...] = get_args(StaticInput)
#: The convolution of a :class:`CNN1d`.
ConvKind = Literal["conv", "coordconv", "pac", "local"]
# The family (label prefix, lower case) each kind makes.
CONV_KINDS: dict[ConvKind, str] = {"conv": "cnn", "coordconv": "ccnn", "pac": "pac", "local": "lcn"}


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _conv_block(
    layers: int,
    kernel: int,
    channels: int,
    out_channels: int,
    kind: ConvKind = "conv",
    size: int | None = None,
) -> nn.ModuleList:
    """``layers`` 'same'-padded convolutions of ``kind`` 1 -> channels -> ... -> out_channels
    (``size``: the frame of a locally-connected block)."""
    widths = [1] + [channels] * (layers - 1) + [out_channels]
    make = {
        "conv": lambda a, b: nn.Conv1d(a, b, kernel, padding="same"),
        "coordconv": lambda a, b: CoordConv(a, b, kernel, dim=1),
        "pac": lambda a, b: PixelAdaptiveConv(a, b, kernel, dim=1),
        "local": lambda a, b: LocallyConnected(a, b, kernel, (size,), dim=1),
    }[kind]
    return nn.ModuleList(make(a, b) for a, b in zip(widths, widths[1:]))


def _run_block(block: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for i, conv in enumerate(block):
        x = conv(x) if i == 0 else conv(torch.relu(x))
    return x


class CNN1d(nn.Module):
    """CNN(L,k,c), or with ``kind`` CCNN(L,k,c) (``"coordconv"``), PAC(L,k,c) (``"pac"``)
    or LCN(L,k) (``"local"``: one channel, weights for a frame of ``size`` samples).

    x: (N, 1, L) -> (N, 1, L)
    """

    model_spec: dict[str, object] | None = None  # set by build_model

    def __init__(
        self,
        layers: int,
        kernel: int,
        channels: int,
        *,
        kind: ConvKind = "conv",
        size: int | None = None,
    ):
        super().__init__()
        _check_positive(layers=layers, kernel=kernel, channels=channels)
        if kind not in CONV_KINDS:
            raise ValueError(f"kind must be one of {tuple(CONV_KINDS)}, got {kind!r}")
        if kind == "local":
            _check_positive(size=size)
            if channels != 1:
                raise ValueError(f"LCN(L,k) has one channel, got channels={channels}")
        self.layers, self.kernel, self.channels = layers, kernel, channels
        self.family = CONV_KINDS[kind]
        self.convs = _conv_block(layers, kernel, channels, 1, kind, size)

    @property
    def label(self) -> str:
        numbers = (self.layers, self.kernel) + (() if self.family == "lcn" else (self.channels,))
        return f"{self.family.upper()}({','.join(map(str, numbers))})"

    def extra_repr(self) -> str:
        return self.label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_features(x, 1, 1, self.label)
        return _run_block(self.convs, x)


class RandomInputGate(CoordGate):
    """A CoordGate (``mode="mlp"``, 1D) whose encoder reads a fixed random tensor instead
    of the coordinates: one U(-1, 1) number per position of a frame of ``size`` samples,
    drawn from ``seed`` and kept as a buffer. The paper's ablation (§IV.A).

    x: (N, C, size) -> (N, C, size)
    """

    def __init__(self, channels: int, *, size: int, seed: int = 0, **encoder_options):
        super().__init__(channels, dim=1, mode="mlp", **encoder_options)
        _check_positive(size=size)
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("static_input", torch.rand(1, size, generator=generator) * 2 - 1)

    def gate(
        self,
        size: Sequence[int],
        origin: FrameLike | Frame = None,
        full_size: FrameLike = None,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """The gate (C, size) computed from the random static input."""
        frame = self.static_input.shape[1]
        origin_t, full_t = resolve_frame(size, origin, full_size)
        if tuple(size) != (frame,) or origin_t != (0.0,) or full_t != (float(frame),):
            raise ValueError(
                f"RandomInputGate holds random inputs for a whole frame of {frame} samples; "
                f"got size={tuple(size)}, origin={origin_t}, full_size={full_t}"
            )
        static = self.static_input.to(device=device, dtype=dtype)
        return encode_pixels(self.encoder, static)


class CoordGate1d(nn.Module):
    """CG(L,k,c,p): conv block (1 -> c channels), CoordGate, 1x1 convolution to one channel.

    x: (N, 1, L) -> (N, 1, L)

    ``static_input="random"`` swaps the coordinates for a fixed U(-1, 1) random input of
    ``size`` samples (seeded by ``seed``); such a model only takes inputs of that size.
    """

    model_spec: dict[str, object] | None = None  # set by build_model

    def __init__(
        self,
        layers: int,
        kernel: int,
        channels: int,
        encoder_layers: int,
        *,
        static_input: StaticInput = "coords",
        size: int = 30,
        seed: int = 0,
    ):
        super().__init__()
        _check_positive(
            layers=layers, kernel=kernel, channels=channels, encoder_layers=encoder_layers
        )
        if static_input not in STATIC_INPUTS:
            raise ValueError(f"static_input must be one of {STATIC_INPUTS}, got {static_input!r}")
        self.layers, self.kernel, self.channels = layers, kernel, channels
        self.encoder_layers, self.static_input = encoder_layers, static_input
        self.family = "cg" if static_input == "coords" else "cg-random"
        self.convs = _conv_block(layers, kernel, channels, channels)
        encoder = dict(hidden=channels, layers=encoder_layers)
        self.gate = (
            CoordGate(channels, dim=1, **encoder)
            if static_input == "coords"
            else RandomInputGate(channels, size=size, seed=seed, **encoder)
        )
        self.project = nn.Conv1d(channels, 1, 1)

    @property
    def label(self) -> str:
        name = "CG" if self.static_input == "coords" else "CG-random"
        return f"{name}({self.layers},{self.kernel},{self.channels},{self.encoder_layers})"

    def extra_repr(self) -> str:
        return self.label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_features(x, 1, 1, self.label)
        return self.project(self.gate(_run_block(self.convs, x)))


# The keyword options of the builders (registry entries).
_CNN_OPTIONS = ("layers", "kernel", "channels")
_CG_OPTIONS = (*_CNN_OPTIONS, "encoder_layers")


@register_model("cnn1d", "CNN(L,k,c) of paper §IV.A: layers, kernel, channels", _CNN_OPTIONS)
def build_cnn1d(*, layers: int = 1, kernel: int = 7, channels: int = 1) -> CNN1d:
    return CNN1d(layers, kernel, channels)


@register_model(
    "ccnn1d",
    "CCNN(L,k,c) of paper §IV.A (CoordConv layers): layers, kernel, channels",
    _CNN_OPTIONS,
)
def build_ccnn1d(*, layers: int = 4, kernel: int = 7, channels: int = 4) -> CNN1d:
    return CNN1d(layers, kernel, channels, kind="coordconv")


@register_model(
    "pac1d",
    "PAC(L,k,c): CNN(L,k,c) of pixel-adaptive convolutions guided by learned coordinate "
    "features (Su et al. 2019): layers, kernel, channels",
    _CNN_OPTIONS,
)
def build_pac1d(*, layers: int = 1, kernel: int = 13, channels: int = 1) -> CNN1d:
    return CNN1d(layers, kernel, channels, kind="pac")


@register_model(
    "lcn1d",
    "LCN(L,k): L locally-connected layers of kernel k, one channel, over a frame of size "
    "samples: layers, kernel, size",
    ("layers", "kernel", "size"),
)
def build_lcn1d(*, layers: int = 1, kernel: int = 13, size: int = 30) -> CNN1d:
    return CNN1d(layers, kernel, 1, kind="local", size=size)


@register_model(
    "cg1d",
    "CG(L,k,c,p) of paper §IV.A: layers, kernel, channels, encoder_layers",
    _CG_OPTIONS,
)
def build_cg1d(
    *, layers: int = 1, kernel: int = 13, channels: int = 3, encoder_layers: int = 3
) -> CoordGate1d:
    return CoordGate1d(layers, kernel, channels, encoder_layers)


@register_model(
    "cg1d-random",
    "CG(L,k,c,p) whose gate reads fixed U(-1,1) random numbers instead of coordinates "
    "(ablation of §IV.A): layers, kernel, channels, encoder_layers, size, seed",
    (*_CG_OPTIONS, "size", "seed"),
)
def build_cg1d_random(
    *,
    layers: int = 1,
    kernel: int = 13,
    channels: int = 3,
    encoder_layers: int = 3,
    size: int = 30,
    seed: int = 0,
) -> CoordGate1d:
    return CoordGate1d(
        layers, kernel, channels, encoder_layers, static_input="random", size=size, seed=seed
    )


_LABEL = re.compile(r"^(CNN|CCNN|PAC|LCN|CG|CG-random)\((\d+(?:,\d+)*)\)$")
_FAMILIES = {
    "CNN": ("cnn1d", ("layers", "kernel", "channels")),
    "CCNN": ("ccnn1d", ("layers", "kernel", "channels")),
    "PAC": ("pac1d", ("layers", "kernel", "channels")),
    "LCN": ("lcn1d", ("layers", "kernel")),
    "CG": ("cg1d", ("layers", "kernel", "channels", "encoder_layers")),
    "CG-random": ("cg1d-random", ("layers", "kernel", "channels", "encoder_layers")),
}


def parse_label(label: str) -> tuple[str, dict[str, int]]:
    """``"CG(1,13,8,3)"`` -> ``("cg1d", {"layers": 1, "kernel": 13, ...})``: the registry
    name and options of a model given in the paper's notation (also ``CNN(L,k,c)``,
    ``CCNN(L,k,c)``, ``PAC(L,k,c)``, ``LCN(L,k)`` and ``CG-random(L,k,c,p)``)."""
    match = _LABEL.match(label.replace(" ", ""))
    if match is None:
        raise ValueError(
            "model label must read CNN(L,k,c), CCNN(L,k,c), PAC(L,k,c), LCN(L,k), CG(L,k,c,p) "
            f"or CG-random(L,k,c,p) with positive integers, got {label!r}"
        )
    name, keys = _FAMILIES[match.group(1)]
    values = [int(v) for v in match.group(2).split(",")]
    if len(values) != len(keys):
        raise ValueError(
            f"{match.group(1)} takes {len(keys)} numbers ({', '.join(keys)}), got {label!r}"
        )
    return name, dict(zip(keys, values))


def build_from_label(label: str, **options) -> nn.Module:
    """Build the model a paper-style ``label`` names; ``options`` (e.g. ``seed``, ``size``
    of the random-input ablation, ``size`` of an LCN) are passed on to its builder."""
    name, values = parse_label(label)
    return build_model(name, **values, **options)
