"""The graph an export holds: a checkpoint's deblurring of one whole sensor frame.

:class:`FrameDeblurrer` is what ``coordgate deblur`` does to a frame that covers the sensor
(:func:`coordgate.deblurring.deblur_frame`), written as tensor operations on an input of
one fixed shape, so that tracing records all of it:

1. the checkpoint's intensity normalisation (:class:`PercentileBounds`): fitted
   constants, or the percentiles of the frame itself, computed as
   :meth:`~coordgate.data.normalization.PercentileNormalizer.fitted_to` computes them;
2. the network in eval mode, its gates frozen for the sensor frame
   (:func:`~coordgate.layers.frozen.freeze_gates`);
3. the way back to the frame's intensities.

Why one fixed shape, the whole sensor: a coordinate-aware network needs each pixel's
position on the sensor, and the tools that run exported models (deepImageJ, QuPath,
ilastik, BioEngine) tile images without passing any position along. With the input fixed
to the whole frame there is no position to lose: a crop has the wrong shape and is
refused (by onnxruntime, by the TorchScript module's own check) instead of being
deblurred with the gates of the sensor's top-left corner. The percentiles of a
per-frame normalisation are of the whole frame for the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from coordgate.data.normalization import PercentileNormalizer
from coordgate.layers.frozen import freeze_gates
from coordgate.models import DeblurringModel, check_deblurring_model
from coordgate.training.checkpoint import CheckpointConfig

__all__ = ["FrameDeblurrer", "PercentileBounds"]


class PercentileBounds(nn.Module):
    """A :class:`~coordgate.data.normalization.PercentileNormalizer` as tensor operations,
    for frames of ``pixels`` pixels.

    x: (1, *frame) -> (vmin, scale), two 0-d tensors with ``normalize(x) = (x - vmin) /
    scale``: the fitted values, or, for an unfitted normaliser, its ``low`` / ``high``
    percentiles of x (linear interpolation between order statistics, as ``np.percentile``;
    over the same pixel sample as ``fitted_to`` for frames of more than 2**20 pixels).

    >>> import torch
    >>> x = torch.arange(101.0).reshape(1, 1, 1, 101)
    >>> bounds = PercentileBounds(PercentileNormalizer(low=1, high=99), pixels=101)
    >>> [float(v) for v in bounds(x)]
    [1.0, 98.0]
    """

    def __init__(self, normaliser: PercentileNormalizer, pixels: int) -> None:
        super().__init__()
        self.normaliser, self.pixels = normaliser, pixels
        self.fixed = normaliser.fitted
        if self.fixed:
            return
        index = PercentileNormalizer.sample_index(pixels)
        self.register_buffer("index", None if index is None else torch.from_numpy(index))
        count = pixels if index is None else len(index)
        self.positions = [_order_statistic(q, count) for q in (normaliser.low, normaliser.high)]

    def extra_repr(self) -> str:
        n = self.normaliser
        if self.fixed:
            return f"vmin={n.vmin:.6g}, vmax={n.vmax:.6g}"
        return f"percentiles=({n.low:g}, {n.high:g}) of each frame, pixels={self.pixels}"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (1, *frame) -> (vmin, scale), 0-d tensors of x's dtype."""
        eps = self.normaliser.eps
        if self.fixed:
            vmin, vmax = self.normaliser.vmin, self.normaliser.vmax
            return x.new_tensor(vmin), x.new_tensor(max(vmax - vmin, eps))
        # In float64, as the normaliser fits: the same bounds to the last bit, which a
        # network's gain would otherwise amplify.
        flat = x.reshape(-1).double()
        if self.index is not None:
            flat = flat[self.index]
        ordered = torch.sort(flat).values
        vmin, vmax = (_interpolate(ordered, *position) for position in self.positions)
        return vmin.to(x.dtype), (vmax - vmin).clamp_min(eps).to(x.dtype)


def _order_statistic(percentile: float, count: int) -> tuple[int, int, float]:
    """(i, j, t): where ``np.percentile`` interpolates linearly between the sorted values
    ``v[i]`` and ``v[j]`` for ``percentile`` of ``count`` values, at fraction ``t``."""
    position = percentile / 100 * (count - 1)
    i = math.floor(position)
    return i, min(i + 1, count - 1), position - i


def _interpolate(ordered: torch.Tensor, i: int, j: int, t: float) -> torch.Tensor:
    """``v[i] + t * (v[j] - v[i])``, from the nearer end as numpy's ``_lerp`` computes it."""
    low, high = ordered[i], ordered[j]
    return high - (high - low) * (1 - t) if t >= 0.5 else low + (high - low) * t


class FrameDeblurrer(nn.Module):
    """A trained model's deblurring of one whole sensor frame, as one fixed-shape graph.

    x: (1, in_channels, H, W) -> (1, out_channels, H, W), both in the frame's intensities,
    for the ``shape`` given (the sensor the model was trained on); equal to
    :func:`~coordgate.deblurring.deblur_frame` with ``normaliser`` on such a frame (None:
    intensities as they are).

    >>> import torch
    >>> from coordgate.models import build_model
    >>> model = build_model("cg-unet3", base_channels=2)
    >>> deblurrer = FrameDeblurrer(model, (1, 1, 32, 24), PercentileNormalizer())
    >>> deblurrer(torch.rand(1, 1, 32, 24)).shape
    torch.Size([1, 1, 32, 24])
    """

    def __init__(
        self,
        model: DeblurringModel,
        shape: Sequence[int],
        normaliser: PercentileNormalizer | None,
    ) -> None:
        super().__init__()
        model = check_deblurring_model(model, "FrameDeblurrer")
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 4 or self.shape[0] != 1 or self.shape[1] != model.in_channels:
            raise ValueError(
                f"shape must be (1, {model.in_channels}, H, W): one frame of the model's "
                f"{model.in_channels} channel(s), got {tuple(shape)}"
            )
        multiple = model.required_multiple
        if self.shape[2] % multiple or self.shape[3] % multiple:
            raise ValueError(
                f"the frame {self.shape[2]}x{self.shape[3]} is not a multiple of the model's "
                f"{multiple}-pixel pooling grid"
            )
        self.out_channels = model.out_channels
        self.uses_coordinates = model.uses_coordinates
        self.network = freeze_gates(model, self.shape)
        self.bounds = (
            None if normaliser is None else PercentileBounds(normaliser, math.prod(self.shape))
        )

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, normalisation: str = "checkpoint"
    ) -> tuple[FrameDeblurrer, CheckpointConfig]:
        """The deblurrer of a checkpoint's sensor frame and the checkpoint's config,
        loaded by :meth:`coordgate.deblurring.Deblurrer.from_checkpoint` (``normalisation``
        as for ``coordgate deblur``)."""
        from coordgate.deblurring import Deblurrer

        deblurrer = Deblurrer.from_checkpoint(path, device="cpu", normalisation=normalisation)
        sensor = deblurrer.config.full_size
        if not sensor:
            raise ValueError(
                f"checkpoint {path} records no sensor size (full_size): a model is exported "
                "for the sensor frame it was trained on"
            )
        model = deblurrer.model
        shape = (1, model.in_channels, *sensor)
        return cls(model, shape, deblurrer.normaliser), deblurrer.config

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the sensor frame the deblurrer takes."""
        return self.shape[2], self.shape[3]

    def metadata(self) -> dict[str, object]:
        """What a consumer of the exported graph must know, JSON-able: the model, the
        input (the whole sensor frame) and the normalisation built in."""
        normaliser = None if self.bounds is None else self.bounds.normaliser
        return {
            "model": self.network.model_spec,
            "input_shape": list(self.shape),
            "input": "the whole sensor frame, (1, C, H, W) float32 in its own intensities",
            "uses_coordinates": self.uses_coordinates,
            "normalisation": None if normaliser is None else normaliser.to_dict(),
            "normalisation_scope": (
                "none"
                if normaliser is None
                else "fixed"
                if normaliser.fitted
                else "percentiles of each input frame"
            ),
            "output": "the deblurred frame, (1, C_out, H, W), in the input's intensities",
        }

    def example_input(self) -> torch.Tensor:
        """A zero frame of the input shape, for tracing."""
        parameter = next(self.network.parameters())
        return torch.zeros(self.shape, dtype=parameter.dtype, device=parameter.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (1, in_channels, H, W) -> (1, out_channels, H, W), in x's intensities."""
        if self.bounds is None:
            return self.network(x)
        vmin, scale = self.bounds(x)
        normalised = (x - vmin) / scale
        if self.bounds.normaliser.clip:
            normalised = normalised.clamp(0, 1)
        return self.network(normalised) * scale + vmin
