"""The spatially-varying layers side by side: Conv2d, CoordGateConv, PixelAdaptiveConv and
LocallyConnected (paper §II-III: CoordGate costs one elementwise multiply over a
convolution; PAC cannot use the fast convolution kernels; an LCN needs a kernel per pixel).

Float32 on the CPU with one torch thread, batch 4, 32 -> 32 channels, 3x3 kernels, at
64x64 and 256x256 (32x32 and 64x64 with ``--quick``). Per layer and size:

- ``parameters`` and ``parameter_mib`` (weights alone);
- ``eval_s`` / ``train_step_s``: median seconds of an eval forward (no autograd,
  CoordGate's gate cached) and of a training step (forward + backward), the four layers
  run in turn in one process so that machine noise affects them alike; ``*_ratio``: the
  same over Conv2d;
- ``eval_peak_mib`` / ``train_peak_mib``: peak resident memory of a call minus the memory
  just before it, in a fresh process whose allocator returns large blocks to the system
  at once (``MALLOC_MMAP_THRESHOLD_``), with the kernel's high-water mark reset first.

A case whose estimated memory (weights, gradients and unfolded patches) exceeds 60 % of the
machine's available memory is not run and is reported with that estimate: at 256x256 the
locally-connected layer alone holds 65536 x 32 x 288 weights (2.4 GB).

``gate_fusion`` (issue 14): at 4x32x256² (4x32x128² with ``--quick``), eval, the gate
cached, timed in turns on one thread and then on two: ``nn.Conv2d``; ``CoordGateConv``
(the gate multiplying the convolution's output in place, see :mod:`coordgate.layers.fused`,
which says why that beats oneDNN's binary post-op); the same two operations written out;
and the multiply alone. Then
both layers compiled with ``torch.compile`` (Inductor, C++ on the CPU, ``freezing``),
with their compile times (not with ``--quick``). One-thread ratios are given on wall and
thread-CPU clocks (the latter is what a busy machine inflates least).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from benchmarks.timing import ratios, threads, time_clocks, time_interleaved

__all__ = ["LAYERS", "run"]

LAYERS = ("conv2d", "coordgateconv", "pac", "locally_connected")
BATCH, CHANNELS, KERNEL = 4, 32, 3
MIB = 1 << 20
# One thread: layers whose kernels use different thread pools (oneDNN convolutions, batched
# matmuls), run in turn, leave each other's pools spinning on a 2-core machine, which
# slowed a U-Net step 20-fold in our measurements.
THREADS = 1
# Allocations of 128 KiB and more are mmapped and unmapped on free, so resident memory
# follows the live tensors instead of the allocator's retained heap.
_ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


def build_layer(name: str, size: int) -> nn.Module:
    """One of ``LAYERS`` with CHANNELS -> CHANNELS channels for inputs of size x size."""
    from coordgate import CoordGateConv, LocallyConnected, PixelAdaptiveConv

    c, k = CHANNELS, KERNEL
    return {
        "conv2d": lambda: nn.Conv2d(c, c, k, padding="same"),
        "coordgateconv": lambda: CoordGateConv(c, c, k),
        "pac": lambda: PixelAdaptiveConv(c, c, k),
        "locally_connected": lambda: LocallyConnected(c, c, k, (size, size)),
    }[name]()


def parameter_count(name: str, size: int) -> int:
    """Parameters of a layer, counted without building it (the LCN may not fit)."""
    taps = CHANNELS * KERNEL**2
    if name == "locally_connected":
        return size * size * CHANNELS * (taps + 1)
    return sum(p.numel() for p in build_layer(name, size).parameters())


def estimated_mib(name: str, size: int) -> float:
    """Rough upper estimate of a training step's memory: weights and their gradients, and
    for the unfold-based layers a few copies of the unfolded patches (N, P, C * K)."""
    weights = 2 * parameter_count(name, size)
    patches = 4 * BATCH * size * size * CHANNELS * KERNEL**2
    unfolded = patches if name in ("pac", "locally_connected") else 0
    return 4 * (weights + unfolded) / MIB


def _available_mib() -> float:
    text = Path("/proc/meminfo").read_text()
    return int(re.search(r"MemAvailable:\s+(\d+)", text).group(1)) / 1024


def _status_kib(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+)", text).group(1))


def _peak_mib(call) -> float:
    """Peak resident memory of ``call()`` above the memory just before it."""
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    call()
    return (_status_kib("VmHWM") - before) / 1024


def _eval_call(layer: nn.Module, x: torch.Tensor):
    def call() -> None:
        layer.eval()
        with torch.no_grad():
            layer(x)

    return call


def _train_call(layer: nn.Module, x: torch.Tensor):
    def call() -> None:
        layer.train()
        layer.zero_grad(set_to_none=True)
        layer(x).square().mean().backward()

    return call


def memory_case(name: str, size: int) -> dict:
    """Measure one (layer, size) case's peak memory in this process."""
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    layer = build_layer(name, size)
    x = torch.randn(BATCH, CHANNELS, size, size)
    # The first eval call fills CoordGate's gate cache, which later calls reuse.
    _eval_call(layer, x)()
    eval_peak = _peak_mib(_eval_call(layer, x))
    train_peak = _peak_mib(_train_call(layer, x))
    return {"eval_peak_mib": round(eval_peak, 1), "train_peak_mib": round(train_peak, 1)}


def _measure_memory(name: str, size: int) -> dict:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_layers", name, str(size)],
        cwd=root,
        env={**os.environ, **_ALLOCATOR_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory case {name} {size} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _time_layers(names: list[str], size: int, repeats: int) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    x = torch.randn(BATCH, CHANNELS, size, size)
    layers = {name: build_layer(name, size) for name in names}
    seconds = {
        key: time_interleaved({n: call(m, x) for n, m in layers.items()}, repeats, warmup=1)
        for key, call in (("eval_s", _eval_call), ("train_step_s", _train_call))
    }
    return {name: {key: values[name] for key, values in seconds.items()} for name in names}


def _size_results(size: int, repeats: int) -> dict:
    available = _available_mib()
    rows: dict[str, dict] = {}
    for name in LAYERS:
        params = parameter_count(name, size)
        rows[name] = {"parameters": params, "parameter_mib": round(4 * params / MIB, 2)}
        need = estimated_mib(name, size)
        if need > 0.6 * available:
            rows[name]["not_run"] = (
                f"needs about {need / 1024:.1f} GiB (weights, gradients, unfolded patches); "
                f"{available / 1024:.1f} GiB available"
            )
        else:
            rows[name].update(_measure_memory(name, size))
        print(json.dumps({"size": size, name: rows[name]}), flush=True)
    measured = [name for name in LAYERS if "not_run" not in rows[name]]
    seconds = _time_layers(measured, size, repeats)
    for name in measured:
        rows[name].update({k: float(f"{v:.4g}") for k, v in seconds[name].items()})
        for key, ratio in (("eval_s", "eval_ratio"), ("train_step_s", "train_step_ratio")):
            rows[name][ratio] = round(seconds[name][key] / seconds["conv2d"][key], 2)
    return rows


def run(quick: bool = False) -> dict:
    with threads(THREADS):
        return {**_run(quick), "gate_fusion": gate_fusion(quick)}


def _fusion_cases(size: int) -> dict:
    from coordgate import CoordGateConv

    torch.manual_seed(0)
    x = torch.randn(BATCH, CHANNELS, size, size)
    conv = nn.Conv2d(CHANNELS, CHANNELS, KERNEL, padding="same").eval()
    gated = CoordGateConv(CHANNELS, CHANNELS, KERNEL).eval()
    with torch.no_grad():
        gate = gated.gate.weights_for(gated.conv(x))  # cached from here on
        features = conv(x)
    return {
        "conv2d": lambda: conv(x),
        "coordgateconv": lambda: gated(x),
        "unfused": lambda: gated.conv(x).mul_(gate),
        "multiply_alone": lambda: features.mul_(gate),
    }, (conv, gated, x)


def _compiled(conv: nn.Module, gated: nn.Module, x: torch.Tensor) -> dict:
    import time

    import torch._inductor.config as inductor

    inductor.freezing = True  # parameters are constants: the gate may fold away
    out = {}
    with torch.no_grad():
        compiled = {}
        for name, layer in (("conv2d", conv), ("coordgateconv", gated)):
            start = time.perf_counter()
            compiled[name] = torch.compile(layer)
            compiled[name](x)
            out[f"compile_s_{name}"] = round(time.perf_counter() - start, 1)
        out["max_abs_difference_to_eager"] = float(
            (compiled["coordgateconv"](x) - gated(x)).abs().max()
        )
        cases = {
            "conv2d": lambda: conv(x),
            "coordgateconv": lambda: gated(x),
            "compiled conv2d": lambda: compiled["conv2d"](x),
            "compiled coordgateconv": lambda: compiled["coordgateconv"](x),
        }
        seconds = time_clocks(cases, repeats=7, warmup=1)
    out["ratios"] = ratios(
        seconds,
        {
            "compiled coordgateconv / compiled conv2d": (
                "compiled coordgateconv",
                "compiled conv2d",
            ),
            "compiled coordgateconv / conv2d": ("compiled coordgateconv", "conv2d"),
            "compiled conv2d / conv2d": ("compiled conv2d", "conv2d"),
            "coordgateconv / conv2d": ("coordgateconv", "conv2d"),
        },
    )
    return out


def gate_fusion(quick: bool) -> dict:
    """CoordGateConv eval over Conv2d with the gate fused, unfused, and compiled."""
    size = 128 if quick else 256
    cases, (conv, gated, x) = _fusion_cases(size)
    pairs = {
        "coordgateconv / conv2d": ("coordgateconv", "conv2d"),
        "unfused / conv2d": ("unfused", "conv2d"),
        "multiply alone / conv2d": ("multiply_alone", "conv2d"),
    }
    result = {"shape": [BATCH, CHANNELS, size, size], "dtype": "float32"}
    for n in (1, 2):
        with threads(n), torch.no_grad():
            seconds = time_clocks(cases, repeats=5 if quick else 11, warmup=2)
        found = ratios(seconds, pairs)
        if n > 1:  # the calling thread's CPU time misses the other thread's work
            found = {k: {"wall": v["wall"]} for k, v in found.items()}
        result[f"threads_{n}"] = found
    if not quick:
        with threads(1):
            result["compiled_threads_1"] = _compiled(conv, gated, x)
    best = result["threads_1"]["coordgateconv / conv2d"]["thread_cpu"]
    result["target"] = "CoordGateConv eval <= 1.05x Conv2d (one thread, thread CPU time)"
    result["target_met"] = best <= 1.05
    return result


def _run(quick: bool) -> dict:
    sizes = (32, 64) if quick else (64, 256)
    # Few repeats at the large size, where a locally-connected training step takes seconds.
    repeats = {32: 3, 64: 3 if quick else 7, 256: 2}
    results = {size: _size_results(size, repeats[size]) for size in sizes}
    summary = {}
    for size, rows in results.items():
        cg, lc = rows["coordgateconv"], rows["locally_connected"]
        summary[f"{size}x{size}"] = {
            "params_locally_connected_over_coordgateconv": round(
                lc["parameters"] / cg["parameters"]
            ),
            "eval_coordgateconv_over_conv2d": cg["eval_ratio"],
            "eval_pac_over_coordgateconv": round(rows["pac"]["eval_s"] / cg["eval_s"], 2),
            "train_step_pac_over_coordgateconv": round(
                rows["pac"]["train_step_s"] / cg["train_step_s"], 2
            ),
            "eval_locally_connected_over_coordgateconv": (
                round(lc["eval_s"] / cg["eval_s"], 2) if "eval_s" in lc else None
            ),
        }
    return {
        "setup": {
            "batch": BATCH,
            "channels": CHANNELS,
            "kernel": KERNEL,
            "sizes": list(sizes),
            "dtype": "float32",
            "device": "cpu",
            "threads": torch.get_num_threads(),
            "memory": "peak RSS of a call minus RSS before it, fresh process (VmHWM reset)",
            "lc_weights_256": 256 * 256 * CHANNELS * CHANNELS * KERNEL**2,
            "lc_weights_256_gib": round(4 * 256 * 256 * CHANNELS * CHANNELS * KERNEL**2 / 2**30, 2),
        },
        "layers": {f"{size}x{size}": rows for size, rows in results.items()},
        "summary": summary,
    }


if __name__ == "__main__":
    name_arg, size_arg = sys.argv[1:3]
    print(json.dumps(memory_case(name_arg, int(size_arg))))
