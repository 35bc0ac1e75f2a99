"""``coordgate dataset build|show``: build a cached blurred/sharp pair set, or inspect one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from coordgate.commands import load_psf_field
from coordgate.optics import METHODS

__all__ = ["register"]


def describe_field(config: dict) -> str:
    """One line naming a PSF field from its stored config (the lens's defocus first)."""
    details = ", ".join(f"{k}={v}" for k, v in config.items() if k != "kind" and k != "psfs")
    kind = {"lens": "lens", "gaussian": "Gaussian", "measured": "measured"}.get(
        config.get("kind"), str(config.get("kind"))
    )
    return f"{kind} ({details})" if details else kind


def build(args: argparse.Namespace) -> int:
    from coordgate.data.pairs import NoiseModel, build_pairs

    given = {"photons": args.photons, "read_noise": args.read_noise}
    noise = (
        None if args.no_noise else NoiseModel(**{k: v for k, v in given.items() if v is not None})
    )
    cache = build_pairs(
        args.out,
        source=args.source,
        n=args.n,
        size=args.size,
        field=load_psf_field(args.field, "--field"),
        noise=noise,
        seed=args.seed,
        method=args.method,
        padding=args.padding,
        channel=args.channel,
        progress=not args.quiet,
        force=args.force,
        wait=not args.no_wait,
    )
    verb = "built" if cache.built else "reused (parameters unchanged)"
    print(f"{verb} {cache}")
    print(f"PSF field: {describe_field(cache.manifest['parameters']['field'])}")
    return 0


def show(args: argparse.Namespace) -> int:
    import numpy as np

    from coordgate.data.normalization import PercentileNormalizer
    from coordgate.data.pairs import PairCache
    from coordgate.images import montage, write_png_preview

    if args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    cache = PairCache(args.dir)
    manifest = dict(cache.manifest)
    if not args.all_frames and "frames" in manifest.get("source", {}):
        frames = manifest["source"]["frames"]
        manifest["source"] = {**manifest["source"], "frames": f"{len(frames)} frames"}
    print(json.dumps(manifest, indent=2))
    print(f"PSF field: {describe_field(cache.manifest['parameters']['field'])}")
    count = min(args.count, len(cache))
    sharp, blurred = cache.array("sharp"), cache.array("blurred")
    tiles = []
    for i in range(count):
        # Each pair on its sharp frame's intensity scale, so sharp and blurred compare.
        scale = PercentileNormalizer(clip=True).fitted_to(np.asarray(sharp[i]))
        tiles += [scale.normalize(np.asarray(sharp[i])), scale.normalize(np.asarray(blurred[i]))]
    png = args.png or cache.path / "preview.png"
    grid = montage(tiles, columns=2 * min(count, 4), fill=0.0)
    # Small sensor frames are enlarged (nearest neighbour) to be viewable.
    zoom = max(1, 512 // grid.shape[1])
    grid = grid.repeat(zoom, axis=0).repeat(zoom, axis=1)
    write_png_preview(png, grid, percentiles=None)
    print(f"wrote {png} ({count} pairs: sharp, blurred side by side)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dataset", help="build or inspect blurred/sharp pair caches")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    b = actions.add_parser("build", help="build (or reuse) a cached pair set")
    b.add_argument("--source", default="synthetic", help="'synthetic' or a folder of images")
    b.add_argument("--n", type=int, required=True, help="number of pairs")
    b.add_argument("--size", type=int, required=True, help="sensor frame size (pixels, square)")
    b.add_argument("--out", type=Path, required=True, help="cache directory")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument(
        "--field",
        default="default",
        help="'default' (the project's lens: 0.75 waves RMS defocus in the corners), "
        "'gaussian' or a PSF field .npz",
    )
    b.add_argument("--method", default="lowrank", choices=METHODS)
    b.add_argument("--padding", default="reflect", help="scene outside the frame (see optics)")
    b.add_argument("--photons", type=float, help="photons at intensity 1 (NoiseModel default)")
    b.add_argument("--read-noise", type=float, help="Gaussian read noise (NoiseModel default)")
    b.add_argument("--no-noise", action="store_true", help="noise-free blurred frames")
    b.add_argument("--channel", type=int, default=None, help="channel of multichannel images")
    b.add_argument("--force", action="store_true", help="rebuild even if parameters match")
    b.add_argument(
        "--no-wait",
        action="store_true",
        help="fail at once when another process is building into --out (default: wait for it, "
        "then reuse its cache if the parameters match)",
    )
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=build)

    s = actions.add_parser("show", help="print a cache's manifest and write a PNG of pairs")
    s.add_argument("dir", type=Path, help="cache directory")
    s.add_argument("--count", type=int, default=8, help="pairs in the PNG grid")
    s.add_argument("--png", type=Path, default=None, help="output (default DIR/preview.png)")
    s.add_argument("--all-frames", action="store_true", help="list every source frame")
    s.set_defaults(func=show)
