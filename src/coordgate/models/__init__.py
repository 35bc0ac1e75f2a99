"""Networks built from the layers: the 1D CNN family, U-Nets, MultiWienerNet; a registry by name."""

from coordgate.models.registry import (
    ModelSpec,
    build_model,
    count_parameters,
    list_models,
    register_model,
)

__all__ = ["ModelSpec", "build_model", "count_parameters", "list_models", "register_model"]
