"""Sub-commands of the ``coordgate`` CLI: one module each, each with ``register(subparsers)``.

The helpers here are what several commands share: planning the output files of a list of
images, and reading option values (a word or a number, ``--tile``, ``--psf-field``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["load_psf_field", "plan_outputs", "tile_option", "word_or_number"]


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


def load_psf_field(spec: str) -> Any:
    """The PSF field a ``--psf-field`` names: ``default`` (the default lens), ``gaussian``
    or a ``.npz`` file."""
    from coordgate.optics import PSFField

    if spec == "default":
        return PSFField.default()
    if spec == "gaussian":
        return PSFField.gaussian()
    if not spec.endswith(".npz"):
        raise ValueError(f"--psf-field must be 'default', 'gaussian' or a .npz file, got {spec!r}")
    return PSFField.load(spec)
