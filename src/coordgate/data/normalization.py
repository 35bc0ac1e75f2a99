"""Percentile normalisation (CSBDeep's convention), saved so inference reuses it.

``x -> (x - v_low) / (v_high - v_low)`` where ``v_low`` / ``v_high`` are the ``low`` /
``high`` percentiles (default 1 and 99.8) of the data it was fitted on. Values outside
are not clipped unless asked: a deblurred image may rightly exceed the blurred one's
range. The fitted values travel with a model (``to_dict`` / ``from_dict``) so an
image at inference goes through the training mapping, and :meth:`denormalize` maps a
prediction back to the input's intensity range.

Fit once on the whole training set for a fixed mapping, or call :meth:`fitted_to` on
each image for CSBDeep's per-image normalisation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
import torch

__all__ = ["PercentileNormalizer"]

Array = TypeVar("Array", np.ndarray, torch.Tensor)
# Pixels sampled per image when fitting, so fitting a large data set stays cheap.
_FIT_SAMPLES = 1 << 20
_FIT_SEED = 0  # which pixels: the same sample each time an image is fitted


def _sample_index(pixels: int, rng: np.random.Generator) -> np.ndarray | None:
    """Flat indices of the pixels a fit reads of an image of ``pixels`` pixels (None: all)."""
    return rng.choice(pixels, _FIT_SAMPLES, replace=False) if pixels > _FIT_SAMPLES else None


def _flat_sample(image: np.ndarray | torch.Tensor, rng: np.random.Generator) -> np.ndarray:
    data = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    data = data.reshape(-1)
    index = _sample_index(data.size, rng)
    if index is not None:
        data = data[index]
    return data.astype(np.float64, copy=False)


@dataclass(frozen=True)
class PercentileNormalizer:
    """Map the ``low``/``high`` percentiles of the fitted data to 0/1.

    ``vmin``/``vmax`` are the fitted intensity values (``None`` until fitted).
    """

    low: float = 1.0
    high: float = 99.8
    vmin: float | None = None
    vmax: float | None = None
    clip: bool = False
    eps: float = 1e-20

    def __post_init__(self) -> None:
        if not 0 <= self.low < self.high <= 100:
            raise ValueError(
                f"percentiles must satisfy 0 <= low < high <= 100, got low={self.low}, "
                f"high={self.high}"
            )
        if (self.vmin is None) != (self.vmax is None):
            raise ValueError(f"vmin and vmax come together, got {self.vmin}, {self.vmax}")
        if self.vmin is not None and not (math.isfinite(self.vmin) and math.isfinite(self.vmax)):
            raise ValueError(f"vmin and vmax must be finite, got {self.vmin}, {self.vmax}")

    @property
    def fitted(self) -> bool:
        return self.vmin is not None

    def fit(
        self, images: np.ndarray | torch.Tensor | Iterable[np.ndarray | torch.Tensor]
    ) -> PercentileNormalizer:
        """A copy fitted to the pooled pixels of ``images`` (one array or an iterable)."""
        single = isinstance(images, (np.ndarray, torch.Tensor))
        rng = np.random.default_rng(_FIT_SEED)
        pooled = [_flat_sample(im, rng) for im in ([images] if single else images)]
        pixels = np.concatenate(pooled) if pooled else np.empty(0)
        if pixels.size == 0 or not np.isfinite(pixels).all():
            raise ValueError(
                f"PercentileNormalizer.fit needs finite pixels, got {pixels.size} pixels"
                + ("" if pixels.size == 0 else " including NaN or inf")
            )
        vmin, vmax = np.percentile(pixels, [self.low, self.high])
        return replace(self, vmin=float(vmin), vmax=float(vmax))

    def fitted_to(self, image: np.ndarray | torch.Tensor) -> PercentileNormalizer:
        """A copy fitted to one image (per-image normalisation)."""
        return self.fit(image)

    @staticmethod
    def sample_index(pixels: int) -> np.ndarray | None:
        """The flat indices of the pixels :meth:`fitted_to` reads of an image of ``pixels``
        pixels: None (all of them) up to 2**20, else the same 2**20 random ones each time."""
        return _sample_index(pixels, np.random.default_rng(_FIT_SEED))

    def _values(self) -> tuple[float, float]:
        if not self.fitted:
            raise ValueError(
                "PercentileNormalizer is not fitted: call fit(images) (training data) or "
                "fitted_to(image) (per-image) first"
            )
        # eps keeps a constant image (vmax == vmin) finite, as in CSBDeep.
        return self.vmin, max(self.vmax - self.vmin, self.eps)

    def normalize(self, x: Array) -> Array:
        """``(x - vmin) / (vmax - vmin)``, float, same shape; clipped to [0, 1] if ``clip``."""
        vmin, scale = self._values()
        y = (_as_float(x) - vmin) / scale
        return y.clip(0, 1) if self.clip else y

    def denormalize(self, y: Array) -> Array:
        """Map normalised values back to the fitted intensity range (inverse of normalize)."""
        vmin, scale = self._values()
        return _as_float(y) * scale + vmin

    def to_dict(self) -> dict[str, object]:
        """JSON-able record of the mapping, for manifests and checkpoints."""
        return {
            "low": self.low,
            "high": self.high,
            "vmin": self.vmin,
            "vmax": self.vmax,
            "clip": self.clip,
            "eps": self.eps,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> PercentileNormalizer:
        known = {"low", "high", "vmin", "vmax", "clip", "eps"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown PercentileNormalizer keys {sorted(unknown)}")
        return cls(**data)


def _as_float(x: Array) -> Array:
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.float()
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)
