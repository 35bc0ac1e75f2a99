"""Classical spatially-varying deconvolution with the true PSF field, no training: the
baselines a microscopist sets a network against.

- ``sv-wiener``: :func:`~coordgate.optics.restoration.spatially_varying_wiener` on its
  default grid of the field's PSFs, its balance (noise-to-signal ratio) the best of a log grid
  on the validation split;
- ``sv-rl``: Richardson-Lucy on the study's own low-rank operator, stopped at the
  iteration count that scores best on the validation split (up to a cap), so that with
  noise it stops before it amplifies the noise.

Both are judged on the test and real frames exactly as the networks are; their settings
and the validation curve are recorded with the row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from coordgate.optics import FieldBlur, PSFField, SpatiallyVaryingBlur
from coordgate.optics.restoration import (
    richardson_lucy,
    richardson_lucy_iterates,
    spatially_varying_wiener,
)
from coordgate.timing import median_seconds
from coordgate.training.metrics import psnr

__all__ = ["CLASSICAL", "ClassicalMethod", "tune_classical"]

CLASSICAL = ("sv-wiener", "sv-rl")
#: The balances tried for Wiener: 10^-4 ... 10^0 in quarter decades.
WIENER_BALANCES = tuple(10 ** (e / 4) for e in range(-16, 1))


def _psnr(x: torch.Tensor, sharp: torch.Tensor) -> float:
    """Mean per-frame PSNR of (N, 1, H, W) frames."""
    return float(psnr(x, sharp, reduce_dims=(1, 2, 3)).mean())


@dataclass
class ClassicalMethod:
    """A tuned classical method: ``name``, its ``setting`` (balance or iterations), the
    validation PSNR of each setting tried (``curve``), and how to apply it."""

    name: str
    setting: float
    curve: dict[str, float]
    field: PSFField

    def __call__(self, blurred: torch.Tensor, operator: FieldBlur) -> torch.Tensor:
        """Restore whole sensor frames (N, 1, H, W) blurred by ``operator``."""
        with torch.no_grad():
            if self.name == "sv-wiener":
                return spatially_varying_wiener(blurred, self.field, balance=self.setting)
            return richardson_lucy(blurred, operator, iterations=int(self.setting))

    def frame_ms(self, size: int, like: FieldBlur, repeats: int = 3) -> float:
        """Median milliseconds to restore one ``size``² sensor frame with an operator made
        as ``like`` is (method, rank, padding), at the calling thread count."""
        operator = SpatiallyVaryingBlur(
            self.field, (size, size), method=like.method, rank=like.rank, padding=like.padding
        )
        frame = operator.A(torch.rand(1, 1, size, size))
        return 1000 * median_seconds(lambda: self(frame, operator), repeats, warmup=0)


def _tune_wiener(blurred, sharp, field: PSFField) -> ClassicalMethod:
    curve = {}
    with torch.no_grad():
        for balance in WIENER_BALANCES:
            restored = spatially_varying_wiener(blurred, field, balance=balance)
            curve[f"{balance:.3g}"] = _psnr(restored, sharp)
    best = max(curve, key=curve.get)
    return ClassicalMethod("sv-wiener", float(best), curve, field)


def _tune_rl(blurred, sharp, operator, field: PSFField, max_iterations: int) -> ClassicalMethod:
    curve = {}
    with torch.no_grad():
        steps = richardson_lucy_iterates(blurred, operator)
        for iteration in range(1, max_iterations + 1):
            x = next(steps)
            curve[str(iteration)] = _psnr(x, sharp)
    best = max(curve, key=curve.get)
    return ClassicalMethod("sv-rl", int(best), curve, field)


def tune_classical(
    name: str,
    val_blurred: torch.Tensor,
    val_sharp: torch.Tensor,
    operator: FieldBlur,
    field: PSFField,
    *,
    max_iterations: int = 500,
) -> ClassicalMethod:
    """``name`` (one of :data:`CLASSICAL`) with its setting chosen on the validation
    frames (N, 1, H, W) blurred by ``operator`` from ``field``."""
    if name == "sv-wiener":
        return _tune_wiener(val_blurred, val_sharp, field)
    if name == "sv-rl":
        return _tune_rl(val_blurred, val_sharp, operator, field, max_iterations)
    raise ValueError(f"unknown classical method {name!r}; known: {CLASSICAL}")
