"""Sub-commands of the ``coordgate`` CLI: one module each, each with ``register(subparsers)``.

The helpers here are what several commands share: planning the output files of a list of
images and writing them, and reading option values (a word or a number, ``--tile``,
``--psf-field``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["load_psf_field", "plan_outputs", "tile_option", "word_or_number", "write_output"]


def plan_outputs(images: list[Path], out_dir: Path) -> list[tuple[Path, Path]]:
    """(input, ``out_dir/<name>.tif``) pairs; a missing or unsupported input, or two inputs
    with one output name, fail here, before any is processed."""
    from coordgate.images import check_image_path

    targets: dict[Path, Path] = {}
    for image in map(check_image_path, images):
        target = out_dir / f"{image.stem}.tif"
        if target in targets:
            raise ValueError(f"{targets[target]} and {image} would both be written to {target}")
        if target.resolve() == image.resolve():
            raise ValueError(f"{target} would overwrite its input; choose another -o directory")
        targets[target] = image
    return [(image, target) for target, image in targets.items()]


def write_output(target: Path, frames: Sequence[Any], image: Path) -> Path:
    """Write the processed ``frames`` (H, W) of ``image`` to its planned ``target``: a
    float32 TIFF, one page per frame, with the pixel size the input TIFF records."""
    import numpy as np

    from coordgate.images import read_pixel_size, write_tiff

    stack = np.stack(frames)
    return write_tiff(
        target, stack[0] if len(stack) == 1 else stack, pixel_size=read_pixel_size(image)
    )


def word_or_number(option: str, number: type, **words: Any):
    """A parser of ``option``'s values for argparse's ``type=``: one of the ``words`` (the
    value it stands for), else a ``number`` (int or float)."""

    def parse(value: str) -> Any:
        if value in words:
            return words[value]
        try:
            return number(value)
        except ValueError:
            noun = "an integer" if number is int else "a number"
            expected = ", ".join(repr(w) for w in words) + f" or {noun}"
            raise argparse.ArgumentTypeError(
                f"{option} must be {expected}, got {value!r}"
            ) from None

    return parse


#: A ``--tile`` value: ``auto``, ``none`` (None: the whole image) or a side in pixels.
tile_option = word_or_number("--tile", int, auto="auto", none=None)


def load_psf_field(spec: str, option: str = "--psf-field") -> Any:
    """The PSF field ``option`` names: ``default`` (the default lens), ``gaussian`` or a
    ``.npz`` file (:meth:`coordgate.optics.PSFField.from_spec`)."""
    from coordgate.optics import PSFField

    return PSFField.from_spec(spec, option)
