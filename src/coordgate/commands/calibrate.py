"""``coordgate calibrate``: a PSF field from bead images, or from a measured PSF grid.

From beads: ``coordgate calibrate IMAGE... --psf-size K --out FIELD.npz [--report DIR]``.
Each image (TIFF, multi-page TIFF, PNG) is one or more frames of randomly scattered
sub-resolution beads on the whole sensor of one instrument.

From a PSF grid: ``coordgate calibrate --psfs PSFS.tif --positions POS.csv --sensor-size
H W --out FIELD.npz``: one PSF per TIFF page, one ``y,x`` pixel position per CSV row.

The field is written as a ``.npz`` that ``PSFField.load``, ``coordgate dataset build
--field`` and ``coordgate simulate --psf-field`` read. Nothing is written when the input
cannot give a field (no beads, too few for the rank, all saturated, a PSF size too large
for the bead spacing, an unreadable file): the error says why.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from coordgate.optics.calibration.fit import CALIBRATION_GRID_SIZE, CENTRES, FIELD_MODELS

__all__ = ["register"]


def _check_out(path: Path) -> Path:
    if path.suffix != ".npz":
        raise ValueError(f"--out must be a .npz file, got {str(path)!r}")
    return path


def _frames(paths: list[Path], channel: int | None):
    import numpy as np

    from coordgate.images import read_frames

    stacks = [read_frames(p, channel=channel) for p in paths]
    sizes = sorted({s.shape[1:] for s in stacks})
    if len(sizes) > 1:
        raise ValueError(
            f"bead images of one instrument share a sensor size, got {sizes} in {len(paths)} files"
        )
    return np.concatenate(stacks)


def _save(field, path: Path) -> None:
    """Write the field next to ``path`` and move it in place (no half-written file)."""
    from coordgate.atomic import replace_atomically

    replace_atomically(path, field.save)


def _print_check(check: dict) -> None:
    """The self-check's worst region, its warnings, and a loud note when the field is poor."""
    import sys

    from coordgate.optics.calibration.selfcheck import FAR_RATIO, describe_worst

    print(describe_worst(check))
    for warning in check["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    if check["verdict"] == "poor":
        print(
            f"warning: the field was written but predicts held-out beads more than "
            f"{FAR_RATIO:g}x worse than their noise: do not trust it there (see the report's "
            "self_check); image more beads, or a larger --psf-size if the PSF is truncated",
            file=sys.stderr,
        )


def calibrate_command(args: argparse.Namespace) -> int:
    from coordgate.optics.calibration import calibrate, import_psf_grid, write_report

    out = _check_out(args.out)
    start = time.perf_counter()
    if args.psfs is not None:
        if args.images:
            raise ValueError("give bead IMAGE files or --psfs with --positions, not both")
        if args.positions is None or args.sensor_size is None:
            raise ValueError("--psfs needs --positions POS.csv and --sensor-size H W")
        result = import_psf_grid(
            args.psfs,
            args.positions,
            tuple(args.sensor_size),
            grid_size=args.grid_size,
            rank=args.rank,
            smoothing=args.smoothing,
            max_extrapolation=args.max_extrapolation,
        )
        inputs = {"psfs": str(args.psfs), "positions": str(args.positions)}
    else:
        if not args.images:
            raise ValueError("give bead IMAGE files, or --psfs PSFS.tif --positions POS.csv")
        if args.psf_size is None:
            raise ValueError("--psf-size K is required with bead images (odd, in pixels)")
        frames = _frames(args.images, args.channel)
        result = calibrate(
            frames,
            args.psf_size,
            rank=args.rank,
            smoothing=args.smoothing,
            snr=args.snr,
            min_separation=args.min_separation,
            saturation=args.saturation,
            grid_size=args.grid_size,
            max_extrapolation=args.max_extrapolation,
            centre=args.centre,
            pupil_scale=args.pupil_scale,
            field_model=args.model,
        )
        inputs = {"images": [str(p) for p in args.images]}
    seconds = time.perf_counter() - start
    _save(result.field, out)
    counts = result.counts()
    what = "measured PSFs" if result.source == "grid" else "beads"
    print(
        f"{counts['used']} of {counts['found']} {what} used, {result.model_kind} model, "
        f"{result.field.psfs.shape[0]}x{result.field.psfs.shape[1]} grid of "
        f"{result.field.psf_size}x{result.field.psf_size} PSFs -> {out} ({seconds:.1f} s)"
    )
    rejected = {k: v for k, v in counts["rejected"].items() if v}
    if rejected:
        print("rejected: " + ", ".join(f"{k} {v}" for k, v in rejected.items()))
    if result.check is not None:
        _print_check(result.check)
    if args.report is not None:
        extra = {"inputs": inputs, "field": str(out), "seconds": seconds}
        paths = write_report(result, args.report, extra)
        print(f"report: {', '.join(str(p) for p in paths.values())}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="a PSF field (.npz) from bead images or a measured PSF grid",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="*", type=Path, metavar="IMAGE", help="bead images")
    parser.add_argument("--out", type=Path, required=True, help="the field, FIELD.npz")
    parser.add_argument("--psf-size", type=int, default=None, help="PSF size K (odd, px)")
    parser.add_argument("--report", type=Path, default=None, help="write a report folder")
    parser.add_argument("--rank", type=int, default=None, help="eigen-PSFs (default: CV)")
    parser.add_argument(
        "--smoothing", type=float, default=None, help="thin-plate smoothing (default: CV)"
    )
    parser.add_argument("--snr", type=float, default=20.0, help="least bead SNR (default 20)")
    parser.add_argument(
        "--min-separation", type=float, default=None, help="least bead distance, px (K/2)"
    )
    parser.add_argument(
        "--saturation", type=float, default=None, help="clipping level (default: detected)"
    )
    parser.add_argument(
        "--grid-size",
        type=int,
        default=CALIBRATION_GRID_SIZE,
        help="points per axis of the sampled field (default %(default)s)",
    )
    parser.add_argument(
        "--max-extrapolation",
        type=float,
        default=1.0,
        help="how far the fit's trend is followed beyond the outermost beads (normalised)",
    )
    parser.add_argument(
        "--centre",
        choices=CENTRES,
        default="chief_ray",
        help="centre each PSF on its chief ray (a pupil fit; default) or its centroid",
    )
    parser.add_argument(
        "--pupil-scale",
        type=float,
        default=1.0,
        help="pupil sampling of the chief-ray fit: 4 NA pixel / wavelength (1 = Nyquist)",
    )
    parser.add_argument(
        "--model",
        choices=FIELD_MODELS,
        default="auto",
        help="field model: Zernike polynomials of a diffraction pupil, the data-driven "
        "low-rank field, or auto (the pupil unless it fits the beads worse; default)",
    )
    parser.add_argument("--channel", type=int, default=None, help="channel of colour images")
    parser.add_argument("--psfs", type=Path, default=None, help="measured PSF stack (TIFF)")
    parser.add_argument("--positions", type=Path, default=None, help="CSV of y,x pixels")
    parser.add_argument(
        "--sensor-size", type=int, nargs=2, default=None, metavar=("H", "W"), help="px"
    )
    parser.set_defaults(func=calibrate_command)
