"""Build models by name: ``build_model("cg-unet3", base_channels=8)``.

Each model family module in :mod:`coordgate.models` registers its names with
:func:`register_model`, one builder function per name (``grep cg_unet3`` finds it) that
declares the keyword options it takes; the registry imports every family module on first
use, so a new family only has to exist to be listed.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import nn

__all__ = [
    "ModelSpec",
    "build_model",
    "count_parameters",
    "list_models",
    "lookup_model",
    "register_model",
]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its name, what it is, the keyword options it takes, and how to
    build it."""

    name: str
    description: str
    options: frozenset[str]
    builder: Callable[..., nn.Module]


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, description: str, options: Iterable[str]
) -> Callable[[Callable], Callable]:
    """Decorator registering ``builder(**options) -> nn.Module`` under ``name``; ``options``
    names every keyword option the builder takes."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, description, frozenset(options), builder)
        return builder

    return decorate


def _load_families() -> None:
    import coordgate.models as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "registry":
            importlib.import_module(f"{package.__name__}.{info.name}")


def list_models() -> list[ModelSpec]:
    """Every registered model, sorted by name."""
    _load_families()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def lookup_model(name: str) -> ModelSpec:
    """The registered model ``name``; ``ValueError`` listing the known names otherwise."""
    _load_families()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_model(name: str, **options) -> nn.Module:
    """Build the model registered as ``name`` with keyword ``options``; the model records
    both as ``model.model_spec`` (``{"name": name, "options": options}``)."""
    spec = lookup_model(name)
    unknown = sorted(set(options) - spec.options)
    if unknown:
        raise ValueError(
            f"model {name!r} takes the options {', '.join(sorted(spec.options)) or 'none'}; "
            f"got unknown {', '.join(unknown)}"
        )
    model = spec.builder(**options)
    model.model_spec = {"name": name, "options": dict(options)}
    return model


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
