"""``coordgate evaluate --checkpoint CKPT --data DIR``: PSNR and SSIM of a trained model.

Runs the checkpoint's model on the whole frames of one split of a pair cache (default:
test) and prints the mean and standard deviation over images of PSNR and SSIM (data
range 1, the normalised intensities of the cache), beside those of the blurred input.
``--json`` also writes them to a file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from coordgate.atomic import atomic_write
    from coordgate.data.pairs import SPLITS, PairCache, PairDataset
    from coordgate.deblurring import Deblurrer
    from coordgate.provenance import environment
    from coordgate.training import BlurredInput, evaluate

    if args.split not in SPLITS:
        raise ValueError(f"--split must be one of {SPLITS}, got {args.split!r}")
    # the pair cache's frames are normalised already
    deblurrer = Deblurrer.from_checkpoint(args.checkpoint, device=args.device, normalisation="none")
    model, config = deblurrer.model, deblurrer.config
    cache = PairCache(args.data)
    data = PairDataset(cache, args.split)
    if len(data) == 0:
        raise ValueError(f"pair cache {cache.path} has no {args.split} frames")
    trained_on = (config.dataset or {}).get("key")
    if trained_on and trained_on != cache.manifest.get("key"):
        print(f"note: {cache.path} is not the pair cache the model was trained on")
    options = dict(batch_size=args.batch_size, device=args.device, progress=not args.no_progress)
    results = {
        "model": evaluate(model, data, **options),
        "blurred": evaluate(BlurredInput(), data, **options),
    }
    name = config.model["name"]
    print(f"{name} on {len(data)} {args.split} frames of {cache.path}:")
    for label, metrics in (("model", results["model"]), ("blurred input", results["blurred"])):
        print(
            f"  {label:<14} PSNR {metrics['psnr']:6.2f} ± {metrics['psnr_std']:.2f} dB   "
            f"SSIM {metrics['ssim']:.4f} ± {metrics['ssim_std']:.4f}"
        )
    if args.json is not None:
        record = {
            "checkpoint": str(args.checkpoint),
            "model": config.model,
            "epoch": config.epoch,
            "data": str(cache.path),
            "split": args.split,
            "metrics": results,
            "environment": environment(),
        }
        atomic_write(args.json, json.dumps(record, indent=2).encode())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="PSNR/SSIM of a checkpoint on a pair cache split", description=__doc__
    )
    parser.add_argument(
        "--checkpoint", required=True, help="a .safetensors checkpoint or a run directory"
    )
    parser.add_argument("--data", required=True, help="pair cache directory")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=_run)
