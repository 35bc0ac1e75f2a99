"""``coordgate deconvolve`` speed: Richardson-Lucy on a 2048² frame of the default lens.

The frame: synthetic microscopy (``SIZE`` x ``SIZE``, seed 0) blurred by the default lens
(the low-rank operator, mirrored borders) with the :class:`~coordgate.data.pairs.NoiseModel`
default noise. For one and two torch threads:

- ``iteration_s``: the median time of one Richardson-Lucy iteration with the default
  settings (total variation, tiles of ``DEFAULT_TILE`` px), and for each window side of
  ``TILES`` (None: the whole frame at once), the cases taken in turns
  (:func:`coordgate.timing.time_clocks`; thread CPU time too on one thread);
- ``total_s``: one call of :func:`coordgate.deconvolution.deconvolve_frame` with the default
  settings, end to end (operator and spectra, noise estimate, every iteration, the final
  fit), with its iterations and the PSNR of input and result against the sharp frame;
  on one thread also the largest difference from the same run on the whole frame at once.

Ratios: each tile's iteration over the default's, and two threads over one. On CUDA
(when present) the default settings and the whole frame are timed too. ``--quick``: 512².
"""

from __future__ import annotations

import time

import torch

from benchmarks.timing import ratios, threads, time_clocks
from coordgate.data.pairs import NoiseModel
from coordgate.data.synthetic import synthetic_microscopy
from coordgate.deconvolution import (
    DEFAULT_TILE,
    DeconvolutionSettings,
    deconvolve_frame,
    tv_weight,
)
from coordgate.optics import PSFField, SpatiallyVaryingBlur, TiledBlur, estimate_noise
from coordgate.optics.restoration import richardson_lucy_steps
from coordgate.training.metrics import psnr

SIZE = 2048
TILES = (None, 256, 384, 512, 1024)
THREADS = (1, 2)
REPEATS = 5


def _frame(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sharp, blurred with noise), (1, 1, size, size) each."""
    sharp = synthetic_microscopy([0], size, seed=0)
    with torch.no_grad():
        clean = SpatiallyVaryingBlur(
            PSFField.default(), (size, size), method="lowrank", padding="reflect"
        ).A(sharp)
    return sharp, NoiseModel().apply(clean.clamp_min(0), torch.Generator().manual_seed(0))


def _iteration_cases(blurred: torch.Tensor, tiles, device) -> dict:
    """One Richardson-Lucy step per tile setting, each on its own running iterate."""
    field, size = PSFField.default(), tuple(blurred.shape[-2:])
    tv = tv_weight(estimate_noise(blurred), blurred)
    cases = {}
    for tile in tiles:
        operator = TiledBlur(field, size, tile=tile, padding="reflect", device=device)
        steps = richardson_lucy_steps(blurred, operator, tv=tv)
        cases[f"tile {tile}"] = lambda steps=steps: next(steps)
    return cases


def _total(sharp, blurred, device, whole: bool = False) -> dict:
    frame = blurred[0, 0].cpu().numpy()
    started = time.perf_counter()
    result = deconvolve_frame(frame, PSFField.default(), DeconvolutionSettings(), device=device)
    seconds = time.perf_counter() - started
    restored = torch.from_numpy(result.image)[None, None]
    compared = {}
    if whole:  # the same with the whole frame at once
        settings = DeconvolutionSettings(tile=None)
        untiled = deconvolve_frame(frame, PSFField.default(), settings, device=device)
        difference = float(abs(untiled.image - result.image).max())
        compared = {"tiled_vs_whole_max_abs_difference": difference}
    return {
        **compared,
        "total_s": round(seconds, 2),
        "iterations": result.iterations,
        "stopped_by": result.stopped_by,
        "psnr_input": round(float(psnr(blurred.cpu(), sharp)), 3),
        "psnr_result": round(float(psnr(restored, sharp)), 3),
        "residual": round(result.residual, 5),
        "noise_residual": round(result.noise_residual, 5),
    }


def _measure(sharp, blurred, tiles, device, repeats: int, whole: bool = False) -> dict:
    with torch.no_grad():
        cases = _iteration_cases(blurred.to(device), tiles, device)
        seconds = time_clocks(cases, repeats=repeats, warmup=1, device=device)
        total = _total(sharp, blurred, device, whole)
    default = f"tile {DEFAULT_TILE}"
    pairs = {f"{name} / default": (name, default) for name in cases if name != default}
    return {
        "iteration_s": {
            clock: {k: round(v, 4) for k, v in per.items()} for clock, per in seconds.items()
        },
        "iteration_over_default": ratios(seconds, pairs),
        **total,
    }


def run(quick: bool = False) -> dict:
    size = 512 if quick else SIZE
    sharp, blurred = _frame(size)
    tiles = tuple(t for t in dict.fromkeys((DEFAULT_TILE, *TILES)) if t is None or t < size)
    found = {"size": size, "default_tile": DEFAULT_TILE, "cpu": {}}
    for n in THREADS:
        with threads(n):
            found["cpu"][f"{n} thread(s)"] = _measure(
                sharp, blurred, tiles, "cpu", REPEATS, whole=n == THREADS[0]
            )
        print(f"{n} thread(s): {found['cpu'][f'{n} thread(s)']}", flush=True)
    one, two = (found["cpu"][f"{n} thread(s)"] for n in THREADS)
    default = f"tile {DEFAULT_TILE}"
    found["two_threads_over_one"] = {
        "iteration (wall)": round(
            two["iteration_s"]["wall"][default] / one["iteration_s"]["wall"][default], 3
        ),
        "total": round(two["total_s"] / one["total_s"], 3),
    }
    if torch.cuda.is_available():
        found["cuda"] = _measure(sharp, blurred, (DEFAULT_TILE, None), "cuda", REPEATS)
    else:
        found["cuda"] = "not measured: no CUDA device here"
    return found
