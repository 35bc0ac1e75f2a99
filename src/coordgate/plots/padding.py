"""Fig. 1: how 'same' zero padding writes position into the feature maps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from coordgate.plots.common import FONT_SIZE, image_panel, new_figure, save_figure

__all__ = ["plot_padding"]


def plot_padding(cases: Sequence[Mapping[str, object]], path: str | Path) -> Path:
    """One row per group of cases (panel "a", then the U-Nets with and without skips plus
    the plain convolutions); each map on its own colour scale, value 1 = no position."""
    groups = [
        [c for c in cases if c["panel"] == "a"],
        [c for c in cases if c["panel"] in "bc" and c.get("skips")]
        + [c for c in cases if c["panel"] == "plain"],
        [c for c in cases if c["panel"] in "bc" and not c.get("skips")],
    ]
    groups = [g for g in groups if g]
    columns = max(len(g) for g in groups)
    figure = new_figure(2.1 * columns, 2.2 * len(groups))
    axes = figure.subplots(len(groups), columns, squeeze=False)
    for row, group in zip(axes, groups):
        for ax, case in zip(row, group):
            image = case["image"][0, 0]
            image_panel(ax, image, case["name"], cmap="viridis", colorbar=True)
        for ax in row[len(group) :]:
            ax.set_axis_off()
    figure.suptitle(
        "Uniform input through uniform 3x3 convolutions with 'same' zero padding",
        fontsize=FONT_SIZE + 1,
    )
    return save_figure(figure, path)
