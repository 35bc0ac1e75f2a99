"""``coordgate train --model NAME --data DIR --out runs/NAME``: train a deblurring network.

``DIR`` is a pair cache made by ``coordgate dataset build`` (blurred/sharp sensor frames
with train/val/test splits). Training runs on the train split (whole frames, or random
``--crop`` windows that keep their sensor coordinates; an epoch draws enough crops from
each frame to cover its area unless ``--crops-per-frame`` says otherwise), validates on
the whole val frames after every epoch and writes checkpoints and metrics to ``--out``;
``--resume`` continues an interrupted run. Under ``torchrun`` the same command trains
data-parallel.

The defaults are the deblurring study's: residual learning, base width 8, and the
schedule that converges on a CPU budget (``coordgate.training.CPU_SCHEDULE``: warm-up,
a cosine over ``--epochs``, then early stopping once validation stops improving).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coordgate.models import DeblurringModel

__all__ = ["parse_options", "register", "train_config"]

_DEFAULT_BASE_CHANNELS = 8


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
    from coordgate.models import lookup_model

    options = parse_options(args.option)
    accepted = lookup_model(args.model).options
    if args.base_channels is not None or "base_channels" not in options:
        options["base_channels"] = args.base_channels or _DEFAULT_BASE_CHANNELS
    if "residual" in accepted and "residual" not in options:
        options["residual"] = args.residual
    takes_field = "psf_field" in accepted
    if takes_field and "psf_field" not in options and "psfs" not in options:
        options["psf_field"] = cache.manifest["parameters"]["field"]
    return options


def train_config(args: argparse.Namespace):
    """The TrainConfig of the command's options; unset ones take the study's schedule.
    ``--epochs`` is the most the run may take: under the cosine schedule the warm-up and
    the cosine fill it but for the early-stopping patience, so that a run whose validation
    stops improving at the low final learning rate ends by early stopping."""
    from coordgate.training import CPU_SCHEDULE, TrainConfig

    given = {
        "lr": args.lr,
        "schedule": args.schedule,
        "early_stopping_patience": args.early_stopping,
        "min_improvement": args.min_improvement,
    }
    chosen = {k: CPU_SCHEDULE[k] if v is None else v for k, v in given.items()}
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    warmup = args.warmup_epochs
    if warmup is None:
        warmup = min(CPU_SCHEDULE["warmup_epochs"], args.epochs - 1)
    patience = chosen["early_stopping_patience"] or 0
    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=chosen["lr"],
        lr_patience=args.lr_patience,
        early_stopping_patience=patience or None,
        time_budget_s=args.time_budget,
        warmup_epochs=warmup,
        min_improvement=chosen["min_improvement"],
        schedule=chosen["schedule"],
        anneal_epochs=max(1, args.epochs - warmup - patience),
        seed=args.seed,
        device=args.device,
        num_workers=args.workers,
        progress=not args.no_progress,
    )


def _check_size(model: DeblurringModel, size: tuple[int, int], what: str) -> None:
    multiple = model.required_multiple
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
    from coordgate.models import build_model, check_deblurring_model, count_parameters
    from coordgate.training import BlurredInput, evaluate, fit

    cache = PairCache(args.data)
    config = train_config(args)
    options = model_options(args, cache)
    torch.manual_seed(args.seed)
    model = check_deblurring_model(build_model(args.model, **options), "coordgate train")
    crops = args.crops_per_frame if args.crops_per_frame is not None else "area"
    train = PairDataset(
        cache,
        "train",
        crop=args.crop,
        crops_per_frame=crops if args.crop else 1,
        augment=args.augment,
        seed=args.seed,
    )
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
    baseline = evaluate(BlurredInput(), val, device="cpu")["psnr"]
    if main:
        print(f"{args.model}: {count_parameters(model):,} parameters; {cache}")
        print(f"blurred input: val PSNR {baseline:.2f} dB; {len(train)} training samples/epoch")
    try:
        result = fit(
            model,
            train,
            val,
            config,
            args.out,
            resume=args.resume,
            model_spec=model.model_spec,
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
        f"val PSNR {best['val_psnr']:.2f} dB ({best['val_psnr'] - baseline:+.2f} dB over the "
        f"blurred input's {baseline:.2f}), SSIM {best['val_ssim']:.4f}; "
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
    parser.add_argument(
        "--epochs",
        type=int,
        default=30,
        help="at most this many epochs; warm-up and cosine span them (default %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--base-channels",
        type=int,
        help=f"width of the first level (default {_DEFAULT_BASE_CHANNELS})",
    )
    parser.add_argument(
        "--residual",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="learn the correction to the blurred input (default: on)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another model option (value read as JSON), repeatable",
    )
    parser.add_argument("--crop", type=int, help="train on random crops of this side")
    parser.add_argument(
        "--crops-per-frame",
        type=int,
        help="crops drawn from each frame per epoch (default: enough to cover its area)",
    )
    parser.add_argument(
        "--augment", action="store_true", help="random flips/rotations the blur commutes with"
    )
    parser.add_argument("--lr", type=float, help="peak learning rate (default 2e-3)")
    parser.add_argument(
        "--schedule",
        choices=("cosine", "plateau"),
        help="cosine (default) or the paper's plateau rule (lr halved after --lr-patience)",
    )
    parser.add_argument("--warmup-epochs", type=int, help="linear warm-up (default 2)")
    parser.add_argument("--lr-patience", type=int, default=10, help="plateau schedule only")
    parser.add_argument(
        "--early-stopping",
        type=int,
        metavar="EPOCHS",
        help="stop after this many epochs without improvement (0: never; default 4)",
    )
    parser.add_argument(
        "--min-improvement",
        type=float,
        help="relative drop of the validation loss that counts as improvement (default 0.002)",
    )
    parser.add_argument("--time-budget", type=float, metavar="SECONDS")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=_run)
