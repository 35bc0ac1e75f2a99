"""Helpers every study's figures share: a figure without pyplot state, image panels, saving.

Figures are built with :class:`matplotlib.figure.Figure` directly, so plotting never
touches a global backend or leaks open figures across a long run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["FONT_SIZE", "image_panel", "new_figure", "save_figure", "to_numpy"]

FONT_SIZE = 8


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure of ``width`` x ``height`` inches in the house style."""
    return Figure(figsize=(width, height), layout="constrained")


def to_numpy(array: torch.Tensor | np.ndarray) -> np.ndarray:
    """A CPU float64 NumPy copy of a tensor or array."""
    if isinstance(array, torch.Tensor):
        return array.detach().to("cpu", torch.float64).numpy()
    return np.asarray(array, dtype=np.float64)


def image_panel(
    axes: Axes,
    image: torch.Tensor | np.ndarray,
    title: str,
    *,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = False,
    ticks: bool = False,
) -> None:
    """Show a 2-D ``image`` (rows, columns) on ``axes`` with ``title``."""
    data = to_numpy(image)
    if data.ndim != 2:
        raise ValueError(f"image_panel needs a 2-D image, got shape {data.shape}")
    shown = axes.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    axes.set_title(title, fontsize=FONT_SIZE)
    if not ticks:
        axes.set_xticks([])
        axes.set_yticks([])
    else:
        axes.tick_params(labelsize=FONT_SIZE - 1)
    if colorbar:
        bar = axes.figure.colorbar(shown, ax=axes, shrink=0.8)
        bar.ax.tick_params(labelsize=FONT_SIZE - 1)


def save_figure(figure: Figure, path: str | Path, dpi: int = 150) -> Path:
    """Write ``figure`` to ``path`` (format from the suffix) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path
