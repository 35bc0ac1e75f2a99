"""Checkpoints: safetensors weights that carry their own JSON config, written atomically.

A checkpoint ``NAME.safetensors`` holds the model's tensors and, in the safetensors
metadata, its :class:`CheckpointConfig` as JSON: the model that rebuilds it, the sensor
frame and intensity normalisation inference needs, and what the run recorded (PSF
field, data set, epoch, metrics, seed, versions). Keeping the config inside the weights
file makes one file one atomic unit, so a crash can never pair weights with another
run's config; ``NAME.json`` beside it is a human-readable copy. Configs written by
earlier versions are read through :func:`migrate_checkpoint_config`.

Resuming needs more than weights: :func:`save_training_state` stores the optimiser,
scheduler, random-number generators and history in ``NAME.state.pt``.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from coordgate.atomic import atomic_write

__all__ = [
    "BEST_CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "LAST_CHECKPOINT",
    "CheckpointConfig",
    "CheckpointError",
    "load_checkpoint",
    "load_training_state",
    "load_weights",
    "migrate_checkpoint_config",
    "read_checkpoint_config",
    "resolve_checkpoint",
    "restore_rng_state",
    "rng_state",
    "save_checkpoint",
    "save_training_state",
]

CHECKPOINT_FORMAT = "coordgate-checkpoint/1"
#: The checkpoints a training run leaves in its directory: the weights of the epoch with
#: the lowest validation loss, and those of the latest epoch.
BEST_CHECKPOINT = "best.safetensors"
LAST_CHECKPOINT = "last.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that is truncated, corrupt, not ours, or for another model."""


@dataclass(frozen=True)
class CheckpointConfig:
    """What a checkpoint records beside its weights, the one schema of its JSON config.

    ``model``: ``{"name", "options"}``, the registry entry that rebuilds the network (a
    None name: build it yourself and :func:`load_weights`). What inference needs, always
    written (None where unknown): ``full_size``, the sensor frame (H, W) the model was
    trained on, and ``normalisation``, the
    :class:`~coordgate.data.normalization.PercentileNormalizer` (as a dict) that mapped
    its frames. Where the data came from: ``psf_field``, ``dataset``, ``preset`` (a
    study's). What the run recorded: ``kind`` ("best" or "last"), ``epoch``, ``metrics``
    (that epoch's history row), ``training`` (the TrainConfig), ``seed``, ``environment``.

    >>> config = CheckpointConfig({"name": "unet3", "options": {}}, full_size=(64, 64))
    >>> CheckpointConfig.from_dict(config.to_dict()) == config
    True
    """

    model: dict[str, Any]
    full_size: tuple[int, int] | None = None
    normalisation: dict[str, Any] | None = None
    psf_field: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    preset: str | None = None
    kind: str | None = None
    epoch: int | None = None
    metrics: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    seed: int | None = None
    environment: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.full_size is not None:
            object.__setattr__(self, "full_size", tuple(int(v) for v in self.full_size))

    def to_dict(self) -> dict[str, Any]:
        """The JSON config: every field that is set, ``full_size`` and ``normalisation``
        always (null where unknown), and the format tag."""
        values = asdict(self)
        values["full_size"] = None if self.full_size is None else list(self.full_size)
        kept = {k: v for k, v in values.items() if v is not None or k in _ALWAYS_WRITTEN}
        return {"format": CHECKPOINT_FORMAT, **kept}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "checkpoint") -> CheckpointConfig:
        """The config a checkpoint's JSON holds, written by this version or an earlier one
        (see :func:`migrate_checkpoint_config`); ``source`` names it in errors."""
        return cls(**migrate_checkpoint_config(values, source))


#: What inference needs of every checkpoint, written even when unknown.
_ALWAYS_WRITTEN = ("full_size", "normalisation")


def migrate_checkpoint_config(values: dict[str, Any], source: str = "checkpoint") -> dict[str, Any]:
    """The fields of :class:`CheckpointConfig` from a stored config of any version of
    :data:`CHECKPOINT_FORMAT`: the format tag checked and dropped, the fields earlier
    versions left out when unknown (``full_size``, ``normalisation``, and all those a
    hand-made config omits) as None. A key no version wrote is an error."""
    if values.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{source} has format {values.get('format')!r}, expected {CHECKPOINT_FORMAT!r}"
        )
    known = {f.name for f in fields(CheckpointConfig)}
    stored = {k: v for k, v in values.items() if k != "format"}
    unknown = sorted(set(stored) - known)
    if unknown:
        raise CheckpointError(
            f"{source} records {unknown}, which no version of {CHECKPOINT_FORMAT} writes"
        )
    if "model" not in stored:
        raise CheckpointError(f"{source} records no model")
    return stored


def resolve_checkpoint(path: str | Path) -> Path:
    """The weights file meant by ``path``: itself, ``X.safetensors`` for ``X.json``, or
    ``DIR/best.safetensors`` (:data:`BEST_CHECKPOINT`) for a run directory. Raises
    FileNotFoundError when absent."""
    path = Path(path)
    if path.is_dir():
        path = path / BEST_CHECKPOINT
    elif path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    return path


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: CheckpointConfig,
    *,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model``'s weights and ``config`` to ``path`` (``.safetensors``) and its ``.json``.

    ``config.model`` is what :func:`load_checkpoint` rebuilds the model from; its other
    entries must be JSON-serialisable. ``dtype`` (e.g. ``torch.float16`` for half-size
    files to distribute) stores the floating-point tensors in that type; loading casts
    them back to the model's.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {path}")
    if not isinstance(config, CheckpointConfig):
        raise ValueError(f"config must be a CheckpointConfig, got {type(config).__name__}")
    try:
        text = json.dumps(config.to_dict(), indent=2, sort_keys=True)
    except TypeError as error:
        raise ValueError(f"checkpoint config must be JSON-serialisable: {error}") from error
    tensors = {
        name: tensor.detach().to("cpu", copy=True).contiguous()
        for name, tensor in model.state_dict().items()
    }
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    atomic_write(path, safetensors_bytes(tensors, metadata={"config": text}))
    atomic_write(path.with_suffix(".json"), (text + "\n").encode())
    return path


def _read(path: Path) -> tuple[dict[str, torch.Tensor], CheckpointConfig]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a safetensors file ({error})"
        ) from error
    try:
        config = json.loads(metadata["config"])
    except (KeyError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is a safetensors file without a coordgate config") from error
    return tensors, CheckpointConfig.from_dict(config, str(path))


def read_checkpoint_config(path: str | Path) -> CheckpointConfig:
    """The config stored in a checkpoint (see :func:`resolve_checkpoint` for ``path``)."""
    return _read(resolve_checkpoint(path))[1]


def _load_state(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path, what: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    reshaped = sorted(
        f"{name} {tuple(tensors[name].shape)} vs {tuple(expected[name].shape)}"
        for name in set(expected) & set(tensors)
        if tensors[name].shape != expected[name].shape
    )
    if missing or unexpected or reshaped:
        problems = [
            f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape", reshaped),
            )
            if items
        ]
        raise CheckpointError(
            f"checkpoint {path} does not fit {what} ({'; '.join(problems)}): "
            "it belongs to another model or configuration"
        )
    model.load_state_dict(tensors)


def load_weights(model: nn.Module, path: str | Path) -> CheckpointConfig:
    """Load a checkpoint's weights into ``model`` in place; returns the checkpoint's config."""
    path = resolve_checkpoint(path)
    tensors, config = _read(path)
    _load_state(model, tensors, path, f"the given {type(model).__name__}")
    return config


def load_checkpoint(
    path: str | Path,
    *,
    expect_model: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, CheckpointConfig]:
    """Rebuild the model a checkpoint records, load its weights: ``(model.eval(), config)``.

    ``expect_model`` (a registry name) makes a checkpoint of any other model an error.
    """
    from coordgate.models import build_model

    path = resolve_checkpoint(path)
    tensors, config = _read(path)
    spec = config.model or {}
    name, options = spec.get("name"), spec.get("options") or {}
    if not name:
        raise CheckpointError(
            f"checkpoint {path} records no model name; build the model yourself and use "
            "load_weights(model, path)"
        )
    if expect_model is not None and name != expect_model:
        raise CheckpointError(
            f"checkpoint {path} belongs to model {name!r}, expected {expect_model!r}"
        )
    model = build_model(name, **options)
    _load_state(model, tensors, path, f"model {name!r} with options {options}")
    return model.to(device).eval(), config


def rng_state() -> dict:
    """The state of every random generator a training step may draw from."""
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": numpy_state["state"]["pos"],
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Put back generators saved by :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": saved["key"].numpy().astype(np.uint32), "pos": saved["pos"]},
            "has_gauss": saved["has_gauss"],
            "gauss": saved["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(path: str | Path, state: dict) -> Path:
    """Atomically save a resumable training state (tensors, numbers, lists, dicts)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write(path, buffer.getvalue())


def load_training_state(path: str | Path) -> dict:
    """Load what :func:`save_training_state` wrote, tensors on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training state {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a damaged pickle/zip
        raise CheckpointError(f"training state {path} is truncated or corrupt ({error})") from error
