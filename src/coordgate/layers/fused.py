"""A convolution, its ReLU and its gate in one pass over memory (inference on the CPU).

CoordGate's promise is one elementwise multiply over a plain convolution, but on a
memory-bound tensor a separate multiply is a full extra read and write of the features
(a quarter of the convolution's time at 4x32x256²). oneDNN convolutions accept
*post-ops* applied while each output block is still in cache: a binary multiply by a
tensor broadcast over the batch, then an activation. :func:`gated_conv` uses them when
nothing needs gradients, and otherwise runs the plain operations, so both give
``relu(conv(x)) * gate`` (or without the ReLU) equal to rounding.

ReLU and gate commute only where the gate is non-negative (``relu(y) * g == relu(y * g)``
for ``g >= 0``), so a ReLU is fused after the multiply only when the caller says the gate
is non-negative (:meth:`CoordGate` knows this of its cached eval gates); otherwise the
ReLU is fused into the convolution and the multiply runs in place after it.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["gated_conv"]

_ConvNd = nn.Conv1d | nn.Conv2d | nn.Conv3d


def _symmetric_padding(conv: _ConvNd) -> list[int] | None:
    """The convolution's zero padding per axis when oneDNN can take it, else None."""
    if conv.padding_mode != "zeros":
        return None
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return [0] * len(conv.kernel_size)
        pads = conv._reversed_padding_repeated_twice
        if any(a != b for a, b in zip(pads[::2], pads[1::2])):
            return None  # 'same' with an even kernel pads one side more
        return list(reversed(pads[::2]))
    return list(conv.padding)


def _fusable(conv: _ConvNd, x: torch.Tensor, gate: torch.Tensor | None) -> bool:
    if torch.is_grad_enabled() or not torch.backends.mkldnn.is_available():
        return False
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    tensors = [x, conv.weight] + ([] if gate is None else [gate])
    return (
        x.device.type == "cpu"
        and all(t.dtype == torch.float32 for t in tensors)
        and x.is_contiguous()
        and (gate is None or gate.shape[0] in (1, x.shape[0]))
    )


def gated_conv(
    conv: _ConvNd,
    x: torch.Tensor,
    gate: torch.Tensor | None = None,
    *,
    relu: bool = False,
    gate_nonnegative: bool = False,
) -> torch.Tensor:
    """``conv(x)``, then ReLU when ``relu``, then times ``gate`` when given.

    x: (N, C_in, *spatial) -> (N, C_out, *spatial); gate: (1 or N, C_out, *spatial).
    Fused into the convolution (see the module docstring) when no gradients are recorded,
    on the CPU in float32, for zero padding that is the same on both ends of an axis.
    """
    padding = _symmetric_padding(conv)
    if padding is None or not _fusable(conv, x, gate):
        y = conv(x)
        if relu:
            y = torch.relu_(y) if not torch.is_grad_enabled() else torch.relu(y)
        if gate is None:
            return y
        return y.mul_(gate) if not torch.is_grad_enabled() else y * gate
    flat = x.ndim == 3  # oneDNN has no 1-D kernels: run a Conv1d as a Conv2d of height 1
    if flat:
        x, gate = x.unsqueeze(2), None if gate is None else gate.unsqueeze(2)
    weight = conv.weight.unsqueeze(2) if flat else conv.weight
    geometry = [
        ([0] if flat else []) + padding,
        ([1] if flat else []) + list(conv.stride),
        ([1] if flat else []) + list(conv.dilation),
        conv.groups,
    ]
    mkldnn = torch.ops.mkldnn
    if gate is None or (relu and not gate_nonnegative):
        y = mkldnn._convolution_pointwise(
            x, weight, conv.bias, *geometry, "relu" if relu else "none", [], ""
        )
        if gate is not None:
            y.mul_(gate)
    else:
        y = mkldnn._convolution_pointwise.binary(
            x, gate, weight, conv.bias, *geometry, "mul", None, "relu" if relu else None, [], None
        )
    return y.squeeze(2) if flat else y
