"""A real frame for an exported package's test tensors, made without a download.

A zoo package is tested by running its test input and comparing with its test output, so
the input should be a frame the model is meant for. Without one of the user's own frames,
:func:`sample_frame` takes a real image bundled with scikit-image (a nuclear stain,
:mod:`coordgate.data.samples`), scales it to cover the sensor, cuts out the sensor frame,
normalises it as the training frames were (percentiles, then [0, 1]) and blurs it with the
lens the checkpoint records, so the package also knows the sharp frame and can state the
PSNR gained on it. A field that cannot be rebuilt from the checkpoint (a measured one)
leaves the frame unblurred, and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from coordgate.data.normalization import PercentileNormalizer
from coordgate.data.samples import SAMPLES, sample_image
from coordgate.training.checkpoint import CheckpointConfig

__all__ = ["SAMPLE_IMAGE", "TestFrame", "recorded_field", "sample_frame"]

#: The bundled image test frames are cut from.
SAMPLE_IMAGE = "ihc_nuclei"


@dataclass(frozen=True)
class TestFrame:
    """A test frame: ``blurred`` (H, W) float32 to feed the model, the ``sharp`` frame it
    was made from (None when unknown) and a sentence on where it comes from."""

    blurred: np.ndarray
    sharp: np.ndarray | None
    description: str


def recorded_field(config: CheckpointConfig) -> dict | None:
    """The PSF field (its config) a checkpoint's training pairs were blurred with:
    ``psf_field`` (``coordgate train``) or the data set's ``field`` (the studies)."""
    dataset = config.dataset or {}
    return config.psf_field or dataset.get("parameters", dataset).get("field")


def _recorded_operator(config: CheckpointConfig) -> dict:
    dataset = config.dataset or {}
    return dict(dataset.get("parameters", dataset).get("operator") or {})


def _cover(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The centre ``size`` window of ``image`` (H, W) scaled to just cover it (area
    averaging down, bilinear up)."""
    scale = max(size[0] / image.shape[0], size[1] / image.shape[1])
    target = [max(s, round(n * scale)) for s, n in zip(size, image.shape)]
    mode = dict(mode="area") if scale < 1 else dict(mode="bilinear", align_corners=False)
    scaled = F.interpolate(image[None, None], size=target, **mode)[0, 0]
    top, left = ((t - s) // 2 for t, s in zip(target, size))
    return scaled[top : top + size[0], left : left + size[1]]


def _blur(sharp: torch.Tensor, config: CheckpointConfig) -> tuple[torch.Tensor, str] | None:
    """``sharp`` (H, W) blurred by the checkpoint's recorded lens, and its name; None when
    the field cannot be rebuilt from the config."""
    from coordgate.optics import PSFField, SpatiallyVaryingBlur

    spec = recorded_field(config)
    if not spec:
        return None
    try:
        field = PSFField.from_config(spec)
    except ValueError:
        return None
    operator = _recorded_operator(config)
    blur = SpatiallyVaryingBlur(
        field,
        tuple(sharp.shape),
        method=operator.get("method", "lowrank"),
        padding=operator.get("padding", "reflect"),
    )
    with torch.no_grad():
        blurred = blur.A(sharp[None, None]).clamp_min(0)[0, 0]
    return blurred, spec.get("kind", "recorded")


def sample_frame(config: CheckpointConfig, size: Sequence[int]) -> TestFrame:
    """A (H, W) = ``size`` test frame from the bundled image :data:`SAMPLE_IMAGE`, blurred
    by the lens ``config`` (a checkpoint's) records."""
    image = torch.from_numpy(sample_image(SAMPLE_IMAGE))
    sharp = _cover(image, size)
    normaliser = PercentileNormalizer().fitted_to(sharp)
    sharp = normaliser.normalize(sharp).clamp(0, 1)
    what = f"scikit-image's {SAMPLES[SAMPLE_IMAGE].description} ({SAMPLE_IMAGE})"
    blurred = _blur(sharp, config)
    if blurred is None:
        return TestFrame(
            sharp.numpy(),
            None,
            f"{what}, cut to the sensor frame; not blurred (the checkpoint's PSF field "
            "cannot be rebuilt from its config)",
        )
    return TestFrame(
        blurred[0].numpy(),
        sharp.numpy(),
        f"{what}, cut to the sensor frame and blurred by the checkpoint's {blurred[1]} PSF field",
    )
