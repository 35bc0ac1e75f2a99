"""CoordGateConv against nn.Conv2d and LocallyConnected (paper §III: the only overhead at
inference is one elementwise multiply).

Measured on the CPU in float32: N=4, 32 -> 32 channels, 3x3 kernels.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.timing import time_interleaved
from coordgate import CoordGateConv, LocallyConnected
from coordgate.models import count_parameters


def _forward(model: nn.Module, x: torch.Tensor):
    def call():
        with torch.no_grad():
            model(x)

    return call


def _train_step(model: nn.Module, x: torch.Tensor):
    def call():
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()

    return call


def run(quick: bool = False) -> dict:
    torch.manual_seed(0)
    n, c, size = 4, 32, (128 if quick else 256)
    repeats = 5 if quick else 20
    conv = nn.Conv2d(c, c, 3, padding="same")
    gated = CoordGateConv(c, c, 3)
    x = torch.randn(n, c, size, size)

    conv.eval(), gated.eval()
    infer = time_interleaved(
        {"conv2d": _forward(conv, x), "coordgateconv": _forward(gated, x)}, repeats
    )
    conv.train(), gated.train()
    train_fwd = time_interleaved(
        {"conv2d": _forward(conv, x), "coordgateconv": _forward(gated, x)}, repeats
    )
    train_step = time_interleaved(
        {"conv2d": _train_step(conv, x), "coordgateconv": _train_step(gated, x)}, repeats
    )

    small = 64
    local = LocallyConnected(c, c, 3, (small, small))
    gated_small = CoordGateConv(c, c, 3).eval()
    xs = torch.randn(n, c, small, small)
    local_times = time_interleaved(
        {"locally_connected": _forward(local, xs), "coordgateconv": _forward(gated_small, xs)},
        repeats,
    )
    return {
        "setup": {
            "batch": n,
            "channels": c,
            "size": size,
            "kernel": 3,
            "dtype": "float32",
            "device": "cpu",
            "threads": torch.get_num_threads(),
            "repeats": repeats,
        },
        "eval_seconds": infer,
        "eval_ratio_coordgateconv_over_conv2d": infer["coordgateconv"] / infer["conv2d"],
        "train_forward_seconds": train_fwd,
        "train_forward_ratio": train_fwd["coordgateconv"] / train_fwd["conv2d"],
        "train_step_seconds": train_step,
        "train_step_ratio": train_step["coordgateconv"] / train_step["conv2d"],
        "locally_connected_64": {
            "seconds": local_times,
            "time_ratio_lc_over_coordgateconv": local_times["locally_connected"]
            / local_times["coordgateconv"],
            "params": {
                "locally_connected": count_parameters(local),
                "coordgateconv": count_parameters(gated_small),
                "conv2d": count_parameters(conv),
            },
            "param_ratio_lc_over_coordgateconv": count_parameters(local)
            / count_parameters(gated_small),
        },
    }
