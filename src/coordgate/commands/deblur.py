"""``coordgate deblur --checkpoint CKPT IMAGE... -o OUTDIR``: deblur images with a trained model.

Each TIFF / PNG / JPEG frame goes through the checkpoint's intensity normalisation, the
network (whole image, or tiles that carry their sensor coordinates, see
:func:`coordgate.inference.predict`) and back to the input's intensity range; the result
is written as ``OUTDIR/<name>.tif`` (float32, one page per input frame). Every input is
checked before the first is processed, and each output appears only once complete.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from coordgate.deblurring import NORMALISATIONS

__all__ = ["register"]


def _tile(value: str) -> int | str | None:
    if value in ("auto", "none"):
        return None if value == "none" else value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--tile must be 'auto', 'none' or a tile side in pixels, got {value!r}"
        ) from None


def _plan_outputs(images: list[Path], out_dir: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs; missing inputs or two inputs with one output name fail here."""
    from coordgate.data.io import IMAGE_SUFFIXES

    targets: dict[Path, Path] = {}
    for image in images:
        if not image.is_file():
            raise FileNotFoundError(f"image file not found: {image}")
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(
                f"{image}: unsupported image format {image.suffix!r}, expected one of "
                f"{', '.join(IMAGE_SUFFIXES)}"
            )
        target = out_dir / f"{image.stem}.tif"
        if target in targets:
            raise ValueError(f"{targets[target]} and {image} would both be written to {target}")
        if target.resolve() == image.resolve():
            raise ValueError(f"{target} would overwrite its input; choose another -o directory")
        targets[target] = image
    return [(image, target) for target, image in targets.items()]


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from coordgate.data.io import read_frames, write_tiff
    from coordgate.deblurring import deblur_frame, normaliser_for_config, sensor_frame
    from coordgate.training.checkpoint import load_checkpoint
    from coordgate.training.distributed import resolve_device

    pairs = _plan_outputs(args.images, args.output)
    model, config = load_checkpoint(args.checkpoint, device=resolve_device(args.device))
    normaliser_for = normaliser_for_config(config, args.normalisation, args.checkpoint)
    for image, target in pairs:
        frames = read_frames(image)
        origin, full_size = sensor_frame(
            model, config, frames.shape[-2:], args.origin, args.full_size
        )
        restored = [
            deblur_frame(
                model,
                frame,
                normaliser_for(frame),
                tile=args.tile,
                overlap=args.overlap,
                origin=origin,
                full_size=full_size,
                keep_normalised=args.keep_normalised,
            )
            for frame in frames
        ]
        stack = np.stack(restored).astype(np.float32)
        write_tiff(target, stack[0] if len(stack) == 1 else stack)
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
        type=_tile,
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
