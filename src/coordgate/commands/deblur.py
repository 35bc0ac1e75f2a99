"""``coordgate deblur --checkpoint CKPT IMAGE... -o OUTDIR``: deblur images with a trained model.

Each TIFF / PNG / JPEG frame goes through the checkpoint's intensity normalisation, the
network (whole image, or tiles that carry their sensor coordinates, see
:func:`coordgate.inference.predict`) and back to the input's intensity range; the result
is written as ``OUTDIR/<name>.tif`` (float32, one page per input frame, the input TIFF's
pixel size kept). Every input is checked before the first is processed, and each output
appears only once complete.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from coordgate.commands import plan_outputs, tile_option, write_output
from coordgate.deblurring import NORMALISATIONS

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from coordgate.deblurring import Deblurrer
    from coordgate.images import read_frames

    pairs = plan_outputs(args.images, args.output)
    deblurrer = Deblurrer.from_checkpoint(
        args.checkpoint, device=args.device, normalisation=args.normalisation
    )
    for image, target in pairs:
        restored = [
            deblurrer.deblur(
                frame,
                tile=args.tile,
                overlap=args.overlap,
                origin=args.origin,
                full_size=args.full_size,
                keep_normalised=args.keep_normalised,
            )
            for frame in read_frames(image)
        ]
        write_output(target, restored, image)
        print(f"{image} -> {target}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deblur", help="deblur TIFF/PNG images with a trained checkpoint", description=__doc__
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument(
        "--checkpoint", required=True, help="a .safetensors checkpoint or a run directory"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--tile",
        type=tile_option,
        default="auto",
        help="tile side in pixels, 'none' (whole image) or 'auto' (tiles when memory needs)",
    )
    parser.add_argument("--overlap", type=int, help="tile overlap (default: receptive field)")
    parser.add_argument("--origin", type=float, nargs=2, metavar=("Y", "X"))
    parser.add_argument(
        "--full-size", type=float, nargs=2, metavar=("H", "W"), help="sensor frame size"
    )
    parser.add_argument("--normalisation", choices=NORMALISATIONS, default="checkpoint")
    parser.add_argument(
        "--keep-normalised",
        action="store_true",
        help="write the network's normalised output instead of mapping it back",
    )
    parser.add_argument("--device", default="auto")
    parser.set_defaults(func=_run)
