"""Figures of the 1D study (paper Fig. 3): effective matrices, PSNR vs inference time,
learning curves, and PSNR vs gate size for the supplement's ablation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps

from coordgate.plots.common import FONT_SIZE, image_panel, new_figure, save_figure, to_numpy

__all__ = [
    "FAMILY_COLOURS",
    "plot_gate_size",
    "plot_learning_curves",
    "plot_matrices",
    "plot_psnr_vs_time",
]

FAMILY_COLOURS = {
    "cnn": "tab:blue",
    "ccnn": "tab:orange",
    "cg": "tab:green",
    "cg-random": "tab:red",
    "pac": "tab:purple",
    "lcn": "tab:brown",
}


def plot_matrices(
    true: torch.Tensor,
    matrices: Mapping[str, torch.Tensor],
    psnr: Mapping[str, float],
    path: str | Path,
    columns: int = 6,
) -> Path:
    """The true H (L, L) beside each model's effective matrix, on one colour scale."""
    panels = [("true H (Eq. 5)", true)] + [
        (f"{label}\n{psnr[label]:.1f} dB", matrix) for label, matrix in matrices.items()
    ]
    columns = min(columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = new_figure(1.7 * columns, 1.9 * rows)
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False).ravel())
    low, high = float(to_numpy(true).min()), float(to_numpy(true).max())
    for ax, (title, matrix) in zip(axes, panels):
        image_panel(ax, matrix, title, cmap="magma", vmin=low, vmax=high)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    figure.suptitle(
        "Effective matrices dn/dm (mean Jacobian over test inputs; row = output sample)",
        fontsize=FONT_SIZE + 1,
    )
    return save_figure(figure, path)


def plot_psnr_vs_time(rows: Sequence[Mapping[str, object]], path: str | Path) -> Path:
    """Median test PSNR (bars: seed range) against inference time for a batch; spot area
    proportional to the parameter count, colour by family."""
    figure = new_figure(7.0, 4.6)
    ax = figure.subplots()
    largest = max(float(r["params"]) for r in rows)
    for family, colour in FAMILY_COLOURS.items():
        mine = [r for r in rows if r["family"] == family]
        if not mine:
            continue
        x = [r["infer_ms"] for r in mine]
        y = [r["psnr_median"] for r in mine]
        spread = [
            [r["psnr_median"] - r["psnr_min"] for r in mine],
            [r["psnr_max"] - r["psnr_median"] for r in mine],
        ]
        sizes = [20 + 600 * float(r["params"]) / largest for r in mine]
        ax.errorbar(x, y, yerr=spread, fmt="none", ecolor=colour, alpha=0.6, lw=1)
        ax.scatter(
            x,
            y,
            s=sizes,
            c=colour,
            alpha=0.55,
            edgecolors="k",
            linewidths=0.5,
            label=family.upper(),
        )
        for r in mine:
            ax.annotate(
                f"{r['name']}\n{r['params']} p",
                (r["infer_ms"], r["psnr_median"]),
                xytext=(5, 3),
                textcoords="offset points",
                fontsize=FONT_SIZE - 2,
            )
    ax.set_xscale("log")
    ax.set_xlabel("inference time per batch (ms, median of repeats)", fontsize=FONT_SIZE)
    ax.set_ylabel("test PSNR (dB, median of seeds; bars: range)", fontsize=FONT_SIZE)
    ax.tick_params(labelsize=FONT_SIZE)
    ax.grid(True, which="both", alpha=0.3)
    legend = ax.legend(fontsize=FONT_SIZE, loc="lower right")
    legend.set_title("spot area ∝ parameters", prop={"size": FONT_SIZE - 1})
    for handle in legend.legend_handles:
        handle.set_sizes([40])
    return save_figure(figure, path)


def plot_learning_curves(
    curves: Mapping[str, Sequence[float]], families: Mapping[str, str], path: str | Path
) -> Path:
    """Validation PSNR per epoch of each model's median-seed run; line style by family."""
    figure = new_figure(7.0, 4.2)
    ax = figure.subplots()
    styles = {"cnn": "-", "ccnn": "--", "cg": "-.", "cg-random": ":"}
    colours = colormaps["tab20"].colors
    for index, (label, losses) in enumerate(curves.items()):
        values = -10 * np.log10(np.maximum(np.asarray(losses, dtype=float), 1e-30))
        ax.plot(
            np.arange(1, len(values) + 1),
            values,
            styles.get(families[label], "-"),
            lw=1.2,
            color=colours[index % len(colours)],
            label=label,
        )
    ax.set_xlabel("epoch", fontsize=FONT_SIZE)
    ax.set_ylabel("validation PSNR (dB)", fontsize=FONT_SIZE)
    ax.tick_params(labelsize=FONT_SIZE)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=FONT_SIZE - 2, ncol=2, loc="lower right")
    return save_figure(figure, path)


def plot_gate_size(rows: Sequence[Mapping[str, object]], path: str | Path) -> Path:
    """Median test PSNR (bars: seed range) of CG(L,k,c,p) models against their gate's
    parameter count, one line per number of encoder layers p, points labelled with c."""
    figure = new_figure(6.4, 4.2)
    ax = figure.subplots()
    for p in sorted({int(r["encoder_layers"]) for r in rows}):
        line = sorted((r for r in rows if r["encoder_layers"] == p), key=lambda r: r["gate_params"])
        x = [r["gate_params"] for r in line]
        y = [r["psnr_median"] for r in line]
        spread = [
            [r["psnr_median"] - r["psnr_min"] for r in line],
            [r["psnr_max"] - r["psnr_median"] for r in line],
        ]
        ax.errorbar(x, y, yerr=spread, marker="o", ms=4, lw=1, capsize=2, label=f"p = {p}")
        for r in line:
            ax.annotate(
                f"c={r['channels']}",
                (r["gate_params"], r["psnr_median"]),
                xytext=(4, -10),
                textcoords="offset points",
                fontsize=FONT_SIZE - 2,
            )
    ax.set_xscale("log")
    ax.set_xlabel("gate parameters (coordinate encoder)", fontsize=FONT_SIZE)
    ax.set_ylabel("test PSNR (dB, median of seeds)", fontsize=FONT_SIZE)
    ax.tick_params(labelsize=FONT_SIZE)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=FONT_SIZE, title="encoder layers", title_fontsize=FONT_SIZE - 1)
    return save_figure(figure, path)
