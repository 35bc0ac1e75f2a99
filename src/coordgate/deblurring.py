"""Deblur frames with a trained checkpoint, as ``coordgate deblur`` does.

A :class:`Deblurrer` is a checkpoint's model on a device with the intensity
normalisation it chose; each frame goes through that normalisation, the network (whole,
or in tiles that carry their sensor coordinates, :func:`coordgate.inference.predict`) and
back to the input's intensity range. ``coordgate deblur``, ``coordgate evaluate``, the
napari plugin and ``coordgate export`` all load checkpoints through it, so the same
image gives the same result in each.

>>> import numpy as np
>>> from coordgate.models import build_model
>>> from coordgate.data.normalization import PercentileNormalizer
>>> model = build_model("unet3", base_channels=2)
>>> frame = np.random.default_rng(0).random((40, 36), dtype=np.float32)
>>> deblur_frame(model, frame, PercentileNormalizer().fitted_to(frame)).shape
(40, 36)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from coordgate.data.normalization import PercentileNormalizer
from coordgate.devices import resolve_device
from coordgate.frames import FrameLike
from coordgate.inference import Tile, predict
from coordgate.models import DeblurringModel
from coordgate.training.checkpoint import CheckpointConfig, load_checkpoint

__all__ = ["NORMALISATIONS", "Deblurrer", "deblur_frame", "select_normaliser"]

#: How frames are mapped to the network's intensity range: the checkpoint's recorded
#: normaliser, percentiles fitted to each frame, or no mapping at all.
NORMALISATIONS = ("checkpoint", "per-image", "none")


def select_normaliser(
    config: CheckpointConfig, mode: str = "checkpoint", checkpoint: str = "the checkpoint"
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
    if not config.normalisation:
        raise ValueError(
            f"checkpoint {checkpoint} records no normalisation; use the per-image "
            "normalisation or none"
        )
    return PercentileNormalizer.from_dict(config.normalisation)


@dataclass(frozen=True)
class Deblurrer:
    """A checkpoint's ``model`` (in eval mode, on its device), its ``config`` and the
    ``normaliser`` chosen for it (None: frames are taken as they are)."""

    model: DeblurringModel
    config: CheckpointConfig
    normaliser: PercentileNormalizer | None

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "auto",
        normalisation: str = "checkpoint",
    ) -> Deblurrer:
        """Load the checkpoint at ``path`` (a file or a run directory) onto ``device``
        (see :func:`~coordgate.devices.resolve_device`) with the normaliser
        ``normalisation`` picks (:func:`select_normaliser`)."""
        model, config = load_checkpoint(path, device=resolve_device(device))
        return cls(model, config, select_normaliser(config, normalisation, str(path)))

    def normaliser_for(self, frame: np.ndarray) -> PercentileNormalizer | None:
        """The normaliser of ``frame``: the chosen one, fitted to it unless it is fitted."""
        normaliser = self.normaliser
        if normaliser is None or normaliser.fitted:
            return normaliser
        return normaliser.fitted_to(frame)

    def sensor_frame(
        self,
        size: Sequence[int],
        origin: FrameLike = None,
        full_size: FrameLike = None,
    ) -> tuple[FrameLike, FrameLike]:
        """(origin, full_size) of an image of ``size`` (H, W), checked against the
        checkpoint's sensor frame.

        An image placed on the sensor (``origin``) without a ``full_size`` lies on the
        sensor the checkpoint was trained on. A coordinate-aware model trained on another
        sensor size must be told where the image lies: without ``full_size`` that is an
        error rather than a silent guess.
        """
        trained = self.config.full_size
        if origin is not None and full_size is None:
            if trained is None:
                raise ValueError(
                    f"the image lies at sensor position {tuple(origin)} but no sensor size "
                    "is known: give the sensor size"
                )
            full_size = trained
        if full_size is None and self.model.uses_coordinates and trained and trained != tuple(size):
            raise ValueError(
                f"the image is {size[0]}x{size[1]} pixels but the model was trained on a "
                f"{trained[0]}x{trained[1]} sensor frame; give the sensor's full size (and the "
                "image's origin on it) to say where the image lies on the sensor"
            )
        return origin, full_size

    def deblur(
        self,
        frame: np.ndarray,
        *,
        tile: Tile = "auto",
        overlap: int | None = None,
        origin: FrameLike = None,
        full_size: FrameLike = None,
        keep_normalised: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """One (H, W) frame deblurred: (H, W) float32, placed on the sensor by
        :meth:`sensor_frame`, the rest as for :func:`deblur_frame`."""
        origin, full_size = self.sensor_frame(frame.shape[-2:], origin, full_size)
        return deblur_frame(
            self.model,
            frame,
            self.normaliser_for(frame),
            tile=tile,
            overlap=overlap,
            origin=origin,
            full_size=full_size,
            keep_normalised=keep_normalised,
            progress=progress,
        )


def deblur_frame(
    model: DeblurringModel,
    frame: np.ndarray,
    normaliser: PercentileNormalizer | None,
    *,
    tile: Tile = "auto",
    overlap: int | None = None,
    origin: FrameLike = None,
    full_size: FrameLike = None,
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
