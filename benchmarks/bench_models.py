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

- ``gate_overhead_training``: batch 16 of 64x64 crops of a 256x256 sensor, base_channels 8:
  U-Net(3), CG U-Net(3) with one frame for the batch, CG U-Net(3) and CG U-Net(3) with
  narrow gates (``cg-unet3-narrow``, encoders as wide as the gated channels) with a sensor
  origin per sample (random crops);
- ``inference``: CG U-Net(3) / U-Net(3) in eval, base_channels 8, a 256x256 image whole
  and a 2048x2048 image (1024x1024 with ``--quick``) tiled by ``predict(tile="auto")``;
  steady state (gates cached by the first call, as for every further frame of a
  ``coordgate deblur`` run), plus the first call of each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import torch

from benchmarks.timing import ratios, threads, time_clocks
from coordgate.models import build_model, count_parameters
from coordgate.timing import adam_step

__all__ = ["run"]

MODELS = [f"unet{d}" for d in range(3, 7)] + [f"cg-unet{d}" for d in range(3, 7)]
MODELS += ["cg-unet3-narrow", "coordconv-unet6", "multiwiener-unet6"]
PRESET = dict(size=64, frame=256, base_channels=8, batch=8)

_DEBLUR = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import torch
    from coordgate.inference import balanced_tile, default_overlap, default_tile, predict
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


def _gate_training_steps() -> dict:
    """Steps of U-Net(3) and CG U-Net(3), one frame or a sensor origin per sample."""
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
        model = build_model(name, base_channels=8)
        steps[label] = adam_step(model, blurred, sharp, origin, (256, 256))
    return steps


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


def gate_costs(quick: bool) -> dict:
    """The gate's cost in training steps and in inference, as ratios to U-Net(3)."""
    with threads(1):
        seconds = time_clocks(_gate_training_steps(), repeats=3 if quick else 21, warmup=2)
        training = ratios(
            seconds,
            {
                "cg-unet3 one frame / unet3": ("cg-unet3 one frame", "unet3"),
                "cg-unet3 per-sample origins / unet3": ("cg-unet3 per-sample origins", "unet3"),
                "cg-unet3-narrow per-sample origins / unet3": (
                    "cg-unet3-narrow per-sample origins",
                    "unet3",
                ),
            },
        )
        inference = {}
        large = 1024 if quick else 2048
        for label, size, tiled, repeats in (
            ("256x256 whole", 256, False, 5 if quick else 15),
            (f"{large}x{large} tiled", large, True, 2 if quick else 3),
        ):
            cases, first = _inference_cases(size, tiled)
            measured = time_clocks(cases, repeats=repeats, warmup=1)
            inference[label] = {
                "ratio cg-unet3 / unet3": ratios(measured, {"r": ("cg-unet3", "unet3")})["r"],
                "first_call_thread_cpu_s": first,
                "steady_thread_cpu_s": {k: round(v, 3) for k, v in measured["thread_cpu"].items()},
            }
    per_sample = {
        name: training[f"{name} per-sample origins / unet3"]["thread_cpu"]
        for name in ("cg-unet3", "cg-unet3-narrow")
    }
    worst = max(v["ratio cg-unet3 / unet3"]["thread_cpu"] for v in inference.values())
    return {
        "threads": 1,
        "gate_overhead_training": {
            "batch": 16,
            "crop": 64,
            "sensor": 256,
            "base_channels": 8,
            "seconds": {c: {k: round(v, 4) for k, v in per.items()} for c, per in seconds.items()},
            "ratios": training,
        },
        "inference": inference,
        "targets": {
            **{
                f"{name} per-sample-origin training step <= 1.3x U-Net(3) (thread CPU)": ratio
                <= 1.3
                for name, ratio in per_sample.items()
            },
            "CG U-Net(3) inference <= 1.10x U-Net(3), 256² and tiled (thread CPU)": worst <= 1.10,
        },
    }


def _deblur(size: int, base_channels: int) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", _DEBLUR, str(size), str(base_channels)],
        capture_output=True,
        text=True,
        check=True,
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
            f"base_channels_{base}": dict(_deblur(size, base), image=f"{size}x{size}")
            for base in (PRESET["base_channels"], 16)
        },
        "deblur_target_peak_mb": 2048,
        "gate_costs": gate_costs(quick),
    }
