"""Deblur frames with a trained checkpoint, as ``coordgate deblur`` does.

A frame goes through the checkpoint's intensity normalisation, the network (whole, or in
tiles that carry their sensor coordinates, :func:`coordgate.inference.predict`) and back
to the input's intensity range. The command line and the napari plugin both call these
functions, so the same image gives the same result in either.

>>> import numpy as np
>>> from coordgate.models import build_model
>>> model = build_model("unet3", base_channels=2)
>>> normaliser_for = normaliser_for_config({}, "per-image")
>>> frame = np.random.default_rng(0).random((40, 36), dtype=np.float32)
>>> deblur_frame(model, frame, normaliser_for(frame)).shape
(40, 36)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from coordgate.data.normalization import PercentileNormalizer
from coordgate.inference import predict
from coordgate.models import DeblurringModel

__all__ = [
    "NORMALISATIONS",
    "deblur_frame",
    "normaliser_for_config",
    "select_normaliser",
    "sensor_frame",
]

#: How frames are mapped to the network's intensity range: the checkpoint's recorded
#: normaliser, percentiles fitted to each frame, or no mapping at all.
NORMALISATIONS = ("checkpoint", "per-image", "none")

Normaliser = Callable[[np.ndarray], PercentileNormalizer | None]


def select_normaliser(
    config: dict, mode: str = "checkpoint", checkpoint: str = "the checkpoint"
) -> PercentileNormalizer | None:
    """The normaliser ``mode`` (one of :data:`NORMALISATIONS`) picks for a checkpoint's
    ``config``: fitted, one mapping for all frames; unfitted, its percentiles fitted to
    each frame; None for ``"none"``.

    ``"checkpoint"`` is the normaliser recorded in ``config`` (fitted at training, or the
    percentiles to fit per frame); ``"per-image"`` the default percentiles, per frame.
    """
    if mode not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {mode!r}")
    if mode == "none":
        return None
    if mode == "per-image":
        return PercentileNormalizer()
    recorded = config.get("normalisation")
    if not recorded:
        raise ValueError(
            f"checkpoint {checkpoint} records no normalisation; use the per-image "
            "normalisation or none"
        )
    return PercentileNormalizer.from_dict(recorded)


def normaliser_for_config(
    config: dict, mode: str = "checkpoint", checkpoint: str = "the checkpoint"
) -> Normaliser:
    """A function frame -> its PercentileNormalizer (None for ``mode="none"``): the one
    :func:`select_normaliser` picks, fitted to the frame when it is not fitted already."""
    normaliser = select_normaliser(config, mode, checkpoint)
    if normaliser is None:
        return lambda frame: None
    return lambda frame: normaliser if normaliser.fitted else normaliser.fitted_to(frame)


def sensor_frame(
    model: DeblurringModel,
    config: dict,
    size: Sequence[int],
    origin: Sequence[float] | None = None,
    full_size: Sequence[float] | None = None,
) -> tuple[Sequence[float] | None, Sequence[float] | None]:
    """(origin, full_size) of an image of ``size`` (H, W), checked against the checkpoint.

    A coordinate-aware model trained on another sensor size must be told where the image
    lies: without ``full_size`` that is an error rather than a silent guess.
    """
    trained = config.get("full_size")
    if full_size is None and model.uses_coordinates and trained and tuple(trained) != tuple(size):
        raise ValueError(
            f"the image is {size[0]}x{size[1]} pixels but the model was trained on a "
            f"{trained[0]}x{trained[1]} sensor frame; give the sensor's full size (and the "
            "image's origin on it) to say where the image lies on the sensor"
        )
    return origin, full_size


def deblur_frame(
    model: DeblurringModel,
    frame: np.ndarray,
    normaliser: PercentileNormalizer | None,
    *,
    tile: int | str | None = "auto",
    overlap: int | None = None,
    origin: Sequence[float] | None = None,
    full_size: Sequence[float] | None = None,
    keep_normalised: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """One (H, W) frame deblurred by ``model``: (H, W) float32.

    The frame is mapped by ``normaliser`` (None: as it is), predicted (``tile``,
    ``overlap``, ``origin``, ``full_size`` and ``progress`` as in
    :func:`coordgate.inference.predict`) and mapped back unless ``keep_normalised``.
    """
    x = frame if normaliser is None else normaliser.normalize(frame)
    y = predict(
        model,
        x,
        tile=tile,
        overlap=overlap,
        origin=origin,
        full_size=full_size,
        progress=progress,
    )
    keep = normaliser is None or keep_normalised
    return np.asarray(y if keep else normaliser.denormalize(y), dtype=np.float32)
