"""``coordgate export CHECKPOINT --format onnx|torchscript|bioimageio -o OUT``: run a trained
model outside coordgate.

The export deblurs one whole sensor frame (the size the checkpoint was trained on), in the
frame's own intensities, exactly as ``coordgate deblur`` does: the normalisation is built
in, and a coordinate-aware model's gates are frozen for the sensor. Its input has that
fixed shape, so a tile or crop, which would lose its position on the sensor, is refused.

- ``onnx``: one .onnx file (onnxruntime, and any ONNX runtime).
- ``torchscript``: one .pt file for ``torch.jit.load`` (deepImageJ, QuPath).
- ``bioimageio``: a BioImage Model Zoo package (.zip, model description format 0.5) with
  both weights, test tensors from a real frame, a cover, a README, license, authors and
  citation; ``bioimageio.core``'s own test of it runs after writing (``--no-test`` skips
  it). Needs ``pip install 'coordgate[bioimageio]'``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from coordgate.deblurring import NORMALISATIONS
from coordgate.export.checkpoint import FORMATS

__all__ = ["register"]


def _frame(path: Path | None):
    """The first frame of an image file, or None."""
    if path is None:
        return None
    from coordgate.images import read_frames

    return read_frames(path)[0]


def _run(args: argparse.Namespace) -> int:
    from coordgate.export import export_checkpoint

    path = export_checkpoint(
        args.checkpoint,
        args.output,
        args.format,
        normalisation=args.normalisation,
        frame=_frame(args.frame),
        authors=args.author,
        license=args.license,
    )
    print(f"{args.checkpoint} -> {path} ({args.format})")
    if args.format != "bioimageio" or args.no_test:
        return 0
    from coordgate.export.bioimageio import zoo_test

    summary = zoo_test(path)
    print(f"bioimageio.core test of {path}: {summary.status}")
    if summary.status != "passed":
        print(summary.format())
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint as ONNX, TorchScript or a BioImage Model Zoo package",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="a .safetensors checkpoint or a run directory")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="the file to write (.onnx, .pt, .zip)"
    )
    parser.add_argument(
        "--normalisation",
        choices=NORMALISATIONS,
        default="checkpoint",
        help="intensity normalisation built into the export, as for coordgate deblur",
    )
    package = parser.add_argument_group("bioimageio package")
    package.add_argument(
        "--frame",
        type=Path,
        help="a whole sensor frame of yours (TIFF/PNG) for the test tensors "
        "(default: a bundled real image blurred by the checkpoint's lens)",
    )
    package.add_argument(
        "--author", action="append", help="an author's name (repeatable; default: your login)"
    )
    package.add_argument("--license", default="MIT", help="SPDX license identifier")
    package.add_argument(
        "--no-test", action="store_true", help="skip bioimageio.core's test of the package"
    )
    parser.set_defaults(func=_run)
