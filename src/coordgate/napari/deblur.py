"""The Deblur widget's logic: reference checkpoints, devices, and deblurring a layer's data.

:func:`deblur_stack` runs every frame of a layer through :mod:`coordgate.deblurring`,
the functions ``coordgate deblur`` runs, so a layer and the same image on the command
line give the same result. The reference checkpoints are the ones committed with the
project (``results/<study>/checkpoints/<model>.safetensors``), found beside the
installed package (a source checkout or editable install) and in the working directory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from coordgate.napari.layers import Pair, as_frames, stack_progress

if TYPE_CHECKING:
    from coordgate.frames import FrameLike

__all__ = [
    "Cancelled",
    "DeblurSettings",
    "checkpoint_summary",
    "suggested_normalisation",
    "deblur_stack",
    "devices",
    "reference_checkpoints",
]

Progress = Callable[[int, int], None]


class Cancelled(Exception):
    """Raised by a progress callback to stop a deblurring run (the user cancelled)."""


def _results_dirs() -> list[Path]:
    import coordgate

    checkout = Path(coordgate.__file__).resolve().parents[2]  # <root>/src/coordgate
    dirs = [checkout / "results", Path.cwd() / "results"]
    return list(dict.fromkeys(d.resolve() for d in dirs if d.is_dir()))


def reference_checkpoints(results_dirs: Sequence[Path] | None = None) -> dict[str, Path]:
    """The committed reference checkpoints by name (``<study>/<model>``), sorted; empty
    when none is present (e.g. an installed wheel without the repository's results)."""
    dirs = _results_dirs() if results_dirs is None else [Path(d) for d in results_dirs]
    found: dict[str, Path] = {}
    for results in dirs:
        for path in sorted(results.glob("*/checkpoints/*.safetensors")):
            found.setdefault(f"{path.parent.parent.name}/{path.stem}", path)
    return dict(sorted(found.items()))


def devices() -> list[str]:
    """The devices a model can run on here: ``auto`` first, then ``cpu``, CUDA, MPS."""
    import torch

    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        names += ["cuda"] if count == 1 else [f"cuda:{i}" for i in range(count)]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def checkpoint_summary(path: str | Path) -> str:
    """One line about a checkpoint: its model, the sensor frame it was trained on and
    whether it records an intensity normalisation."""
    from coordgate.training.checkpoint import read_checkpoint_config

    config = read_checkpoint_config(path)
    name = config.model.get("name") or "unknown model"
    trained = config.full_size
    frame = f", trained on {trained[0]}x{trained[1]} frames" if trained else ""
    recorded = "" if config.normalisation else "; no recorded normalisation"
    return f"{name}{frame}{recorded}"


def suggested_normalisation(path: str | Path) -> str:
    """``checkpoint`` when the checkpoint records its normalisation, else ``none``: a
    model trained without one (the studies' models) took intensities as they were."""
    from coordgate.training.checkpoint import read_checkpoint_config

    return "checkpoint" if read_checkpoint_config(path).normalisation else "none"


@dataclass(frozen=True)
class DeblurSettings:
    """The Deblur widget's choices: a checkpoint file, the device (see :func:`devices`),
    ``tile`` and ``overlap`` in pixels (None: chosen from the model, see
    :func:`coordgate.inference.predict`) and the intensity normalisation
    (:data:`coordgate.deblurring.NORMALISATIONS`)."""

    checkpoint: Path
    device: str = "auto"
    tile: int | None = None
    overlap: int | None = None
    normalisation: str = "checkpoint"

    def __post_init__(self) -> None:
        from coordgate.deblurring import NORMALISATIONS

        if self.normalisation not in NORMALISATIONS:
            raise ValueError(
                f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}"
            )
        for name in ("tile", "overlap"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive number of pixels or None (auto)")


def deblur_stack(
    data: np.ndarray,
    settings: DeblurSettings,
    *,
    origin: FrameLike = None,
    full_size: FrameLike = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, Pair | None]:
    """Deblur every (H, W) frame of ``data`` (..., H, W): (result float32 of data's shape,
    the sensor size used).

    ``origin`` (row, column) places the frames on the sensor of ``full_size``; a
    translated layer with no sensor size given lies on the sensor the checkpoint was
    trained on. ``progress(done, total)`` is called with the windows run so far; raise
    :class:`Cancelled` from it to stop.
    """
    from coordgate.deblurring import Deblurrer
    from coordgate.frames import resolve_frame

    frames = as_frames(data)
    deblurrer = Deblurrer.from_checkpoint(
        settings.checkpoint, device=settings.device, normalisation=settings.normalisation
    )
    origin, full_size = deblurrer.sensor_frame(frames.shape[-2:], origin, full_size)
    restored = [
        deblurrer.deblur(
            frame,
            tile="auto" if settings.tile is None else settings.tile,
            overlap=settings.overlap,
            origin=origin,
            full_size=full_size,
            progress=stack_progress(progress, i, len(frames)),
        )
        for i, frame in enumerate(frames)
    ]
    if full_size is not None:
        full_size = resolve_frame(frames.shape[-2:], origin, full_size).full_size
    return np.stack(restored).reshape(np.shape(data)), full_size
