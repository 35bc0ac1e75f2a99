"""Figure of the lens study: each lens's PSFs over the sensor, and what CoordGate adds on it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from coordgate.images import montage
from coordgate.plots.common import FONT_SIZE, image_panel, new_figure, save_figure

__all__ = ["lens_gain_figure"]

_COLOURS = ("tab:red", "tab:purple", "tab:green", "tab:orange")


def lens_gain_figure(
    psfs: Mapping[str, torch.Tensor], lenses: Sequence[Mapping], path: Path
) -> Path:
    """Top: for each lens, its PSFs (``psfs[name]``: (3, 3, k, k) on a grid of field points,
    shown as the square root so that faint tails show). Bottom: per lens, each comparison's
    paired PSNR difference Δ (bars) with ±2u (whiskers), from ``lenses`` (the study's
    per-lens results with their ``comparisons``)."""
    names = [lens["name"] for lens in lenses]
    figure = new_figure(2.6 * max(len(names), 2), 5.6)
    mosaic = [names, ["gain"] * len(names)]
    axes = figure.subplot_mosaic(mosaic, height_ratios=[1, 1.2])
    for name in names:
        tiles = [np.sqrt(np.clip(p.numpy(), 0, None)) for p in psfs[name].flatten(0, 1)]
        image_panel(axes[name], montage(tiles, 3, fill=0.0), f"{name}: PSFs", cmap="magma")
    labels = [f"{c['a']} − {c['b']}" for c in lenses[0]["comparisons"]]
    width = 0.8 / max(len(labels), 1)
    gain = axes["gain"]
    for k, label in enumerate(labels):
        rows = [next(c for c in lens["comparisons"] if f"{c['a']} − {c['b']}" == label)
                for lens in lenses]  # fmt: skip
        x = np.arange(len(names)) + (k - (len(labels) - 1) / 2) * width
        gain.bar(x, [r["delta"] for r in rows], width, color=_COLOURS[k % 4], label=label)
        gain.errorbar(x, [r["delta"] for r in rows], yerr=[2 * r["uncertainty"] for r in rows],
                      fmt="none", ecolor="black", capsize=2, linewidth=0.8)  # fmt: skip
    gain.axhline(0, color="black", linewidth=0.6)
    gain.set_xticks(np.arange(len(names)), names, fontsize=FONT_SIZE)
    gain.set_ylabel("test PSNR difference Δ (dB), ±2u", fontsize=FONT_SIZE)
    gain.tick_params(labelsize=FONT_SIZE - 1)
    gain.legend(fontsize=FONT_SIZE - 1, ncols=2)
    gain.grid(axis="y", alpha=0.3)
    return save_figure(figure, path)
