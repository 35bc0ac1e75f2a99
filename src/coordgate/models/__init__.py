"""Networks built from the layers: the 1D CNN family, U-Nets, MultiWienerNet; a registry by name."""

from coordgate.models.interface import DeblurringModel, check_deblurring_model
from coordgate.models.registry import (
    ModelSpec,
    build_model,
    count_parameters,
    list_models,
    lookup_model,
    register_model,
)

__all__ = [
    "DeblurringModel",
    "ModelSpec",
    "build_model",
    "check_deblurring_model",
    "count_parameters",
    "list_models",
    "lookup_model",
    "register_model",
]
