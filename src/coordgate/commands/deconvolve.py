"""``coordgate deconvolve IMAGE... --psf-field FIELD.npz -o OUTDIR``: sharpen images with
a PSF field alone, no training.

Richardson-Lucy (``--method rl``, the default) with total-variation regularisation (Dey
et al. 2006), its weight set from the noise estimated on each frame (``--tv auto``;
``--tv 0``: plain Richardson-Lucy), for ``--iterations``; ``--stop D`` stops it earlier by
the discrepancy principle, once the blurred estimate fits the frame down to its noise
(the mean squared residual in noise variances at most D). Or spatially-varying Wiener
(``--method wiener``, ``--balance``). The defaults were chosen on 13 simulated 256x256
frames of the default lens (8 synthetic, 5 real), at the training data's default noise
(1000 photons at intensity 1, 2 e- read noise) and without noise
(benchmarks/results/deconvolve_defaults.json): TV strength 4 (the weight is four
times the noise gain over the frame's mean), 100 iterations and no early stop give
32.72 dB at the default noise (input 28.98; every frame gains, 2.1 to 5.4 dB) and
35.99 dB without noise (input 30.00). Plain Richardson-Lucy peaks at 10 iterations with
noise (30.68 dB, and loses on two frames) and falls to 28.22 dB by 100; with
``--tv 0 --stop 0.9`` it keeps 30.93 dB. With the total variation the stop only cost
detail (0.31 dB at 0.9), so it is off by default. Wiener (a 13x13 grid of the field's
PSFs, balance 0.0316): 30.57 / 31.88 dB. A 2048x2048 frame takes 28 s on one CPU thread
(0.25 s per iteration; benchmarks/results/deconvolve.json).

Each frame is deconvolved where it lies on the sensor (``--origin`` / ``--full-size``
for a crop; a calibrated field knows its sensor's size); Richardson-Lucy's blur runs in
overlapping tiles of at most ``--tile`` px, each with its sensor origin (the result is
the whole frame's to rounding). The result goes to ``OUTDIR/<name>.tif`` (float32, one
page per input frame, the input TIFF's pixel size kept) and ``OUTDIR/deconvolve.json``
records the settings and each frame's fit. Each frame's line reports its residual,
|A x - y| / |y|, beside what its noise alone leaves: a field that explains the image
fits it to about the noise, a field too wide or wrongly shaped stays visibly above (a
narrower one can still fit). Every input is checked before the first is deconvolved
(unreadable, NaN, negative, the wrong size for the field), and each output appears only
once complete.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from coordgate.commands import (
    load_psf_field,
    plan_outputs,
    tile_option,
    word_or_number,
    write_output,
)
from coordgate.deconvolution import (
    DEFAULT_BALANCE,
    DEFAULT_ITERATIONS,
    DEFAULT_TILE,
    MAX_TV,
    METHODS,
    STOP_DISCREPANCY,
    DeconvolutionSettings,
)

__all__ = ["register"]


def _settings(args: argparse.Namespace) -> DeconvolutionSettings:
    tile = DEFAULT_TILE if args.tile == "auto" else args.tile
    return DeconvolutionSettings(
        method=args.method,
        iterations=args.iterations,
        tv=args.tv,
        stop=args.stop,
        balance=args.balance,
        background=args.background,
        tile=tile,
    )


def _check_inputs(pairs, field, origin, full_size) -> None:
    """Read every input once and check its frames, before anything is written."""
    from coordgate.deconvolution import check_frame, field_frame
    from coordgate.images import read_frames

    for image, _ in pairs:
        frames = read_frames(image)
        field_frame(field, frames.shape[-2:], origin, full_size)
        for i, frame in enumerate(frames):
            check_frame(frame, f"{image}" if len(frames) == 1 else f"{image} frame {i}")


def _run(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from tqdm import tqdm

    from coordgate.atomic import atomic_write_text
    from coordgate.deconvolution import deconvolve_frame
    from coordgate.devices import resolve_device
    from coordgate.images import read_frames
    from coordgate.provenance import environment

    settings = _settings(args)
    pairs = plan_outputs(args.images, args.output)
    field = load_psf_field(args.psf_field)
    device = resolve_device(args.device)
    _check_inputs(pairs, field, args.origin, args.full_size)
    records = []
    for image, target in pairs:
        frames = read_frames(image)
        restored = []
        for i, frame in enumerate(frames):
            name = image.name if len(frames) == 1 else f"{image.name} frame {i}"
            started = time.perf_counter()
            with tqdm(desc=name, unit="it" if settings.method == "rl" else "pass") as bar:

                def progress(done: int, total: int, bar=bar) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                result = deconvolve_frame(
                    frame,
                    field,
                    settings,
                    origin=args.origin,
                    full_size=args.full_size,
                    device=device,
                    progress=progress,
                )
            seconds = time.perf_counter() - started
            restored.append(result.image)
            record = {"input": str(image), "frame": i, "output": str(target)}
            records.append({**record, "seconds": round(seconds, 2), **result.summary()})
            print(f"{name}: {result.describe()}, {seconds:.1f} s", flush=True)
        write_output(target, restored, image)
        print(f"{image} -> {target}", flush=True)
    manifest = {
        "psf_field": args.psf_field,
        "field": field.config(),
        "settings": {
            **dataclasses.asdict(settings),
            "origin": args.origin,
            "full_size": args.full_size,
        },
        "device": str(device),
        "frames": records,
        "environment": environment(),
    }
    atomic_write_text(args.output / "deconvolve.json", json.dumps(manifest, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deconvolve",
        help="deconvolve TIFF/PNG images with a PSF field (Richardson-Lucy or Wiener, no training)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument(
        "--psf-field",
        required=True,
        help="the field: FIELD.npz (coordgate calibrate or simulate), 'default' (the default "
        "lens) or 'gaussian'",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    parser.add_argument("--method", choices=METHODS, default="rl", help="default: rl")
    parser.add_argument(
        "--iterations",
        type=int,
        default=DEFAULT_ITERATIONS,
        help=f"rl: the most iterations (default {DEFAULT_ITERATIONS})",
    )
    parser.add_argument(
        "--tv",
        type=word_or_number("--tv", float, auto=None),
        default=None,
        metavar="WEIGHT",
        help="rl: total-variation weight, 'auto' (default: from the noise estimated on each "
        f"frame) or a number up to {MAX_TV}; 0: plain Richardson-Lucy",
    )
    parser.add_argument(
        "--stop",
        type=word_or_number("--stop", float, none=None),
        default=STOP_DISCREPANCY,
        metavar="D",
        help="rl: stop when the mean squared residual in noise variances falls to D "
        "(0.9 suits --tv 0), or 'none': run every iteration "
        f"(default {STOP_DISCREPANCY or 'none'})",
    )
    parser.add_argument(
        "--balance",
        type=float,
        default=DEFAULT_BALANCE,
        help=f"wiener: noise-to-signal power ratio (default {DEFAULT_BALANCE:g})",
    )
    parser.add_argument(
        "--background",
        type=float,
        default=0.0,
        help="constant background of the images, in their units (default 0)",
    )
    parser.add_argument(
        "--tile",
        type=tile_option,
        default="auto",
        help=f"rl: the largest tile side in pixels, 'auto' ({DEFAULT_TILE}) or 'none' (whole "
        "frame)",
    )
    parser.add_argument("--origin", type=float, nargs=2, metavar=("Y", "X"))
    parser.add_argument(
        "--full-size", type=float, nargs=2, metavar=("H", "W"), help="sensor frame size"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    parser.set_defaults(func=_run)
