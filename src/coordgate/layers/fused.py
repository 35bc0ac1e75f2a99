"""A convolution, its ReLU and its gate with no pass over memory but the multiply
(inference on the CPU).

CoordGate's promise is one elementwise multiply over a plain convolution. oneDNN
convolutions accept *post-ops* applied while each output block is still in cache:
:func:`gated_conv` runs the ReLU as one when nothing needs gradients, and then multiplies
the output by the gate in place, giving ``relu(conv(x)) * gate`` (or without the ReLU)
equal to rounding.

Why the multiply is not a post-op as well (measured with torch 2.13 at 4x32x256², one
thread): oneDNN's binary post-op fuses only channels-last inputs with a gate of the
output's full shape. With an NCHW input torch falls back to the convolution followed by the
same in-place multiply; with channels-last, the full-batch gate it needs is read once per
sample, and the fused convolution took 1.10x the plain one against 1.03x for the in-place
multiply by a broadcast gate; a gate broadcast over the batch took 85x the NCHW
convolution. The in-place multiply costs 2-3 % of the convolution: one read and write of
the features.
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


def _fusable(conv: _ConvNd, x: torch.Tensor) -> bool:
    if torch.is_grad_enabled() or not torch.backends.mkldnn.is_available():
        return False
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    return (
        x.device.type == "cpu"
        and x.dtype == conv.weight.dtype == torch.float32
        and x.is_contiguous()
    )


def gated_conv(
    conv: _ConvNd, x: torch.Tensor, gate: torch.Tensor | None = None, *, relu: bool = False
) -> torch.Tensor:
    """``conv(x)``, then ReLU when ``relu``, then times ``gate`` when given.

    x: (N, C_in, *spatial) -> (N, C_out, *spatial); gate: (1 or N, C_out, *spatial).
    The ReLU runs inside the convolution (see the module docstring) when no gradients are
    recorded, on the CPU in float32, for zero padding that is the same on both ends of an
    axis; without gradients the gate multiplies the output in place.
    """
    padding = _symmetric_padding(conv)
    if relu and padding is not None and _fusable(conv, x):
        y = _conv_relu(conv, x, padding)
    else:
        y = conv(x)
        if relu:
            y = torch.relu_(y) if not torch.is_grad_enabled() else torch.relu(y)
    if gate is None:
        return y
    return y.mul_(gate) if not torch.is_grad_enabled() else y * gate


def _conv_relu(conv: _ConvNd, x: torch.Tensor, padding: list[int]) -> torch.Tensor:
    """The oneDNN convolution with the ReLU as a post-op."""
    flat = x.ndim == 3  # oneDNN has no 1-D kernels: run a Conv1d as a Conv2d of height 1
    if flat:
        x = x.unsqueeze(2)
    weight = conv.weight.unsqueeze(2) if flat else conv.weight
    geometry = [
        ([0] if flat else []) + padding,
        ([1] if flat else []) + list(conv.stride),
        ([1] if flat else []) + list(conv.dilation),
        conv.groups,
    ]
    y = torch.ops.mkldnn._convolution_pointwise(x, weight, conv.bias, *geometry, "relu", [], "")
    return y.squeeze(2) if flat else y
