"""Gates frozen at one sensor frame: the constants an exported model multiplies by.

A trained :class:`~coordgate.layers.CoordGate` depends on nothing but the coordinates
(paper Eq. 3), so in a model that only ever sees one frame (an export for the whole
sensor) every gate is a constant. :func:`freeze_gates` runs a copy of the model once on
that frame and swaps each CoordGate for a :class:`FrozenGate` that holds the gate it
computed as a buffer. Tracing (TorchScript, either ONNX exporter) then records the gates
as constant weights instead of the coordinate encoders: the graph is the plain network
with one multiply per gate, and a frozen gate refuses any other frame rather than
silently applying the wrong gate.

>>> import torch
>>> from coordgate.models import build_model
>>> model = build_model("cg-unet3", base_channels=2).eval()
>>> frozen = freeze_gates(model, (1, 1, 32, 24))
>>> frozen.down_gates[0]
FrozenGate(2, size=(32, 24), origin=(0.0, 0.0), full_size=(32.0, 24.0))
>>> x = torch.rand(1, 1, 32, 24)
>>> bool(torch.allclose(frozen(x), model(x)))
True
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from coordgate.frames import BatchFrames, FrameLike, Where, batch_frames
from coordgate.layers.gate import CoordGate

__all__ = ["FrozenGate", "freeze_gates"]


class FrozenGate(nn.Module):
    """A CoordGate's gate at one frame, held as a constant buffer.

    x: (N, C, *spatial) -> x * gate, for the channels, spatial size and frame it was
    frozen at (any other frame is a ``ValueError``). Made by :func:`freeze_gates`.
    """

    def __init__(self, weights: torch.Tensor, frames: BatchFrames) -> None:
        super().__init__()
        if frames.inverse is not None or weights.shape[0] != 1:
            raise ValueError("a gate is frozen at one frame shared by the batch")
        self.frames = frames
        self.register_buffer("weights", weights.detach().clone().contiguous())

    @property
    def channels(self) -> int:
        return self.weights.shape[1]

    def extra_repr(self) -> str:
        (frame,) = self.frames.frames
        return (
            f"{self.channels}, size={self.frames.size}, origin={frame.origin}, "
            f"full_size={frame.full_size}"
        )

    def weights_for(
        self, x: torch.Tensor, origin: Where = None, full_size: FrameLike = None
    ) -> torch.Tensor:
        """The frozen gate (1, C, *spatial), after checking that ``x`` lies in its frame."""
        frames = batch_frames(x, origin, full_size)
        if frames.size != self.frames.size or frames.frames != self.frames.frames:
            raise ValueError(
                f"this gate is frozen for {self.extra_repr()}; got an input of size "
                f"{frames.size} in the frames {frames.frames}"
            )
        return self.weights

    def forward(self, x: torch.Tensor, origin: Where = None, full_size: FrameLike = None):
        """x: (N, C, *spatial) -> x * gate, same shape."""
        return x * self.weights_for(x, origin, full_size)


class _Recorder(nn.Module):
    """Stands in for a CoordGate during :func:`freeze_gates`' one run: passes the gate on
    and keeps what it gave as a :class:`FrozenGate`."""

    def __init__(self, gate: CoordGate) -> None:
        super().__init__()
        self.gate = gate
        self.frozen: FrozenGate | None = None

    def weights_for(
        self, x: torch.Tensor, origin: Where = None, full_size: FrameLike = None
    ) -> torch.Tensor:
        if self.frozen is not None:
            raise ValueError("a gate used twice in one forward pass cannot be frozen")
        frames = batch_frames(x, origin, full_size)
        weights = self.gate.weights_for(x, frames)
        self.frozen = FrozenGate(weights, frames)
        return weights

    def forward(self, x: torch.Tensor, origin: Where = None, full_size: FrameLike = None):
        return x * self.weights_for(x, origin, full_size)


def _swap(model: nn.Module, kind: type[nn.Module], replace) -> None:
    for name, module in list(model.named_modules()):
        if isinstance(module, kind):
            model.set_submodule(name, replace(module))


def freeze_gates(model: nn.Module, shape: Sequence[int]) -> nn.Module:
    """A copy of ``model`` in eval mode whose CoordGates are :class:`FrozenGate` s for
    inputs of ``shape`` (N, C, *spatial) that are the whole frame (the default frame).

    The model itself is left as it is. A model without CoordGates comes back as an eval
    copy unchanged.
    """
    frozen = copy.deepcopy(model).eval()
    if not any(isinstance(module, CoordGate) for module in frozen.modules()):
        return frozen
    _swap(frozen, CoordGate, _Recorder)
    parameter = next(frozen.parameters())
    with torch.no_grad():
        frozen(torch.zeros(tuple(shape), device=parameter.device, dtype=parameter.dtype))
    unused = [
        name
        for name, module in frozen.named_modules()
        if isinstance(module, _Recorder) and module.frozen is None
    ]
    if unused:
        raise ValueError(f"the gates {', '.join(unused)} took no part in a forward pass")
    _swap(frozen, _Recorder, lambda recorder: recorder.frozen)
    return frozen
