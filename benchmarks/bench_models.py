"""Deblurring networks: train-step throughput, gate overhead, tiled deblurring of a large image.

- Train-step throughput (images/s) of every 2D model at the cpu preset's size (64x64
  crops with per-sample origins in a 256x256 sensor, base_channels 8, batch 8, Adam on MSE),
  on one thread, by the thread's CPU time.
- CG U-Net(3) / U-Net(3) and CG U-Net(3) / U-Net(6) step-time ratios, measured in the same
  interleaved run (gate overhead in training).
- Deblurring a 2048x2048 image (1024x1024 with ``quick``) with CG U-Net(3) by tiles on the
  CPU: wall time and peak resident memory of a fresh process during prediction (Linux
  ``VmHWM`` after resetting it), next to its memory before prediction (torch and the
  model alone).

Issue 14, on one thread, timed in turns (wall and thread-CPU clocks):

- ``gate_overhead_training``: batch 16 of 64x64 crops of a 256x256 sensor, at base_channels
  8 (the cpu and sensor presets), 16 and 32 (the paper preset): U-Net(3), CG U-Net(3) with
  one frame for the batch, CG U-Net(3) and CG U-Net(3) with narrow gates
  (``cg-unet3-narrow``, encoders as wide as the gated channels) with a sensor origin per
  sample (random crops); and the gates' own share of a per-sample step, their four
  evaluations as the step computes them (coordinate encoders over each level's pixel
  union of the crops, gathered per crop) forward and backward without the convolutions
  or the multiply, a floor for the per-sample step's ratio;
- ``inference``: CG U-Net(3) / U-Net(3) in eval, base_channels 8, a 256x256 image whole
  and a 2048x2048 image (1024x1024 with ``--quick``) tiled by ``predict(tile="auto")``;
  steady state (gates cached by the first call, as for every further frame of a
  ``coordgate deblur`` run), plus the first call of each.

Both are timed in three fresh processes (one with ``--quick``) and reported as each
ratio's median and range over them: on the shared machine a step's convolutions run
10-20% faster or slower from one process to the next, which the median within one
process does not see.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.timing import ratios, threads, time_clocks
from coordgate.frames import batch_frames
from coordgate.models import build_model, count_parameters
from coordgate.timing import adam_step

__all__ = ["run"]

MODELS = [f"unet{d}" for d in range(3, 7)] + [f"cg-unet{d}" for d in range(3, 7)]
MODELS += ["cg-unet3-narrow", "coordconv-unet6", "multiwiener-unet6"]
PRESET = dict(size=64, frame=256, base_channels=8, batch=8)
# The gate's training cost is measured at the cpu and sensor presets' base width, at 16 and
# at the paper preset's 32 (where the default 32-wide encoders are as wide as level 0).
BASE_WIDTHS = (8, 16, 32)
GATED = ("cg-unet3", "cg-unet3-narrow")

_DEBLUR = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import torch
    from coordgate.inference import default_overlap, default_tile, predict
    from coordgate.tiling import balanced_tile
    from coordgate.models import build_model

    def rss_mb(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

    size, base = int(sys.argv[1]), int(sys.argv[2])
    torch.manual_seed(0)
    model = build_model("cg-unet3", base_channels=base).eval()
    image = torch.rand(size, size)
    # import peaks would hide the prediction's own peak: reset the high-water mark
    Path("/proc/self/clear_refs").write_text("5")
    before = rss_mb("VmRSS")
    start = time.perf_counter()
    out = predict(model, image, tile="auto")
    seconds = time.perf_counter() - start
    overlap = default_overlap(model)
    print(json.dumps(dict(
        seconds=seconds, peak_rss_mb=rss_mb("VmHWM"), rss_before_predict_mb=before,
        tile=balanced_tile(size, default_tile(model), overlap, model.required_multiple),
        overlap=overlap, finite=bool(torch.isfinite(out).all()),
        threads=torch.get_num_threads(),
    )))
    """
)


def _train_step(name: str, generator: torch.Generator):
    size, frame, batch = PRESET["size"], PRESET["frame"], PRESET["batch"]
    model = build_model(name, base_channels=PRESET["base_channels"])
    blurred, sharp = torch.rand(2, batch, 1, size, size, generator=generator)
    origin = torch.randint(0, frame - size + 1, (batch, 2), generator=generator)
    return model, adam_step(model, blurred, sharp, origin, (frame, frame))


def _gate_evaluations(
    model: torch.nn.Module, inputs: torch.Tensor, origins: torch.Tensor, sensor: int
) -> Callable[[], None]:
    """A case for the timers: every gate of a CG U-Net computed for ``inputs`` at
    ``origins`` as a training step computes it (``CoordGate.weights_for`` on its level's
    frames, one pixel union per level), forward and backward: what a per-sample step
    spends on gates besides multiplying the features."""
    # down_gates[l] gates level l, up_gates[l] level l + 1 (CoordGateUNet._output_gate)
    placed = [(g, level) for level, g in enumerate(model.down_gates)]
    placed += [(g, level + 1) for level, g in enumerate(model.up_gates)]

    def evaluate() -> None:
        frames = batch_frames(inputs, origins, (sensor, sensor))
        levels = [frames.scaled(level) for level in range(model.depth)]
        outputs = []
        for gate, level in placed:
            like = inputs.new_empty(1).expand(len(inputs), gate.channels, *levels[level].size)
            outputs.append(gate.weights_for(like, levels[level]))
        torch.autograd.backward(outputs, [torch.ones_like(o) for o in outputs])

    return evaluate


def _gate_training_steps(base_channels: int) -> dict:
    """Steps of U-Net(3) and CG U-Net(3), one frame or a sensor origin per sample, and the
    per-sample gates' own evaluations, at ``base_channels``."""
    generator = torch.Generator().manual_seed(0)
    blurred, sharp = torch.rand(2, 16, 1, 64, 64, generator=generator)
    origins = torch.randint(0, 256 - 64 + 1, (16, 2), generator=generator)
    shared = torch.tensor([[96, 96]] * 16)
    steps = {}
    for label, name, origin in (
        ("unet3", "unet3", origins),
        ("cg-unet3 one frame", "cg-unet3", shared),
        ("cg-unet3 per-sample origins", "cg-unet3", origins),
        ("cg-unet3-narrow per-sample origins", "cg-unet3-narrow", origins),
    ):
        torch.manual_seed(0)
        model = build_model(name, base_channels=base_channels)
        steps[label] = adam_step(model, blurred, sharp, origin, (256, 256))
    for name in GATED:
        torch.manual_seed(0)
        model = build_model(name, base_channels=base_channels)
        steps[f"{name} gate evaluations"] = _gate_evaluations(model, blurred, origins, 256)
    return steps


def _gate_training(base_channels: int, repeats: int) -> dict:
    """Seconds and ratios to a U-Net(3) step of :func:`_gate_training_steps`, one thread."""
    with threads(1):
        seconds = time_clocks(_gate_training_steps(base_channels), repeats=repeats, warmup=2)
    pairs = {"cg-unet3 one frame / unet3": ("cg-unet3 one frame", "unet3")}
    for name in GATED:
        pairs[f"{name} per-sample origins / unet3"] = (f"{name} per-sample origins", "unet3")
        pairs[f"{name} gate evaluations / unet3"] = (f"{name} gate evaluations", "unet3")
    return {
        "seconds": {c: {k: round(v, 4) for k, v in per.items()} for c, per in seconds.items()},
        "ratios": ratios(seconds, pairs),
    }


def _inference_cases(size: int, tiled: bool) -> tuple[dict, dict]:
    from coordgate.inference import predict

    torch.manual_seed(0)
    models = {name: build_model(name, base_channels=8).eval() for name in ("unet3", "cg-unet3")}
    image = torch.rand(size, size)
    first = {}
    cases = {}
    for name, model in models.items():
        if tiled:
            call = lambda model=model: predict(model, image, tile="auto")  # noqa: E731
        else:
            x = image[None, None]

            def call(model=model, x=x):
                with torch.inference_mode():
                    return model(x)

        start = time.thread_time()
        call()
        first[name] = round(time.thread_time() - start, 3)
        cases[name] = call
    return cases, first


def _inference(large: int, repeats_whole: int, repeats_tiled: int) -> dict:
    """CG U-Net(3) / U-Net(3) in eval on one thread: a 256x256 image whole and a ``large``
    square image tiled; steady-state ratios and seconds, and each model's first call."""
    out: dict = {"ratios": {}, "first_call_thread_cpu_s": {}, "steady_thread_cpu_s": {}}
    with threads(1):
        for label, size, tiled, repeats in (
            ("256x256 whole", 256, False, repeats_whole),
            (f"{large}x{large} tiled", large, True, repeats_tiled),
        ):
            cases, first = _inference_cases(size, tiled)
            measured = time_clocks(cases, repeats=repeats, warmup=1)
            out["ratios"][f"{label}: cg-unet3 / unet3"] = ratios(
                measured, {"r": ("cg-unet3", "unet3")}
            )["r"]
            out["first_call_thread_cpu_s"][label] = first
            out["steady_thread_cpu_s"][label] = {
                k: round(v, 3) for k, v in measured["thread_cpu"].items()
            }
    return out


def _in_processes(function: str, args: tuple[int, ...], processes: int) -> dict:
    """``function(*args)`` of this module, a dict of ``"ratios"`` ({label: {clock: ratio}})
    and other entries, run in ``processes`` fresh processes: each ratio's median, range and
    values over the processes, and every process's other entries."""
    code = (
        "import json, sys; from benchmarks import bench_models; "
        f"print(json.dumps(bench_models.{function}(*map(int, sys.argv[1:]))))"
    )
    runs = [_python(code, *args) for _ in range(processes)]
    summary: dict = {"processes": processes, "ratios": {}}
    for label, clocks in runs[0]["ratios"].items():
        summary["ratios"][label] = {}
        for clock in clocks:
            values = [run["ratios"][label][clock] for run in runs]
            summary["ratios"][label][clock] = {
                "median": statistics.median(values),
                "range": [min(values), max(values)],
                "per_process": values,
            }
    for key in runs[0].keys() - {"ratios"}:
        summary[f"{key}_per_process"] = [run[key] for run in runs]
    return summary


def gate_costs(quick: bool) -> dict:
    """The gate's cost in training steps and in inference, as ratios to U-Net(3)."""
    processes = 1 if quick else 3
    training = {
        str(base): _in_processes("_gate_training", (base, repeats), processes)
        for base, repeats in zip(BASE_WIDTHS, (3, 3, 2) if quick else (11, 7, 5))
    }
    inference = _in_processes("_inference", (1024, 5, 2) if quick else (2048, 15, 3), processes)

    def median(summary: dict, label: str) -> float:
        return summary["ratios"][label]["thread_cpu"]["median"]

    worst = max(median(inference, label) for label in inference["ratios"])
    return {
        "threads": 1,
        "gate_overhead_training": {
            "batch": 16,
            "crop": 64,
            "sensor": 256,
            "by_base_channels": training,
        },
        "inference": inference,
        "targets": {
            **{
                f"{name} per-sample-origin training step <= 1.3x U-Net(3) at base_channels "
                f"{base} (thread CPU, median over processes)": median(
                    per, f"{name} per-sample origins / unet3"
                )
                <= 1.3
                for base, per in training.items()
                for name in GATED
            },
            "CG U-Net(3) inference <= 1.10x U-Net(3), 256² and tiled (thread CPU, median "
            "over processes)": worst <= 1.10,
        },
    }


def _python(code: str, *args: object) -> dict:
    """The JSON that ``code`` prints last, run in a fresh Python with ``args``."""
    completed = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run(quick: bool) -> dict:
    generator = torch.Generator().manual_seed(0)
    steps, parameters = {}, {}
    for name in MODELS:
        model, steps[name] = _train_step(name, generator)
        parameters[name] = count_parameters(model)
    with threads(1):  # thread CPU time: steady under load, unlike 2-thread wall time
        seconds = time_clocks(steps, repeats=3 if quick else 7, warmup=1)["thread_cpu"]
    batch = PRESET["batch"]
    size = 1024 if quick else 2048
    return {
        "preset": dict(PRESET, name="cpu"),
        "threads": 1,
        "train_step": {
            name: dict(
                seconds=seconds[name],
                images_per_second=batch / seconds[name],
                parameters=parameters[name],
            )
            for name in MODELS
        },
        "step_time_ratio": {
            "cg-unet3 / unet3": seconds["cg-unet3"] / seconds["unet3"],
            "cg-unet3 / unet6": seconds["cg-unet3"] / seconds["unet6"],
        },
        "parameter_ratio_unet6_over_cg_unet3": parameters["unet6"] / parameters["cg-unet3"],
        "deblur_cg_unet3": {
            f"base_channels_{base}": dict(_python(_DEBLUR, size, base), image=f"{size}x{size}")
            for base in (PRESET["base_channels"], 16)
        },
        "deblur_target_peak_mb": 2048,
        "gate_costs": gate_costs(quick),
    }
