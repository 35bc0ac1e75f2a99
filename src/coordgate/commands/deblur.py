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

__all__ = ["register"]

NORMALISATIONS = ("checkpoint", "per-image", "none")


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


def _normaliser(config: dict, mode: str, checkpoint: str):
    """A function frame -> its PercentileNormalizer, or None for ``mode="none"``.

    The checkpoint's normaliser is used as recorded when fitted (one mapping for all
    images), else fitted to each frame with the recorded percentiles.
    """
    from coordgate.data.normalization import PercentileNormalizer

    if mode == "none":
        return lambda frame: None
    if mode == "per-image":
        return lambda frame: PercentileNormalizer().fitted_to(frame)
    recorded = config.get("normalisation")
    if not recorded:
        raise ValueError(
            f"checkpoint {checkpoint} records no normalisation; pass --normalisation "
            "per-image or none"
        )
    normaliser = PercentileNormalizer.from_dict(recorded)
    return lambda frame: normaliser if normaliser.fitted else normaliser.fitted_to(frame)


def _frame(args: argparse.Namespace, model, config: dict, size: tuple[int, int]):
    """(origin, full_size) of an image of ``size``; a coordinate-aware model trained on
    another sensor size needs to be told where the image lies."""
    full_size = args.full_size
    trained = config.get("full_size")
    aware = getattr(model, "uses_coordinates", True)
    if full_size is None and aware and trained and tuple(trained) != tuple(size):
        raise ValueError(
            f"the image is {size[0]}x{size[1]} pixels but the model was trained on a "
            f"{trained[0]}x{trained[1]} sensor frame; pass --full-size (and --origin) to say "
            "where the image lies on the sensor"
        )
    return args.origin, full_size


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from coordgate.data.io import read_frames, write_tiff
    from coordgate.inference import predict
    from coordgate.training.checkpoint import load_checkpoint
    from coordgate.training.distributed import resolve_device

    pairs = _plan_outputs(args.images, args.output)
    model, config = load_checkpoint(args.checkpoint, device=resolve_device(args.device))
    normaliser_for = _normaliser(config, args.normalisation, args.checkpoint)
    for image, target in pairs:
        frames = read_frames(image)
        origin, full_size = _frame(args, model, config, frames.shape[-2:])
        restored = []
        for frame in frames:
            normaliser = normaliser_for(frame)
            x = frame if normaliser is None else normaliser.normalize(frame)
            y = predict(
                model, x, tile=args.tile, overlap=args.overlap, origin=origin, full_size=full_size
            )
            keep = normaliser is None or args.keep_normalised
            restored.append(y if keep else normaliser.denormalize(y))
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
