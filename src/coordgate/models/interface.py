"""What training and inference need of a deblurring network: :class:`DeblurringModel`."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from coordgate.frames import FrameLike

__all__ = ["DeblurringModel", "check_deblurring_model"]


@runtime_checkable
class DeblurringModel(Protocol):
    """A network mapping blurred images to sharp ones: (N, in_channels, H, W) ->
    (N, out_channels, H, W), for H and W multiples of ``required_multiple``.

    The U-Net family and MultiWienerNet implement it; :func:`coordgate.inference.predict`
    and ``coordgate train`` / ``deblur`` rely on nothing else.
    """

    #: Image channels in and out.
    in_channels: int
    out_channels: int
    #: Whether the output depends on where the input lies on the sensor, so that crops and
    #: tiles must be given their sensor frame (``origin`` / ``full_size``).
    uses_coordinates: bool
    #: ``{"name": ..., "options": {...}}``: how :func:`~coordgate.models.build_model` made
    #: the model (None for one built directly), as checkpoints record it.
    model_spec: dict[str, object] | None

    @property
    def required_multiple(self) -> int:
        """H and W must be multiples of this (the pooling grid)."""
        ...

    @property
    def receptive_field(self) -> int:
        """Width in pixels of the input window an output pixel can depend on."""
        ...

    @property
    def activation_channels(self) -> int:
        """Floats held per input pixel at peak during inference (for tile planning)."""
        ...

    def __call__(
        self, x: torch.Tensor, origin: FrameLike = None, full_size: FrameLike = None
    ) -> torch.Tensor: ...


def check_deblurring_model(model: object, user: str) -> DeblurringModel:
    """``model`` if it implements :class:`DeblurringModel`, else a ``ValueError`` that names
    what is missing and who (``user``) needs it."""
    if isinstance(model, DeblurringModel):
        return model
    properties = (n for n, v in vars(DeblurringModel).items() if isinstance(v, property))
    members = [*DeblurringModel.__annotations__, *properties]
    missing = [name for name in members if not hasattr(model, name)]
    raise ValueError(
        f"{user} needs a deblurring model (coordgate.models.DeblurringModel); "
        f"{type(model).__name__} lacks {', '.join(missing) or 'a forward'}"
    )
