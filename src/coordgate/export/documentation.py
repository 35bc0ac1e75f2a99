"""The README of an exported package, written from the checkpoint's own record.

Everything it states comes from the checkpoint config (model, training, data set, PSF
field, sensor size, validation metrics) or from running the exported model on the test
frame; nothing is typed in by hand.
"""

from __future__ import annotations

import json

from coordgate.export.deblurrer import FrameDeblurrer
from coordgate.export.sample import TestFrame, recorded_field
from coordgate.training.checkpoint import CheckpointConfig

__all__ = ["CITATION", "package_readme", "package_title"]

#: The paper the method comes from, as the package cites it.
CITATION = {
    "text": (
        "S. Howard, P. Norreys and A. Döpp, CoordGate: Efficiently Computing "
        "Spatially-Varying Convolutions in Convolutional Neural Networks, arXiv:2401.04680 "
        "(2024)"
    ),
    "doi": "10.48550/arXiv.2401.04680",
}


def package_title(config: CheckpointConfig, deblurrer: FrameDeblurrer) -> str:
    """The package's name: the model and the sensor frame it deblurs."""
    h, w = deblurrer.frame_size
    return f"CoordGate {config.model['name']} deblurring of a {h}x{w} sensor"


def _json(value: object) -> str:
    return "```json\n" + json.dumps(value, indent=2, sort_keys=True) + "\n```"


def _normalisation(deblurrer: FrameDeblurrer) -> str:
    if deblurrer.bounds is None:
        return "none: the network takes intensities as they are, as it was trained."
    normaliser = deblurrer.bounds.normaliser
    if normaliser.fitted:
        mapping = f"the fixed mapping fitted at training (vmin {normaliser.vmin:.6g}, vmax "
        return mapping + f"{normaliser.vmax:.6g}), and back after the network."
    return (
        f"the {normaliser.low:g} and {normaliser.high:g} percentiles of each input frame map "
        "to 0 and 1 (CSBDeep's convention), and the output maps back to the input's range."
    )


def _position(deblurrer: FrameDeblurrer) -> str:
    h, w = deblurrer.frame_size
    if deblurrer.uses_coordinates:
        return (
            "The network is coordinate-aware: its CoordGates weigh features by where each "
            "pixel lies on the sensor, so a tile or crop fed without its position would be "
            "deblurred with the wrong gates. The input is therefore the whole sensor frame, "
            f"of fixed shape {h}x{w}, with the gates for it frozen into the weights; a tile "
            "or crop is refused with an error. No tiling or halo is declared: run the "
            "whole frame."
        )
    return (
        "The network is shift-invariant, but its normalisation is of the whole frame (as "
        "`coordgate deblur` does it), which tiles would each redo differently. The input "
        f"is therefore the whole {h}x{w} sensor frame, of fixed shape, and no tiling is "
        "declared."
    )


def _validation(
    config: CheckpointConfig, frame: TestFrame, scores: dict[str, float] | None
) -> list[str]:
    metrics = config.metrics or {}
    lines = []
    if "val_psnr" in metrics:
        ssim = f", SSIM {metrics['val_ssim']:.4f}" if "val_ssim" in metrics else ""
        lines.append(
            f"- Validation frames at the best epoch ({config.epoch or '?'}): "
            f"PSNR {metrics['val_psnr']:.2f} dB{ssim}."
        )
    if scores is not None:
        lines.append(
            f"- The packaged test frame: PSNR {scores['input']:.2f} dB blurred, "
            f"{scores['output']:.2f} dB deblurred, against the sharp frame it was made from."
        )
    lines.append(f"- Test frame: {frame.description}.")
    return lines or ["- The checkpoint records no validation metrics."]


def package_readme(
    config: CheckpointConfig,
    deblurrer: FrameDeblurrer,
    frame: TestFrame,
    scores: dict[str, float] | None,
) -> str:
    """The package's README.md: what the model takes and gives, how it was trained, on
    what lens and sensor, and the PSNR it reached; ``scores`` (``input`` / ``output`` dB on
    the test frame) when the sharp test frame is known."""
    from coordgate.models import count_parameters

    h, w = deblurrer.frame_size
    field = recorded_field(config)
    recorded = {k: getattr(config, k) for k in ("training", "epoch", "seed", "preset")}
    training = {k: v for k, v in recorded.items() if v is not None}
    sections = [
        f"# {package_title(config, deblurrer)}",
        f"A `{config.model['name']}` network ({count_parameters(deblurrer.network):,} "
        f"parameters) trained with [coordgate](#citation) to undo the spatially-varying "
        f"blur of one instrument's lens on its {h}x{w} sensor.",
        "## Input and output\n"
        f"- `frame`: (batch 1, channel {deblurrer.shape[1]}, y {h}, x {w}) float32, the "
        "whole sensor frame in its own intensities.\n"
        f"- `deblurred`: (1, {deblurrer.out_channels}, {h}, {w}) float32, in the input's "
        "intensities.\n"
        f"- Normalisation, built into the model: {_normalisation(deblurrer)}\n"
        "- The model equals `coordgate deblur --checkpoint CHECKPOINT` on the same frame.",
        "## Position on the sensor\n" + _position(deblurrer),
        "## Sensor\n" + f"{h}x{w} pixels (the frame the model was trained on).",
        "## Lens (PSF field)\n"
        + (_json(field) if field else "The checkpoint records no PSF field."),
        "## Training data\n" + (_json(config.dataset) if config.dataset else "Not recorded."),
        "## Training\n" + _json({"model": config.model, **training}),
        "## Validation\n" + "\n".join(_validation(config, frame, scores)),
        "## Citation\n" + CITATION["text"] + f" (doi: {CITATION['doi']}).",
    ]
    return "\n\n".join(sections) + "\n"
