"""The evidence behind ``coordgate deconvolve``'s defaults (:mod:`coordgate.deconvolution`).

Frames: ``FRAMES`` synthetic microscopy frames and the centre crops of the bundled real
images (:mod:`coordgate.data.samples`), all ``SIZE`` x ``SIZE`` with values in [0, 1],
taken as whole sensor frames, blurred by the default lens with the *exact* per-pixel
operator (mirrored borders) and deconvolved with the low-rank one, as the command does.
Two conditions: the :class:`~coordgate.data.pairs.NoiseModel` default noise (1000
photo-electrons at intensity 1, 2 e- read noise, seeded) and no noise.

Richardson-Lucy runs ``MAX_ITERATIONS`` iterations per frame for each total-variation
strength ``TV_STRENGTHS`` (the weight is ``strength * gain / mean`` from the noise
estimated on the frame, :func:`coordgate.deconvolution.tv_weight`; 0: plain
Richardson-Lucy), recording the PSNR and the discrepancy (mean squared residual in
noise variances) of every iterate. Every rule is then scored from those curves:
``CAPS`` iterations at most, stopped early when the discrepancy reaches each of
``STOPS`` (None: never). Wiener runs each balance of ``BALANCES`` on each PSF grid of
``WIENER_GRIDS`` (field points per axis); the best mean over the conditions is chosen.

The choice (``chosen``), by ``RULE``: the rule with the best mean PSNR over both
conditions (each the mean over frames), among those with at most ``MAX_DEFAULT_CAP``
iterations (so that a 2048² frame takes about half a minute on one CPU thread, see
``deconvolve.json``); ties within 0.05 dB go to fewer iterations on average. Its
numbers, with the input's and those of plain Richardson-Lucy at its best fixed count,
are what ``coordgate deconvolve --help`` and the README quote. ``per_frame`` keeps each
frame's PSNR after each of ``CAPS`` iterations. ``--quick``: 4 synthetic frames and one
real one, 50 iterations.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time

import numpy as np
import torch

from coordgate.data.pairs import NoiseModel
from coordgate.data.samples import SAMPLES, sample_image
from coordgate.data.synthetic import synthetic_microscopy
from coordgate.deconvolution import tv_weight
from coordgate.optics import (
    PSFField,
    SpatiallyVaryingBlur,
    TiledBlur,
    estimate_noise,
    spatially_varying_wiener,
)
from coordgate.optics.restoration import richardson_lucy_steps
from coordgate.training.metrics import psnr

SIZE = 256
FRAMES = 8
SEED = 11
MAX_ITERATIONS = 200
TV_STRENGTHS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
CAPS = (10, 25, 50, 100, 200)
STOPS = (None, 1.0, 0.9, 0.8, 0.7, 0.6)
BALANCES = tuple(round(10 ** (e / 4), 6) for e in range(-16, 1))
WIENER_GRIDS = (5, 9, 13)
MAX_DEFAULT_CAP = 100
RULE = (
    "best mean PSNR over the two conditions among rules of at most "
    f"{MAX_DEFAULT_CAP} iterations; within 0.05 dB, fewer mean iterations"
)


def frames(quick: bool) -> dict[str, torch.Tensor]:
    """The sharp frames by name, (1, 1, SIZE, SIZE) each."""
    synthetic = synthetic_microscopy(4 if quick else FRAMES, SIZE, seed=SEED)
    found = {f"synthetic {i}": x[None] for i, x in enumerate(synthetic)}
    for name in list(SAMPLES)[: 1 if quick else None]:
        image = sample_image(name)
        top, left = ((n - SIZE) // 2 for n in image.shape)
        crop = image[top : top + SIZE, left : left + SIZE]
        found[name] = torch.from_numpy(np.ascontiguousarray(crop))[None, None]
    return found


def _psnr(x: torch.Tensor, sharp: torch.Tensor) -> float:
    return float(psnr(x, sharp))


def rl_curves(blurred: torch.Tensor, sharp: torch.Tensor, operator, iterations: int) -> dict:
    """Per strength: the PSNR and discrepancy of every iterate, and the tv weight used."""
    noise = estimate_noise(blurred)
    curves = {}
    for strength in TV_STRENGTHS:
        tv = tv_weight(noise, blurred, strength=strength)
        steps = richardson_lucy_steps(blurred, operator, tv=tv)
        quality, discrepancy = [], []
        for _ in range(iterations):
            step = next(steps)
            discrepancy.append(noise.discrepancy(step.predicted, blurred))
            quality.append(_psnr(step.estimate, sharp))
        curves[str(strength)] = {"tv": tv, "psnr": quality, "discrepancy": discrepancy}
    return curves


def _stopped(curve: dict, cap: int, stop: float | None) -> tuple[float, int]:
    """(PSNR, iterations) of a rule on one frame's curve. The discrepancy at step k is
    that of the estimate before it: stopping there keeps estimate k - 1 (the input for
    k = 0, scored as the blurred frame's PSNR)."""
    for k in range(cap):
        if stop is not None and curve["discrepancy"][k] <= stop:
            return (curve["psnr"][k - 1] if k else curve["input"]), k
    return curve["psnr"][cap - 1], cap


def score_rules(conditions: dict) -> list[dict]:
    """Mean PSNR and iterations of every (strength, cap, stop) rule in each condition."""
    caps = [c for c in CAPS if c <= len(next(iter(conditions["none"].values()))["0.0"]["psnr"])]
    rows = []
    for strength, cap, stop in itertools.product(TV_STRENGTHS, caps, STOPS):
        row = {"tv_strength": strength, "iterations": cap, "stop": stop}
        for condition, per_frame in conditions.items():
            results = [
                _stopped({**f[str(strength)], "input": f["input"]}, cap, stop)
                for f in per_frame.values()
            ]
            row[condition] = {
                "psnr": round(statistics.mean(r[0] for r in results), 3),
                "iterations": round(statistics.mean(r[1] for r in results), 1),
            }
        row["score"] = round(statistics.mean(row[c]["psnr"] for c in conditions), 3)
        rows.append(row)
    return rows


def choose(rows: list[dict]) -> dict:
    """The rule :data:`RULE` picks."""
    allowed = [r for r in rows if r["iterations"] <= MAX_DEFAULT_CAP]
    best = max(r["score"] for r in allowed)
    close = [r for r in allowed if r["score"] >= best - 0.05]

    def mean_iterations(r: dict) -> float:
        return statistics.mean(r[c]["iterations"] for c in ("default noise", "none"))

    return min(close, key=lambda r: (mean_iterations(r), -r["score"]))


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    field = PSFField.default()
    iterations = 50 if quick else MAX_ITERATIONS
    exact = SpatiallyVaryingBlur(field, (SIZE, SIZE), padding="reflect")
    operator = TiledBlur(field, (SIZE, SIZE), padding="reflect")
    noise_model = NoiseModel()
    generator = torch.Generator().manual_seed(SEED)
    conditions = {"default noise": {}, "none": {}}
    wiener = {"default noise": {}, "none": {}}
    started = time.perf_counter()
    with torch.no_grad():
        for name, sharp in frames(quick).items():
            clean = exact.A(sharp)
            noisy = noise_model.apply(clean.clamp_min(0), generator)
            for condition, blurred in (("default noise", noisy), ("none", clean)):
                curves = rl_curves(blurred, sharp, operator, iterations)
                curves["input"] = _psnr(blurred, sharp)
                conditions[condition][name] = curves
                wiener[condition][name] = {
                    f"{grid}/{b}": _psnr(
                        spatially_varying_wiener(blurred, field, balance=b, grid_size=grid),
                        sharp,
                    )
                    for grid in WIENER_GRIDS
                    for b in BALANCES
                }
            print(
                f"{name}: input {conditions['default noise'][name]['input']:.2f} dB "
                f"(noise) / {conditions['none'][name]['input']:.2f} (none), "
                f"{time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    rows = score_rules(conditions)
    chosen = choose(rows)
    plain = max(
        (r for r in rows if r["tv_strength"] == 0.0 and r["stop"] is None),
        key=lambda r: r["default noise"]["psnr"],
    )
    balances = {
        key: {c: round(statistics.mean(f[key] for f in wiener[c].values()), 3) for c in wiener}
        for key in wiener["none"][next(iter(wiener["none"]))]
    }
    best = max(balances, key=lambda key: statistics.mean(balances[key].values()))
    inputs = {
        c: round(statistics.mean(f["input"] for f in per.values()), 3)
        for c, per in conditions.items()
    }
    return {
        "size": SIZE,
        "frames": list(conditions["none"]),
        "noise": {"photons": noise_model.photons, "read_noise": noise_model.read_noise},
        "rule": RULE,
        "input_psnr": inputs,
        "chosen": chosen,
        "plain_richardson_lucy_best_count_at_default_noise": plain,
        "wiener": {
            "psnr_by_grid_and_balance": balances,
            "chosen": {"grid": int(best.split("/")[0]), "balance": float(best.split("/")[1])},
            "chosen_psnr": balances[best],
        },
        "rules": rows,
        "per_frame": {
            c: {
                name: {
                    "input": f["input"],
                    **{
                        s: {
                            "tv": f[s]["tv"],
                            "psnr_after": {
                                str(n): round(f[s]["psnr"][n - 1], 3)
                                for n in CAPS
                                if n <= len(f[s]["psnr"])
                            },
                        }
                        for s in map(str, TV_STRENGTHS)
                    },
                }
                for name, f in per.items()
            }
            for c, per in conditions.items()
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
