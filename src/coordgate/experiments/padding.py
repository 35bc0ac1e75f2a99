"""Position encoding by 'same' zero padding (paper §II, Fig. 1): plain convolutions and U-Nets.

(a) A 12x12 uniform input convolved 5 times with a uniform 3x3 kernel, 'same' zero
padding: the boundary defect seeps in one pixel per convolution. (b, c) The same effect
through fixed-weight U-Nets with 2 and 4 down/up steps: three uniform 3x3 convolutions
before each dimension-changing operation, 2x2 average pooling down, nearest-neighbour 2x
up, skip connections merged by averaging (what a uniform convolution over the
concatenated channels computes), and for 2 steps 12 extra convolutions in the middle so
both nets apply 24 convolutions. Our addition: the same nets without skips, and 24 plain
convolutions, on the same 64x64 input. Which pixels carry position is decided exactly (do
they depend on the zero padding at all?), not by a threshold on the values.
"""

# The study runs in three steps: run_study computes the cases, judge states the claims
# (each with its rule) from the results alone, render_report writes report.md from them;
# rejudge repeats the last two from a finished OUT/results.json.

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from coordgate import report
from coordgate.atomic import atomic_write_text
from coordgate.report import (
    Claim,
    Column,
    claims_markdown,
    environment_markdown,
    markdown_table,
    write_csv,
    write_json,
)

__all__ = [
    "add_arguments",
    "MODES",
    "convolutions_to_centre",
    "judge",
    "position_reach",
    "rejudge",
    "render_report",
    "run",
    "run_study",
    "uniform_convolutions",
    "uniform_unet",
]

SMALL_SIZE, STEPS = 12, 5  # Fig. 1(a)
UNET_SIZE, UNET_DEPTHS, CONVS_PER_STEP = 64, (2, 4), 3  # Fig. 1(b, c)
CSV_KEYS = (
    "name panel size convolutions depth skips position_fraction reach_px centre_px block_px"
).split()
# Values closer than this count as equal when measuring how coarse the position code is
# (float64 rounding of the 1/9 kernel stays far below it).
TOLERANCE = 1e-13


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    result = run_study(args.out)
    for case in result["cases"]:
        print(
            f"{case['name']:>28}: {case['convolutions']:2d} convs, position reaches "
            f"{100 * case['position_fraction']:5.1f}% of pixels"
        )
    print(f"-> {args.out / 'report.md'}")
    return 0


def _check_image(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 1:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"expected an image tensor of shape (N, 1, H, W), got {shape}")


def _uniform_conv(image: torch.Tensor, times: int) -> torch.Tensor:
    kernel = torch.full((1, 1, 3, 3), 1 / 9, dtype=image.dtype, device=image.device)
    for _ in range(times):
        image = F.conv2d(image, kernel, padding=1)
    return image


def _padding_conv(touched: torch.Tensor, times: int) -> torch.Tensor:
    for _ in range(times):
        touched = F.max_pool2d(F.pad(touched, (1, 1, 1, 1), value=1.0), 3, stride=1)
    return touched


@dataclass(frozen=True)
class _Algebra:
    """What a convolution, a down-sampling and a skip merge do to the tracked quantity."""

    conv: Callable[[torch.Tensor, int], torch.Tensor]
    down: Callable[[torch.Tensor], torch.Tensor]
    merge: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# "values": the feature map itself. "padding": exactly which pixels depend on the zero
# padding at all (a 0/1 map, padding counting as 1), free of any numerical threshold: the
# defect shrinks about 3x per pixel inwards and soon drops below float64 resolution.
_ALGEBRAS = {
    "values": _Algebra(_uniform_conv, lambda x: F.avg_pool2d(x, 2), lambda a, b: (a + b) / 2),
    "padding": _Algebra(_padding_conv, lambda x: F.max_pool2d(x, 2), torch.maximum),
}
MODES = tuple(_ALGEBRAS)


def _algebra(mode: str) -> _Algebra:
    if mode not in _ALGEBRAS:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return _ALGEBRAS[mode]


def uniform_convolutions(
    image: torch.Tensor, times: int, *, mode: str = "values"
) -> list[torch.Tensor]:
    """``image`` (N, 1, H, W) after 1, 2, ..., ``times`` uniform 3x3 'same' convolutions.

    ``mode="padding"`` tracks a 0/1 map of the pixels that depend on the zero padding
    instead (start it from zeros).
    """
    _check_image(image)
    conv = _algebra(mode).conv
    stages = []
    for _ in range(times):
        image = conv(image, 1)
        stages.append(image)
    return stages


def uniform_unet(
    image: torch.Tensor,
    depth: int,
    *,
    convs: int = CONVS_PER_STEP,
    extra_middle: int = 0,
    skips: bool = True,
    mode: str = "values",
) -> torch.Tensor:
    """A fixed-weight U-Net of ``depth`` down/up steps: (N, 1, H, W) -> (N, 1, H, W).

    ``convs`` uniform 3x3 convolutions precede every down- and up-sampling (so
    ``2 * depth * convs + extra_middle`` in all); H and W must be divisible by 2**depth.
    ``mode`` as for :func:`uniform_convolutions`.
    """
    _check_image(image)
    ops = _algebra(mode)
    scale = 2**depth
    if depth < 1 or image.shape[-1] % scale or image.shape[-2] % scale:
        raise ValueError(
            f"a U-Net of depth {depth} needs depth >= 1 and H, W divisible by {scale}, "
            f"got depth {depth} and shape {tuple(image.shape)}"
        )
    saved = []
    x = image
    for _ in range(depth):
        x = ops.conv(x, convs)
        saved.append(x)
        x = ops.down(x)
    x = ops.conv(x, convs + extra_middle)
    for level in reversed(range(depth)):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        if skips:
            x = ops.merge(x, saved[level])
        if level > 0:
            x = ops.conv(x, convs)
    return x


def _run_lengths(values: torch.Tensor) -> list[int]:
    """Lengths of the runs of equal consecutive values in a 1-D tensor."""
    change = (values[1:] - values[:-1]).abs() > TOLERANCE
    edges = [0] + (torch.nonzero(change).flatten() + 1).tolist() + [len(values)]
    return [b - a for a, b in zip(edges, edges[1:])]


def position_reach(image: torch.Tensor, touched: torch.Tensor) -> dict[str, float]:
    """How far and how finely position information got into ``image`` (1, 1, H, W), given
    ``touched``, the 0/1 map of its pixels that depend on the zero padding.

    ``position_fraction``: share of touched pixels; ``reach_px``: distance from the border
    of the deepest one (1 = edge pixel); ``centre_px``: the distance of the centre;
    ``block_px``: median length of the runs of equal values along the central half of the
    middle row (1 = neighbours differ; a coarse code gives long runs).
    """
    _check_image(image)
    if touched.shape != image.shape:
        raise ValueError(
            f"touched must match the image's shape {tuple(image.shape)}, got {tuple(touched.shape)}"
        )
    values = image[0, 0].double()
    marked = touched[0, 0] > 0
    height, width = values.shape
    rows = torch.arange(height).view(-1, 1)
    cols = torch.arange(width).view(1, -1)
    depth = torch.minimum(
        torch.minimum(rows, height - 1 - rows), torch.minimum(cols, width - 1 - cols)
    )
    central = values[height // 2, width // 4 : width - width // 4]
    runs = sorted(_run_lengths(central))
    return {
        "position_fraction": marked.double().mean().item(),
        "reach_px": int(depth[marked].max().item()) + 1 if marked.any() else 0,
        "centre_px": int(depth.max().item()) + 1,
        "block_px": float(runs[len(runs) // 2]),
    }


def _fraction_touched(touched: torch.Tensor) -> float:
    return (touched > 0).double().mean().item()


def convolutions_to_centre(size: int, depth: int = 0, limit: int = 64) -> int | None:
    """Fewest uniform 3x3 convolutions after which every pixel of a ``size`` x ``size``
    input depends on the zero padding: plain convolutions (``depth=0``) or a U-Net of
    ``depth`` steps with the same number of convolutions before every resampling (so a
    multiple of ``2 * depth``). ``None`` if ``limit`` convolutions do not suffice."""
    start = torch.zeros(1, 1, size, size, dtype=torch.float64)
    if depth == 0:
        stages = uniform_convolutions(start, limit, mode="padding")
        return next((k for k, t in enumerate(stages, 1) if _fraction_touched(t) == 1), None)
    for convs in range(1, limit // (2 * depth) + 1):
        if _fraction_touched(uniform_unet(start, depth, convs=convs, mode="padding")) == 1:
            return 2 * depth * convs
    return None


def _case(
    name: str, panel: str, network: Callable[..., torch.Tensor], size: int, **facts: object
) -> dict[str, object]:
    """Run ``network(start, mode=...)`` on a uniform image and on an untouched map."""
    image = network(torch.ones(1, 1, size, size, dtype=torch.float64), mode="values")
    touched = network(torch.zeros(1, 1, size, size, dtype=torch.float64), mode="padding")
    return {
        "name": name,
        "panel": panel,
        "size": size,
        **facts,
        "image": image,
        **position_reach(image, touched),
    }


def _cases() -> list[dict[str, object]]:
    total = 2 * max(UNET_DEPTHS) * CONVS_PER_STEP
    cases = [
        _case(
            f"(a) {k} conv{'s' if k > 1 else ''}",
            "a",
            lambda start, mode, k=k: uniform_convolutions(start, k, mode=mode)[-1],
            SMALL_SIZE,
            convolutions=k,
        )
        for k in range(1, STEPS + 1)
    ]
    for skips in (True, False):
        for panel, depth in zip("bc", UNET_DEPTHS):
            extra = total - 2 * depth * CONVS_PER_STEP
            cases.append(
                _case(
                    f"({panel}) {'U-Net' if skips else 'no skips'}, {depth} steps",
                    panel,
                    lambda start, mode, d=depth, e=extra, s=skips: uniform_unet(
                        start, d, extra_middle=e, skips=s, mode=mode
                    ),
                    UNET_SIZE,
                    depth=depth,
                    skips=skips,
                    convolutions=total,
                )
            )
    cases.append(
        _case(
            f"(ours) {total} plain convs",
            "plain",
            lambda start, mode: uniform_convolutions(start, total, mode=mode)[-1],
            UNET_SIZE,
            convolutions=total,
        )
    )
    return cases


def _centre_counts() -> dict[str, int | None]:
    """Fewest convolutions that carry position to every pixel of the U-Net input size:
    plain convolutions and each U-Net depth (see :func:`convolutions_to_centre`)."""
    return {"plain": convolutions_to_centre(UNET_SIZE)} | {
        f"U-Net({depth})": convolutions_to_centre(UNET_SIZE, depth) for depth in UNET_DEPTHS
    }


SEEPS_RULE = (
    "supported if after every number of convolutions of panel (a) the deepest pixel that "
    "depends on the zero padding lies as many pixels from the border as convolutions were "
    "applied (reach_px = convolutions, the edge pixel counting 1) and after the last one some "
    "pixels still do not depend on it (position_fraction < 1); not supported otherwise"
)
UNET_RULE = (
    "fewer steps: every U-Net with skips (panels b, c) makes every pixel depend on the zero "
    "padding (position_fraction = 1) while the plain convolutions, as many, do not, and each "
    "U-Net depth needs fewer convolutions than plain ones to reach every pixel; coarse: every "
    "such U-Net's centre code comes in runs longer than 1 px (block_px > 1); supported if "
    "both hold, partly supported if only fewer steps holds, not supported otherwise"
)


def _seeps_claim(cases: list[dict[str, object]]) -> Claim:
    steps = [c for c in cases if c["panel"] == "a"]
    last = steps[-1]
    seeps = all(c["reach_px"] == c["convolutions"] for c in steps) and last["position_fraction"] < 1
    untouched = round((1 - last["position_fraction"]) * last["size"] ** 2)
    return Claim(
        "The padding defect seeps inwards one pixel per convolution",
        "Convolving a uniform 12x12 input 5 times with a uniform 3x3 kernel ('same' padding), "
        "the position encoding propagates inward; the central region keeps a uniform value.",
        "reach after 1..5 convolutions: "
        + ", ".join(str(c["reach_px"]) for c in steps)
        + f" px; after {last['convolutions']}, {untouched} central pixels still hold the "
        f"uniform value. At one pixel per 3x3 convolution, reaching the centre of a 500x500 "
        f"image takes {500 // 2} convolutions.",
        "supported" if seeps else "not supported",
        SEEPS_RULE,
    )


def _unet_claim(cases: list[dict[str, object]], centre: dict[str, int | None]) -> Claim:
    unets = [c for c in cases if c["panel"] in "bc" and c.get("skips")]
    plain = next(c for c in cases if c["panel"] == "plain")
    unet_counts = [count for name, count in centre.items() if name != "plain"]
    fewer = (
        all(c["position_fraction"] == 1 for c in unets)
        and plain["position_fraction"] < 1
        and all(n is not None and n < centre["plain"] for n in unet_counts)
    )
    # A code at a downsampled resolution repeats each value over a block of pixels.
    coarse = all(c["block_px"] > 1 for c in unets)
    return Claim(
        "U-Nets carry position to the centre in fewer steps, at a downsampled resolution",
        "Convolving at the downsampled levels of a U-Net encodes position in fewer steps, but "
        "at a downsampled resolution (Fig. 1 b, c).",
        "; ".join(
            f"{c['name']}: {100 * c['position_fraction']:.1f}% of pixels reached, centre code in "
            f"runs of {c['block_px']:g} px"
            for c in unets + [plain]
        )
        + f" (all with {plain['convolutions']} convolutions on {plain['size']}x{plain['size']}). "
        "Fewest convolutions that carry position to every pixel: "
        + ", ".join(f"{name} {count}" for name, count in centre.items())
        + ".",
        "supported" if fewer and coarse else ("partly supported" if fewer else "not supported"),
        UNET_RULE,
    )


def judge(result: dict[str, object]) -> list[Claim]:
    """The claims of Fig. 1, judged from a study's results (its cases and the convolutions
    each network needs to carry position to every pixel)."""
    return [
        _seeps_claim(result["cases"]),
        _unet_claim(result["cases"], result["convolutions_to_centre"]),
    ]


def render_report(result: dict[str, object]) -> str:
    """report.md from the results alone: setup, figure, the stored claims, numbers."""
    table = (
        Column("name", "case"),
        Column("size", "input", "d"),
        Column("convolutions", "3x3 convs", "d"),
        Column("position_fraction", "pixels reached", ".1%"),
        Column("reach_px", "reach (px from edge)", "d"),
        Column("centre_px", "centre at (px)", "d"),
        Column("block_px", "centre code runs (px)", "g"),
    )
    return "\n".join(
        [
            "# Fig. 1 reproduced: position encoding by 'same' zero padding",
            "",
            environment_markdown(result["environment"]),
            "",
            "## Setup",
            "",
            *("> " + line.strip() for line in __doc__.strip().splitlines()[2:]),
            "",
            "![Fig. 1](fig1_padding.png)",
            "",
            "## Claims",
            "",
            claims_markdown([Claim(**claim) for claim in result["claims"]]),
            "",
            "## Numbers",
            "",
            markdown_table(result["cases"], table),
            "",
        ]
    )


def run_study(out: str | Path) -> dict[str, object]:
    """Compute every case, draw Fig. 1, judge the claims and write results.json/csv and
    report.md in ``out``; returns results.json's data."""
    from coordgate.plots.padding import plot_padding
    from coordgate.provenance import environment

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cases = _cases()
    plot_padding(cases, out / "fig1_padding.png")
    rows = [{k: v for k, v in case.items() if k != "image"} for case in cases]
    centre = _centre_counts()
    measured = {
        "study": "padding",
        "environment": environment(),
        "wall_s": time.perf_counter() - started,
        "cases": rows,
        "convolutions_to_centre": centre,
        "figures": ["fig1_padding.png"],
    }
    result = {**measured, "claims": [claim.to_dict() for claim in judge(measured)]}
    write_json(result, out / "results.json")
    write_csv(rows, out / "results.csv", CSV_KEYS)
    atomic_write_text(out / "report.md", render_report(result))
    return result


def rejudge(out: str | Path) -> dict[str, object]:
    """Judge the claims and write report.md again from ``out/results.json`` alone;
    returns the new results."""
    return report.rejudge(out, judge, render_report)
