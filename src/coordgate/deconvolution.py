"""Deconvolve frames with a PSF field, no training, as ``coordgate deconvolve`` does.

Both methods restore a frame blurred by the field's low-rank operator ``A``
(:class:`~coordgate.optics.TiledBlur`, mirrored borders) where the frame lies on the
sensor:

- ``rl``: Richardson-Lucy with total-variation regularisation
  (:func:`~coordgate.optics.restoration.richardson_lucy_steps`). Its weight follows the
  noise estimated from the frame itself (:func:`~coordgate.optics.estimate_noise`):
  ``tv = TV_STRENGTH * gain / mean(y)``, at most ``MAX_TV``, so a noise-free frame is
  left almost unregularised and a noisy one is smoothed. It runs ``iterations``, or
  stops earlier by the discrepancy principle (``stop``): when the blurred estimate
  explains the frame down to the noise, the mean squared residual in units of the noise
  variance having fallen to ``stop``. With the total variation, iterating on did not
  amplify the noise on the defaults' frames, and stopping early only lost detail, so by
  default it does not stop early (``STOP_DISCREPANCY``); without it (``tv=0``) the
  stop at 0.9 is what keeps plain Richardson-Lucy from amplifying the noise.
- ``wiener``: :func:`~coordgate.optics.spatially_varying_wiener`, the Wiener filters of its
  default grid of the field's PSFs (``optics.restoration.WIENER_GRID``) blended over the sensor,
  with a noise-to-signal ``balance``.

Every result reports its data fit, ``|A x + b - y| / |y|``, beside what the noise alone
leaves, ``sqrt(sum var) / |y|``: a field that explains the frame fits it down to about
the noise, a wrong one stays above.

A frame larger than ``tile`` is computed in overlapping windows, each at its own sensor
origin: Richardson-Lucy tiles its blur operator (exactly, see ``TiledBlur``), so the
result is the whole frame's to rounding. Wiener's filters reach across the whole frame,
so it takes the whole frame, one PSF at a time (the memory of a few frames).

The defaults come from ``benchmarks/bench_deconvolve_defaults.py`` (simulated frames at
the :class:`~coordgate.data.pairs.NoiseModel` default noise and without noise,
``benchmarks/results/deconvolve_defaults.json``).

>>> from coordgate.optics import PSFField
>>> frame = np.random.default_rng(0).random((48, 40), dtype=np.float32)
>>> result = deconvolve_frame(frame, PSFField.gaussian(psf_size=9), DeconvolutionSettings())
>>> result.image.shape, result.image.dtype
((48, 40), dtype('float32'))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

from coordgate.frames import Frame, FrameLike, resolve_frame
from coordgate.optics import NoiseLevel, PSFField, TiledBlur, estimate_noise
from coordgate.optics.restoration import (
    richardson_lucy_steps,
    spatially_varying_wiener,
)

__all__ = [
    "DEFAULT_BALANCE",
    "DEFAULT_ITERATIONS",
    "DEFAULT_TILE",
    "MAX_TV",
    "METHODS",
    "STOP_DISCREPANCY",
    "TV_STRENGTH",
    "Deconvolution",
    "DeconvolutionSettings",
    "check_frame",
    "deconvolve_frame",
    "field_frame",
    "tv_weight",
]

Method = Literal["rl", "wiener"]
METHODS: tuple[Method, ...] = get_args(Method)
#: The most Richardson-Lucy iterations.
DEFAULT_ITERATIONS = 100
#: tv = TV_STRENGTH * gain / mean(y): the total-variation weight per unit of noise.
TV_STRENGTH = 4.0
#: The largest total-variation weight: above it the update's denominator can approach 0.
MAX_TV = 0.1
#: The discrepancy (mean squared residual in noise variances) at which Richardson-Lucy
#: stops by default; None: it runs every iteration (see the module docstring).
STOP_DISCREPANCY = None
#: Wiener's noise-to-signal power ratio (on its default PSF grid, ``WIENER_GRID``).
DEFAULT_BALANCE = 0.031623
#: The largest window side in pixels of Richardson-Lucy's blur: a larger frame is
#: computed in tiles (at 2048², twice as fast as the whole frame at once on a CPU thread).
DEFAULT_TILE = 768
#: Negative flux, as a share of the positive flux, above which a frame is no intensity image.
_NEGATIVE_SHARE = 0.01

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class DeconvolutionSettings:
    """What to deconvolve with: ``method`` (one of :data:`METHODS`); for ``rl`` the most
    ``iterations``, the total-variation weight ``tv`` (None: from the frame's noise, see the
    module docstring; 0: none) and the discrepancy ``stop`` (None: run every iteration);
    for ``wiener`` the ``balance``; a constant ``background`` of the frame (its blurred
    light is ``A x + background``); ``tile`` the largest window side in pixels of
    Richardson-Lucy's blur (None: the whole frame at once)."""

    method: Method = "rl"
    iterations: int = DEFAULT_ITERATIONS
    tv: float | None = None
    stop: float | None = STOP_DISCREPANCY
    balance: float = DEFAULT_BALANCE
    background: float = 0.0
    tile: int | None = DEFAULT_TILE

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int):
            raise ValueError(f"iterations must be an integer, got {self.iterations!r}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {self.iterations}")
        for name, value in (("tv", self.tv), ("stop", self.stop)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number or None, got {value!r}")
        if self.tv is not None and self.tv > MAX_TV:
            raise ValueError(
                f"tv must be at most {MAX_TV} (larger weights make the update unstable), "
                f"got {self.tv}"
            )
        if not (math.isfinite(self.balance) and self.balance > 0):
            raise ValueError(f"balance must be a positive number, got {self.balance!r}")
        if not (math.isfinite(self.background) and self.background >= 0):
            raise ValueError(f"background must be a non-negative number, got {self.background!r}")
        if self.tile is not None and (isinstance(self.tile, bool) or self.tile < 1):
            raise ValueError(f"tile must be a positive number of pixels or None, got {self.tile!r}")


@dataclass(frozen=True)
class Deconvolution:
    """A deconvolved frame (``image``, (H, W) float32) and how it was made: ``method``,
    ``iterations`` run, why it stopped (``stopped_by``: ``"discrepancy"``,
    ``"iterations"`` or ``"wiener"``), the ``tv`` weight, the ``noise`` estimated from
    the frame, the data fit ``residual`` = |A x + b - y| / |y| and ``noise_residual``,
    what the noise alone leaves."""

    image: np.ndarray
    method: str
    iterations: int
    stopped_by: str
    tv: float
    noise: NoiseLevel
    residual: float
    noise_residual: float

    def summary(self) -> dict:
        """Everything but the image, JSON-able, with :meth:`describe`'s line."""
        return {
            "description": self.describe(),
            "method": self.method,
            "iterations": self.iterations,
            "stopped_by": self.stopped_by,
            "tv": self.tv,
            "noise": {"gain": self.noise.gain, "floor": self.noise.floor},
            "residual": self.residual,
            "noise_residual": self.noise_residual,
        }

    def describe(self) -> str:
        """One line for a person: the method and the fit against the noise."""
        how = "Wiener"
        if self.method == "rl":
            how = f"Richardson-Lucy, {self.iterations} iterations (stopped by {self.stopped_by})"
            how += f", tv {self.tv:.3g}"
        return (
            f"{how}; residual {100 * self.residual:.2f}% of the image "
            f"(noise alone {100 * self.noise_residual:.2f}%)"
        )


def check_frame(frame: np.ndarray, name: str = "the image") -> None:
    """Raise ``ValueError`` naming ``name`` unless ``frame`` (H, W) is a finite intensity
    image: no NaN or infinity, some light, and negative values (read noise about a zero
    offset) at most 1% of its positive flux."""
    bad = int(np.size(frame) - np.isfinite(frame).sum())
    if bad:
        raise ValueError(f"{name} has {bad} NaN or infinite pixel(s); expected finite intensities")
    positive = float(np.clip(frame, 0, None).sum(dtype=np.float64))
    negative = float(-np.clip(frame, None, 0).sum(dtype=np.float64))
    if positive == 0:
        raise ValueError(f"{name} holds no light (no positive pixel); expected an image")
    if negative > _NEGATIVE_SHARE * positive:
        raise ValueError(
            f"{name} has negative intensities ({negative:.3g} against {positive:.3g} positive "
            f"flux, minimum {float(np.min(frame)):.3g}); deconvolution expects photon counts "
            ">= 0: give the raw frame, or add back the offset that was subtracted"
        )


def field_frame(
    field: PSFField,
    size: Sequence[int],
    origin: FrameLike = None,
    full_size: FrameLike = None,
) -> Frame:
    """Where a frame of ``size`` (H, W) lies on the field's sensor, checked.

    A field that records its ``sensor_size`` applies to that sensor only: a frame of
    another size must say where it lies on it (``origin``), and a ``full_size`` must be
    the field's. Without a recorded size the frame is the whole sensor unless told.
    """
    sensor = field.sensor_size
    if sensor is None:
        if origin is not None and full_size is None:
            raise ValueError(
                f"the image lies at sensor position {tuple(origin)} but the field records no "
                "sensor size; give the sensor's full size"
            )
        return resolve_frame(tuple(size), origin, full_size)
    if full_size is None and origin is None and tuple(size) != sensor:
        raise ValueError(
            f"the PSF field was measured on a {sensor[0]}x{sensor[1]} sensor but the image "
            f"is {size[0]}x{size[1]}; expected a whole {sensor[0]}x{sensor[1]} frame, or "
            "a crop of it with its origin on the sensor"
        )
    frame = resolve_frame(tuple(size), origin, sensor if full_size is None else full_size)
    if frame.full_size != tuple(float(s) for s in sensor):
        given = frame.full_size
        raise ValueError(
            f"the PSF field was measured on a {sensor[0]}x{sensor[1]} sensor, not on the "
            f"{given[0]:g}x{given[1]:g} sensor given; expected full size {sensor}"
        )
    return frame


def tv_weight(
    noise: NoiseLevel, y: torch.Tensor, background: float = 0.0, strength: float = TV_STRENGTH
) -> float:
    """The total-variation weight for a frame y with ``noise``: ``strength * gain /
    mean``, at most ``MAX_TV``. The noise gain over the frame's mean light above the
    ``background`` is the inverse of its photons per mean pixel, whatever the intensity
    unit."""
    light = float((y - background).clamp_min(0).mean())
    return min(strength * noise.gain / max(light, 1e-30), MAX_TV)


def _richardson_lucy(
    y: torch.Tensor,
    operator: TiledBlur,
    settings: DeconvolutionSettings,
    noise: NoiseLevel,
    tv: float,
    progress: Progress | None,
) -> tuple[torch.Tensor, int, str]:
    """(estimate, iterations run, why it stopped)."""
    steps = richardson_lucy_steps(y, operator, background=settings.background, tv=tv)
    x = y.clamp_min(0)
    for done in range(settings.iterations):
        step = next(steps)
        if settings.stop is not None and noise.discrepancy(step.predicted, y) <= settings.stop:
            return x, done, "discrepancy"
        x = step.estimate
        if progress is not None:
            progress(done + 1, settings.iterations)
    return x, settings.iterations, "iterations"


def _wiener(
    y: torch.Tensor, field: PSFField, where: Frame, settings: DeconvolutionSettings
) -> torch.Tensor:
    """Wiener's restoration of y (1, 1, H, W) above the background, where it lies."""
    return spatially_varying_wiener(
        y - settings.background,
        field,
        balance=settings.balance,
        origin=where.origin,
        full_size=where.full_size,
    )


def deconvolve_frame(
    frame: np.ndarray,
    field: PSFField,
    settings: DeconvolutionSettings,
    *,
    origin: FrameLike = None,
    full_size: FrameLike = None,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> Deconvolution:
    """Deconvolve one frame (H, W) blurred by ``field`` (see the module docstring).

    ``origin``, ``full_size``: where the frame lies on the sensor (:func:`field_frame`);
    ``device``: where to compute (float32); ``progress(done, total)``: called after each
    iteration (``rl``; once for ``wiener``); an exception raised by it stops the run.
    """
    check_frame(frame)
    where = field_frame(field, np.shape(frame), origin, full_size)
    y = torch.as_tensor(np.asarray(frame, dtype=np.float32), device=device)[None, None]
    operator = TiledBlur(
        field,
        tuple(y.shape[-2:]),
        tile=settings.tile,
        padding="reflect",
        origin=where,
        device=device,
        dtype=torch.float32,
    )
    with torch.no_grad():
        noise = estimate_noise(y)
        if settings.method == "wiener":
            x, tv, iterations, stopped_by = _wiener(y, field, where, settings), 0.0, 0, "wiener"
            if progress is not None:
                progress(1, 1)
        else:
            tv = tv_weight(noise, y, settings.background) if settings.tv is None else settings.tv
            x, iterations, stopped_by = _richardson_lucy(y, operator, settings, noise, tv, progress)
        predicted = operator.A(x) + settings.background
        norm = float(y.norm())
        residual = float((predicted - y).norm()) / norm
        noise_residual = math.sqrt(float(noise.variance(predicted).sum())) / norm
    return Deconvolution(
        image=x[0, 0].cpu().numpy().astype(np.float32),
        method=settings.method,
        iterations=iterations,
        stopped_by=stopped_by,
        tv=tv,
        noise=noise,
        residual=residual,
        noise_residual=noise_residual,
    )
