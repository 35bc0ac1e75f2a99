"""``coordgate train --model NAME --data DIR --out runs/NAME``: train a deblurring network.

``DIR`` is a pair cache made by ``coordgate dataset build`` (blurred/sharp sensor frames
with train/val/test splits). Training runs on the train split (whole frames, or random
``--crop`` windows that keep their sensor coordinates), validates on the whole val frames
after every epoch and writes checkpoints and metrics to ``--out``; ``--resume`` continues
an interrupted run. Under ``torchrun`` the same command trains data-parallel.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os

__all__ = ["parse_options", "register"]


def parse_options(pairs: list[str]) -> dict[str, object]:
    """``["key=value", ...]`` as a dict, each value read as JSON when it parses
    (numbers, booleans, lists), else kept as a string."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def model_options(args: argparse.Namespace, cache) -> dict[str, object]:
    """The model's options: ``--option``s, ``--base-channels`` and, for models built from
    PSFs (MultiWienerNet), the PSF field the pairs were blurred with."""
    from coordgate.models import list_models

    options = parse_options(args.option)
    if args.base_channels is not None:
        options["base_channels"] = args.base_channels
    specs = {spec.name: spec for spec in list_models()}
    if args.model not in specs:
        raise ValueError(f"unknown model {args.model!r}; known models: {', '.join(sorted(specs))}")
    takes_field = "psf_field" in inspect.signature(specs[args.model].builder).parameters
    if takes_field and "psf_field" not in options and "psfs" not in options:
        options["psf_field"] = cache.manifest["parameters"]["field"]
    return options


def _check_size(model, size: tuple[int, int], what: str) -> None:
    multiple = int(getattr(model, "required_multiple", 1))
    if size[0] % multiple or size[1] % multiple:
        raise ValueError(
            f"{what} of {size[0]}x{size[1]} pixels: the model needs sides divisible by "
            f"{multiple}; choose a --crop (training) or a pair cache of such a size"
        )


def normalisation_record(cache) -> dict[str, object]:
    """How images were normalised for training, for ``coordgate deblur``: the percentile
    normaliser of the cache's source, unfitted (per image), as sources are normalised
    frame by frame."""
    from coordgate.data.normalization import PercentileNormalizer

    recorded = dict(cache.manifest.get("source", {}).get("normalization") or {})
    recorded.pop("scope", None)
    return PercentileNormalizer.from_dict(recorded).to_dict()


def _run(args: argparse.Namespace) -> int:
    import torch

    from coordgate.data.pairs import PairCache, PairDataset
    from coordgate.models import build_model, count_parameters
    from coordgate.training import TrainConfig, fit

    cache = PairCache(args.data)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_patience=args.lr_patience,
        early_stopping_patience=args.early_stopping,
        time_budget_s=args.time_budget,
        seed=args.seed,
        device=args.device,
        num_workers=args.workers,
        progress=not args.no_progress,
    )
    options = model_options(args, cache)
    torch.manual_seed(args.seed)
    model = build_model(args.model, **options)
    train = PairDataset(cache, "train", crop=args.crop, augment=args.augment, seed=args.seed)
    val = PairDataset(cache, "val")
    if len(val) == 0:
        raise ValueError(f"pair cache {cache.path} has no val frames; rebuild it with a val split")
    _check_size(model, train.crop, "training crops")
    _check_size(model, val.crop, "validation frames")
    extra = {
        "normalisation": normalisation_record(cache),
        "psf_field": cache.manifest["parameters"]["field"],
        "dataset": {
            "path": str(cache.path.resolve()),
            "key": cache.manifest.get("key"),
            "parameters": cache.manifest["parameters"],
            "counts": cache.manifest.get("counts"),
            "crop": list(train.crop),
            "augment": args.augment,
        },
    }
    # under torchrun every process runs this command; only rank 0 talks
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        print(f"{args.model}: {count_parameters(model):,} parameters; {cache}")
    try:
        result = fit(
            model,
            train,
            val,
            config,
            args.out,
            resume=args.resume,
            model_spec={"name": args.model, "options": options},
            extra_config=extra,
        )
    except KeyboardInterrupt:
        if main:
            print(f"interrupted; continue with the same command and --resume ({args.out})")
        return 130
    if not main:
        return 0
    best = result.best
    note = " (reused a finished run)" if result.reused else ""
    print(
        f"{args.out}: best epoch {result.best_epoch} of {len(result.history)}{note}: "
        f"val PSNR {best['val_psnr']:.2f} dB, SSIM {best['val_ssim']:.4f}; "
        f"stopped: {result.stop_reason}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a deblurring network on a pair cache", description=__doc__
    )
    parser.add_argument("--model", required=True, help="registered name (see `coordgate models`)")
    parser.add_argument("--data", required=True, help="pair cache directory")
    parser.add_argument("--out", required=True, help="run directory, e.g. runs/cg-unet3")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--base-channels", type=int)
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another model option (value read as JSON), repeatable",
    )
    parser.add_argument("--crop", type=int, help="train on random crops of this side")
    parser.add_argument(
        "--augment", action="store_true", help="random flips/rotations the blur commutes with"
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-patience", type=int, default=10)
    parser.add_argument("--early-stopping", type=int, metavar="EPOCHS")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=_run)
