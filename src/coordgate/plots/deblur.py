"""Figures of the deblurring study: paper Figs. 4(b), 5, 6, 7 and the error-vs-position map."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.patches import Rectangle

from coordgate.plots.common import FONT_SIZE, image_panel, new_figure, save_figure, to_numpy

__all__ = [
    "CLASSICAL_STYLE",
    "FAMILY_STYLE",
    "depth_alpha",
    "error_map_figure",
    "family",
    "metric_vs_params_figure",
    "reconstruction_figure",
    "validation_curves_figure",
]

FAMILY_STYLE = {
    "unet": ("U-Net", "tab:blue", "o"),
    "cg-unet": ("CG U-Net", "tab:red", "s"),
    "cg-unet-narrow": ("CG U-Net, narrow gates", "tab:pink", "X"),
    "coordconv-unet": ("CoordConv-UNet", "tab:green", "^"),
    "multiwiener-unet": ("MultiWienerNet", "tab:purple", "D"),
    "lcn-unet": ("LCN-UNet", "tab:brown", "v"),
    "pac-unet": ("PAC-UNet", "tab:orange", "P"),
    "care-unet": ("CARE (CAREamics' U-Net)", "tab:gray", "*"),
}
#: Classical deconvolution with the true field (no parameters): horizontal lines.
CLASSICAL_STYLE = {
    "sv-wiener": ("SV Wiener, true field", "tab:olive", ":"),
    "sv-rl": ("SV Richardson-Lucy, true field", "black", "--"),
}


def family(name: str) -> str:
    """The model family of a registry name: ``cg-unet3`` -> ``cg-unet``,
    ``cg-unet3-narrow`` -> ``cg-unet-narrow``."""
    return re.sub(r"\d+", "", name)


def depth_alpha(name: str) -> float:
    """Line opacity by U-Net depth d (``unet6`` 0.8, ``unet3`` 0.35): one family's depths
    share a colour and differ in strength."""
    depth = re.search(r"\d+", name)
    return 0.8 if depth is None else min(1.0, 0.35 + 0.15 * (int(depth.group()) - 3))


def metric_vs_params_figure(
    rows: Sequence[Mapping], metric: str, label: str, path: Path, images: int
) -> Path:
    """PSNR or SSIM against log10(parameters), one colour per family (Fig. 4b for PSNR,
    Fig. 7 for SSIM). Bars: standard error of the mean over the ``images`` test images."""
    figure = new_figure(4.8, 3.4)
    axes = figure.subplots()
    for fam, (title, colour, marker) in FAMILY_STYLE.items():
        group = sorted((r for r in rows if family(r["name"]) == fam), key=lambda r: r["params"])
        if not group:
            continue
        x = np.log10([r["params"] for r in group])
        y = [r[metric] for r in group]
        axes.errorbar(
            x,
            y,
            yerr=[r[f"{metric}_std"] / images**0.5 for r in group],
            color=colour,
            marker=marker,
            capsize=2,
            linestyle="-" if len(group) > 1 else "none",
            label=title,
        )
        for xi, yi, r in zip(x, y, group):
            axes.annotate(
                r["name"],
                (xi, yi),
                fontsize=FONT_SIZE - 2,
                xytext=(3, 3),
                textcoords="offset points",
            )
    for name, (title, colour, style) in CLASSICAL_STYLE.items():
        row = next((r for r in rows if r["name"] == name), None)
        if row is not None:
            axes.axhline(row[metric], color=colour, linestyle=style, linewidth=1, label=title)
    axes.set_xlabel("log10(number of parameters)", fontsize=FONT_SIZE)
    axes.set_ylabel(label, fontsize=FONT_SIZE)
    axes.tick_params(labelsize=FONT_SIZE - 1)
    axes.legend(fontsize=FONT_SIZE - 1)
    axes.grid(alpha=0.3)
    return save_figure(figure, path)


def validation_curves_figure(rows: Sequence[Mapping], path: Path) -> Path:
    """Validation PSNR per epoch for every model (Fig. 6)."""
    figure = new_figure(4.8, 3.4)
    axes = figure.subplots()
    for r in rows:
        if r["name"] in CLASSICAL_STYLE:
            continue  # no training: no validation curve over epochs
        _, colour, marker = FAMILY_STYLE[family(r["name"])]
        axes.plot(
            range(1, len(r["val_psnr"]) + 1),
            r["val_psnr"],
            color=colour,
            alpha=depth_alpha(r["name"]),
            label=r["name"],
            marker=marker,
            markersize=2,
        )
    axes.set_xlabel("epoch", fontsize=FONT_SIZE)
    axes.set_ylabel("validation PSNR (dB)", fontsize=FONT_SIZE)
    axes.tick_params(labelsize=FONT_SIZE - 1)
    axes.legend(fontsize=FONT_SIZE - 2, ncol=2)
    axes.grid(alpha=0.3)
    return save_figure(figure, path)


def _outline_corner(axes, corner: int) -> None:
    """Outline the top-left ``corner`` square that the zoom row shows."""
    axes.add_patch(Rectangle((-0.5, -0.5), corner, corner, fill=False, color="w", lw=0.8))


def reconstruction_figure(
    sharp: torch.Tensor,
    blurred: torch.Tensor,
    outputs: Mapping[str, torch.Tensor],
    path: Path,
    psnrs: Mapping[str, float] | None = None,
) -> Path:
    """Sharp / blurred / each model's output for one image (H, W), with a second row
    zoomed into the top-left corner where the lens blurs most (Fig. 5)."""
    panels = {"sharp": sharp, "blurred": blurred, **outputs}
    corner = max(8, sharp.shape[-1] // 3)
    figure = new_figure(1.5 * len(panels), 3.2)
    grid = figure.subplots(2, len(panels), squeeze=False)
    for column, (title, image) in enumerate(panels.items()):
        data = to_numpy(image).clip(0, 1)
        label = title if psnrs is None or title not in psnrs else f"{title}\n{psnrs[title]:.2f} dB"
        image_panel(grid[0, column], data, label, cmap="magma", vmin=0, vmax=1)
        _outline_corner(grid[0, column], corner)
        image_panel(grid[1, column], data[:corner, :corner], "corner", cmap="magma", vmin=0, vmax=1)
    return save_figure(figure, path)


def error_map_figure(
    maps: Mapping[str, torch.Tensor],
    profiles: Mapping[str, Sequence[float]],
    radius: Sequence[float],
    path: Path,
) -> Path:
    """Mean squared error per pixel over the test set for each named model, and the error
    against normalised distance from the frame centre."""
    figure = new_figure(3.0 * (len(maps) + 1), 3.0)
    grid = figure.subplots(1, len(maps) + 1, squeeze=False)[0]
    top = max(float(m.max()) for m in maps.values())
    for axes, (name, error) in zip(grid, maps.items()):
        image_panel(
            axes,
            error,
            f"{name}: mean squared error",
            cmap="inferno",
            vmin=0,
            vmax=top,
            colorbar=True,
        )
    axes = grid[-1]
    for name in maps:
        _, colour, marker = FAMILY_STYLE[family(name)]
        axes.plot(
            radius,
            profiles[name],
            color=colour,
            alpha=depth_alpha(name),
            marker=marker,
            markersize=3,
            label=name,
        )
    axes.set_xlabel("distance from centre (normalised)", fontsize=FONT_SIZE)
    axes.set_ylabel("mean squared error", fontsize=FONT_SIZE)
    axes.tick_params(labelsize=FONT_SIZE - 1)
    axes.legend(fontsize=FONT_SIZE - 1)
    axes.grid(alpha=0.3)
    return save_figure(figure, path)
