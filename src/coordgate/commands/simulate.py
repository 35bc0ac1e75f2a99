"""``coordgate simulate``: blur images with a spatially-varying PSF field.

Reads one image or a folder (TIFF, PNG, JPEG, BMP), blurs each frame as a whole sensor
frame, optionally adds Poisson-Gaussian noise, and writes into ``--out``: one float32
TIFF per input (same layout as the input, integer inputs scaled to [0, 1]), a PNG of the
PSF grid, the field as ``field.npz`` and a ``simulate.json`` manifest.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from coordgate.commands import load_psf_field
from coordgate.optics import METHODS, PADDINGS

__all__ = ["register"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def _inputs(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"input not found: {path}")
    stems = [p.stem for p in files]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise ValueError(f"inputs share a name and would overwrite each other's output: {clashes}")
    return files


def _read(path: Path) -> Any:
    """The image as float32, integers scaled to [0, 1]; (H, W), (H, W, C) or (N, H, W)."""
    import numpy as np

    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            array = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as image:
                array = np.asarray(image)
    except Exception as error:  # any decoder failure means the file is unreadable
        raise ValueError(f"cannot read image {path}: {error}") from None
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / np.iinfo(array.dtype).max
    elif not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{path}: unsupported pixel type {array.dtype}")
    if array.ndim not in (2, 3):
        raise ValueError(
            f"{path}: expected a 2-D image, (H, W, C) colour or (N, H, W) stack, "
            f"got shape {array.shape}"
        )
    return array.astype(np.float32)


def _as_batch(array: Any) -> tuple[Any, bool]:
    """(N, C, H, W) frames and whether the channels were last (colour)."""
    if array.ndim == 2:
        return array[None, None], False
    if array.shape[-1] in (3, 4) and array.shape[0] > 4:
        return array[..., :3].transpose(2, 0, 1)[None], True
    return array[:, None], False


def _mosaic(psfs: Any) -> Any:
    """uint8 image of a (ny, nx, k, k) PSF grid, each PSF scaled to its own peak."""
    import numpy as np

    ny, nx, k, _ = psfs.shape
    scale, gap = max(1, 64 // k), 2
    tile = k * scale + gap
    image = np.full((ny * tile + gap, nx * tile + gap), 64, dtype=np.uint8)
    for i in range(ny):
        for j in range(nx):
            psf = psfs[i, j] / psfs[i, j].max()
            block = np.kron(psf, np.ones((scale, scale)))
            image[gap + i * tile : (i + 1) * tile, gap + j * tile : (j + 1) * tile] = np.round(
                255 * block
            ).astype(np.uint8)
    return image


def simulate(args: argparse.Namespace) -> int:
    import json

    import numpy as np
    import tifffile
    import torch
    from PIL import Image

    from coordgate.atomic import atomic_write_text
    from coordgate.optics import FieldBlur, SpatiallyVaryingBlur, poisson_gaussian
    from coordgate.provenance import environment

    files = _inputs(args.input)
    field = load_psf_field(args.psf_field)
    if args.grid < 1:
        raise ValueError(f"--grid must be >= 1, got {args.grid}")
    args.out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(args.seed)
    operators: dict[tuple[int, int], FieldBlur] = {}
    outputs = []
    for path in files:
        array = _read(path)
        batch, channels_last = _as_batch(array)
        size = batch.shape[-2:]
        if size not in operators:
            operators[size] = SpatiallyVaryingBlur(
                field, size, method=args.method, rank=args.rank, padding=args.padding
            )
        with torch.no_grad():
            blurred = operators[size].A(torch.from_numpy(np.ascontiguousarray(batch)))
            if args.photons is not None:
                blurred = poisson_gaussian(
                    blurred.clamp_min(0),
                    photons=args.photons,
                    read_noise=args.read_noise,
                    generator=generator,
                )
        result = blurred.numpy()
        if channels_last:
            result = result[0].transpose(1, 2, 0)
        else:
            result = result[:, 0] if array.ndim == 3 else result[0, 0]
        target = args.out / f"{path.stem}.tif"
        photometric = "rgb" if channels_last else "minisblack"
        tifffile.imwrite(target, result.astype(np.float32), photometric=photometric)
        outputs.append({"input": str(path), "output": str(target), "shape": list(result.shape)})
        print(f"{path} -> {target}")
    png = args.out / "psf_grid.png"
    Image.fromarray(_mosaic(field.grid(args.grid).numpy())).save(png)
    field.save(args.out / "field.npz")
    manifest = {
        "field": field.config(),
        "method": args.method,
        "rank": [op.rank for op in operators.values()],
        "padding": args.padding,
        "noise": None
        if args.photons is None
        else {"photons": args.photons, "read_noise": args.read_noise, "seed": args.seed},
        "images": outputs,
        "environment": environment(),
    }
    atomic_write_text(args.out / "simulate.json", json.dumps(manifest, indent=2))
    print(f"wrote {len(outputs)} blurred images, {png} and {args.out / 'simulate.json'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="blur images with a spatially-varying PSF field (float32 TIFF out)",
        description=__doc__,
    )
    parser.add_argument("--in", dest="input", type=Path, required=True, help="image or folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--psf-field", default="default", help="'default' (lens), 'gaussian' or FILE.npz"
    )
    parser.add_argument("--method", default="lowrank", choices=METHODS, help="blur operator")
    parser.add_argument("--rank", type=int, default=None, help="eigen-PSFs (lowrank; auto)")
    parser.add_argument(
        "--padding",
        default="reflect",
        choices=PADDINGS,
        help="scene outside the frame (default: its mirror image)",
    )
    parser.add_argument("--photons", type=float, default=None, help="photon peak (adds noise)")
    parser.add_argument("--read-noise", type=float, default=0.0, help="read noise, electrons RMS")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    parser.add_argument("--grid", type=int, default=5, help="PSFs per axis in psf_grid.png")
    parser.set_defaults(func=simulate)
