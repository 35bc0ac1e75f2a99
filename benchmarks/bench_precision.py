"""Faster steps on this CPU? bf16 autocast, channels-last memory and threads per run.

The machine's CPU has AVX-512 with BF16 instructions, which oneDNN uses under
``torch.autocast("cpu", dtype=torch.bfloat16)``. Timed in turns in one run, one thread,
by the thread's CPU time and by wall time, at the cpu preset's shapes (base_channels 8,
batches of 16 whole 64x64 frames, Adam on MSE):

- ``step``: a training step of CG U-Net(3), U-Net(6) and care-unet in float32, under bf16
  autocast, in channels-last memory, and both; ratios to float32;
- ``crop_step``: the same on the sensor preset's batches: 16 crops of 64x64, each with
  its own origin on a 256x256 sensor, new origins every step as in training (the gates
  evaluated per sample), float32 vs bf16 autocast with channels-last;
- ``inference``: eval forward of a 256x256 frame, float32 vs bf16 autocast;
- ``threads``: a float32 step on two threads vs one (wall time; with two runs at a time on
  2 cores, one thread per run is what the studies use);
- ``quality``: CG U-Net(3) trained the same way (seed, data, 20 epochs of warm-up and
  cosine on 160 synthetic frames) in float32 and under bf16 autocast: validation PSNR of
  each, evaluated in float32, so a speed-up is kept only if it costs no PSNR beyond noise.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import replace
from functools import partial

import torch

from benchmarks.timing import ratios, threads, time_clocks
from coordgate.models import build_model
from coordgate.timing import adam_step

__all__ = ["run"]

MODELS = ("cg-unet3", "unet6", "care-unet")


def _options(name: str) -> dict:
    return {} if name == "care-unet" else {"base_channels": 8, "residual": True}


def _autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def _step_case(
    name: str, batch: int, size: int, bf16: bool, channels_last: bool, sensor: int | None = None
):
    """A training step on ``batch`` frames of ``size``² (with ``sensor``: crops of a
    ``sensor``² frame, each at its own random origin)."""
    torch.manual_seed(0)
    model = build_model(name, **_options(name))
    x = torch.rand(batch, 1, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    where = ()
    if sensor is not None:
        # new crops every step, as in training: the union of their pixels, and with it the
        # shape of the gates' matrix products, changes from step to step
        generator = torch.Generator().manual_seed(0)
        origins = torch.zeros(batch, 2, dtype=torch.long)
        where = (origins, (sensor, sensor))
    step = adam_step(model, x, x, *where)

    def case() -> None:
        if sensor is not None:
            origins.copy_(torch.randint(0, sensor - size + 1, (batch, 2), generator=generator))
        with _autocast(bf16):
            step()

    return case


def _inference_case(name: str, size: int, bf16: bool):
    torch.manual_seed(0)
    model = build_model(name, **_options(name)).eval()
    x = torch.rand(1, 1, size, size)

    @torch.no_grad()
    def case() -> None:
        with _autocast(bf16):
            model(x)

    return case


def _quality(images: int, epochs: int) -> dict:
    from coordgate.data.pairs import PairDataset, build_pairs
    from coordgate.training import CPU_SCHEDULE, evaluate, fit

    with tempfile.TemporaryDirectory() as tmp:
        cache = build_pairs(f"{tmp}/pairs", n=images, size=64, noise=None, seed=0, progress=False)
        train, val = PairDataset(cache, "train", augment=True), PairDataset(cache, "val")
        psnr = {}
        for label, amp in (("float32", False), ("bf16", True)):
            torch.manual_seed(0)
            model = build_model("cg-unet3", base_channels=8, residual=True)
            config = replace(CPU_SCHEDULE, epochs=epochs, amp=amp, progress=False, device="cpu")
            fit(model, train, val, config, f"{tmp}/{label}", model_spec=model.model_spec)
            psnr[label] = evaluate(model, val, amp=False)["psnr"]
            psnr[f"{label}_images"] = len(val)
    psnr["bf16_minus_float32_db"] = psnr["bf16"] - psnr["float32"]
    return psnr


def run(quick: bool) -> dict:
    batch, size, repeats = (4, 32, 3) if quick else (16, 64, 7)
    results: dict = {"batch": batch, "size": size, "repeats": repeats, "step": {}}
    with threads(1):
        for name in MODELS:
            variants = {
                "float32": (False, False),
                "bf16": (True, False),
                "channels_last": (False, True),
                "bf16_channels_last": (True, True),
            }
            cases = {k: _step_case(name, batch, size, *v) for k, v in variants.items()}
            seconds = time_clocks(cases, repeats)
            results["step"][name] = {
                "seconds": seconds,
                "ratio_to_float32": ratios(seconds, {k: (k, "float32") for k in variants}),
            }
        sensor = 128 if quick else 256
        results["crop_step"] = {"sensor": sensor}
        for name in MODELS:
            variants = {"float32": (False, False), "bf16_channels_last": (True, True)}
            cases = {
                k: _step_case(name, batch, size, *v, sensor=sensor) for k, v in variants.items()
            }
            seconds = time_clocks(cases, repeats)
            results["crop_step"][name] = {
                "seconds": seconds,
                "ratio_to_float32": ratios(
                    seconds, {"bf16_channels_last": ("bf16_channels_last", "float32")}
                ),
            }
        frame = 128 if quick else 256
        cases = {
            f"{name}_{label}": _inference_case(name, frame, bf16)
            for name in MODELS
            for label, bf16 in (("float32", False), ("bf16", True))
        }
        seconds = time_clocks(cases, repeats)
        results["inference"] = {
            "frame": frame,
            "seconds": seconds,
            "bf16_over_float32": ratios(
                seconds, {name: (f"{name}_bf16", f"{name}_float32") for name in MODELS}
            ),
        }
    # each case sets its own thread count when called
    timed = {
        f"threads_{n}": partial(_with_threads, _step_case("cg-unet3", batch, size, False, False), n)
        for n in (1, 2)
    }
    seconds = time_clocks(timed, repeats)
    results["threads"] = {
        "seconds": seconds,
        "two_over_one_wall": round(seconds["wall"]["threads_2"] / seconds["wall"]["threads_1"], 3),
    }
    with threads(1):
        results["quality"] = _quality(40 if quick else 160, 3 if quick else 20)
    return results


def _with_threads(fn, n: int) -> None:
    with threads(n):
        fn()
