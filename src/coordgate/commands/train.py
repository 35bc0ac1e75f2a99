"""``coordgate train --model NAME --data DIR --out runs/NAME``: train a deblurring network.

``DIR`` is a pair cache made by ``coordgate dataset build`` (blurred/sharp sensor frames
with train/val/test splits). Training runs on the train split (whole frames, or random
``--crop`` windows that keep their sensor coordinates; an epoch draws enough crops from
each frame to cover its area unless ``--crops-per-frame`` says otherwise), validates on
the whole val frames after every epoch and writes checkpoints and metrics to ``--out``;
``--resume`` continues an interrupted run. Under ``torchrun`` the same command trains
data-parallel.

What a run takes is planned before it starts, and it stops when its plan is done:
``--time-budget`` (default 8m) fits the epochs that end within it, measured on the first
epochs, and spreads one epoch of warm-up and a cosine of the learning rate over them, so
the learning rate is annealed when the budget ends; ``--epochs`` or ``--steps`` plan a
fixed length instead (the same numbers on every machine). Early stopping
(``--early-stopping``) needs the paper's plateau schedule (``--schedule plateau``): under
the cosine it would stop a run before its learning rate is annealed. The other defaults
are the deblurring study's: residual learning, base width 8, peak learning rate 2e-3.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coordgate.models import DeblurringModel

__all__ = [
    "DEFAULT_TIME_BUDGET_S",
    "parse_duration",
    "parse_options",
    "register",
    "train_config",
]

_DEFAULT_BASE_CHANNELS = 8
#: The default time budget: the epochs that fit, annealed at the end (new-user flow:
#: about 9 minutes with data loading and validation on 2 cores).
DEFAULT_TIME_BUDGET_S = 480.0
_EPOCH_CAP = 100_000


def parse_duration(text: str) -> float:
    """Seconds in ``"300"``, ``"300s"``, ``"10m"``, ``"1.5h"`` or ``"1h30m"``.

    >>> parse_duration("1h30m"), parse_duration("10m"), parse_duration("45")
    (5400.0, 600.0, 45.0)
    """
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d*)?)h)?\s*(?:(\d+(?:\.\d*)?)m)?\s*"
                         r"(?:(\d+(?:\.\d*)?)s?)?\s*", text)  # fmt: skip
    if not text.strip() or match is None or not any(match.groups()):
        raise ValueError(f"a duration must read like 300, 300s, 10m, 1.5h or 1h30m; got {text!r}")
    return sum(float(v) * f for v, f in zip(match.groups(), units.values()) if v)


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
    if args.base_channels is not None or (
        "base_channels" in accepted and "base_channels" not in options
    ):
        options["base_channels"] = args.base_channels or _DEFAULT_BASE_CHANNELS
    if "residual" in accepted and "residual" not in options:
        options["residual"] = args.residual
    takes_field = "psf_field" in accepted
    if takes_field and "psf_field" not in options and "psfs" not in options:
        options["psf_field"] = cache.manifest["parameters"]["field"]
    return options


def train_config(args: argparse.Namespace):
    """The TrainConfig of the command's options, whose defaults are the study's schedule
    (``CPU_SCHEDULE``). The run's length: ``--epochs``, ``--steps`` or ``--time-budget``
    (the default, :data:`DEFAULT_TIME_BUDGET_S`, when neither of the others is given)."""
    from dataclasses import replace

    from coordgate.training import CPU_SCHEDULE

    lengths = [n for n in ("epochs", "steps", "time_budget") if getattr(args, n) is not None]
    if len(lengths) > 1:
        flags = " and ".join("--" + name.replace("_", "-") for name in lengths)
        raise ValueError(f"{flags} each plan the run's length; give one of them")
    budget = None
    for name in ("epochs", "steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    if not lengths or args.time_budget is not None:
        budget = (
            DEFAULT_TIME_BUDGET_S if args.time_budget is None else parse_duration(args.time_budget)
        )
    if budget is not None and budget <= 0:
        raise ValueError(f"--time-budget must be positive, got {args.time_budget!r}")
    epochs = args.epochs or _EPOCH_CAP
    warmup = args.warmup_epochs
    if warmup is None:
        warmup = min(CPU_SCHEDULE.warmup_epochs, epochs - 1)
    return replace(
        CPU_SCHEDULE,
        epochs=epochs,
        steps=args.steps,
        time_budget_s=budget,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_patience=args.lr_patience,
        early_stopping_patience=args.early_stopping or None,
        warmup_epochs=warmup,
        min_improvement=args.min_improvement,
        schedule=args.schedule,
        loss=args.loss,
        amp=args.amp,
        channels_last=args.channels_last,
        seed=args.seed,
        device=args.device,
        num_workers=args.workers,
        progress=not args.no_progress,
    )


def _length_text(config) -> str:
    warmup = f"{config.warmup_epochs} epoch(s) of warm-up, then {config.schedule}"
    if config.time_budget_s is not None:
        return (
            f"time budget {config.time_budget_s:.0f} s ({config.time_budget_s / 60:.1f} min): "
            f"{warmup}; the epochs that fit are planned after the first "
            f"{config.warmup_epochs + 1} (change it with --time-budget, --epochs or --steps)"
        )
    if config.steps is not None:
        return f"{config.steps} steps, rounded up to whole epochs: {warmup}"
    return f"{config.epochs} epochs: {warmup}"


def _check_size(model: DeblurringModel, size: tuple[int, int], what: str) -> None:
    multiple = model.required_multiple
    if size[0] % multiple or size[1] % multiple:
        raise ValueError(
            f"{what} of {size[0]}x{size[1]} pixels: the model needs sides divisible by "
            f"{multiple}; choose a --crop (training) or a pair cache of such a size"
        )


def _run(args: argparse.Namespace) -> int:
    import torch

    from coordgate.data.pairs import PairCache, PairDataset
    from coordgate.models import build_model, check_deblurring_model, count_parameters
    from coordgate.training import BlurredInput, evaluate, fit
    from coordgate.training.checkpoint import CheckpointConfig

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
        crop_origins=args.crop_origins,
        augment=args.augment,
        seed=args.seed,
    )
    val = PairDataset(cache, "val")
    if len(val) == 0:
        raise ValueError(f"pair cache {cache.path} has no val frames; rebuild it with a val split")
    _check_size(model, train.crop, "training crops")
    _check_size(model, val.crop, "validation frames")
    record = CheckpointConfig(
        model.model_spec,
        normalisation=cache.normalisation(),
        psf_field=cache.manifest["parameters"]["field"],
        dataset={
            "path": str(cache.path.resolve()),
            "key": cache.manifest.get("key"),
            "parameters": cache.manifest["parameters"],
            "counts": cache.manifest.get("counts"),
            "crop": list(train.crop),
            "crop_origins": args.crop_origins,
            "augment": args.augment,
        },
    )
    # under torchrun every process runs this command; only rank 0 talks
    main = int(os.environ.get("RANK", "0")) == 0
    baseline = evaluate(BlurredInput(), val, device="cpu")["psnr"]
    if main:
        print(f"{args.model}: {count_parameters(model):,} parameters; {cache}")
        print(f"blurred input: val PSNR {baseline:.2f} dB; {len(train)} training samples/epoch")
        print(f"plan: {_length_text(config)}")
    try:
        result = fit(
            model,
            train,
            val,
            config,
            args.out,
            resume=args.resume,
            model_spec=model.model_spec,
            record=record,
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
    if result.plan is not None:
        plan = result.plan
        print(
            f"planned {plan['epochs']} epochs ({plan['by'].replace('_', ' ')}), ran "
            f"{len(result.history)} in {result.train_time_s:.0f} s; final lr "
            f"{result.history[-1]['lr']:.3g}"
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from coordgate.training import CPU_SCHEDULE as defaults
    from coordgate.training.fit import SCHEDULES

    parser = subparsers.add_parser(
        "train", help="train a deblurring network on a pair cache", description=__doc__
    )
    parser.add_argument("--model", required=True, help="registered name (see `coordgate models`)")
    parser.add_argument("--data", required=True, help="pair cache directory")
    parser.add_argument("--out", required=True, help="run directory, e.g. runs/cg-unet3")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    length = parser.add_argument_group(
        f"length of the run (one of these; default --time-budget {DEFAULT_TIME_BUDGET_S / 60:g}m)"
    )
    length.add_argument(
        "--time-budget",
        metavar="DURATION",
        help="train for about this long (300, 300s, 10m, 1h30m): the epochs that fit are "
        "planned from the first epochs' timing and the cosine ends with the budget",
    )
    length.add_argument("--epochs", type=int, help="train exactly this many epochs")
    length.add_argument(
        "--steps", type=int, help="train this many optimiser steps (rounded up to whole epochs)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="(default %(default)s)"
    )
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
        "--crop-origins",
        choices=("covering", "uniform"),
        default="covering",
        help="covering (default): every sensor pixel, edges and corners included, is in a "
        "crop at least as often as a central one; uniform: every origin equally likely "
        "(edges starve)",
    )
    parser.add_argument(
        "--augment", action="store_true", help="random flips/rotations the blur commutes with"
    )
    parser.add_argument(
        "--lr", type=float, default=defaults.lr, help="peak learning rate (default %(default)g)"
    )
    parser.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=defaults.schedule,
        help="cosine over the planned run or the paper's plateau rule (lr halved after "
        "--lr-patience epochs without improvement; default %(default)s)",
    )
    parser.add_argument(
        "--warmup-epochs",
        type=int,
        help=f"linear warm-up (default {defaults.warmup_epochs})",
    )
    parser.add_argument(
        "--lr-patience",
        type=int,
        default=defaults.lr_patience,
        help="plateau schedule only (default %(default)s)",
    )
    parser.add_argument(
        "--early-stopping",
        type=int,
        metavar="EPOCHS",
        default=defaults.early_stopping_patience,
        help="plateau schedule only: stop after this many epochs without improvement "
        "(default: never)",
    )
    parser.add_argument(
        "--min-improvement",
        type=float,
        default=defaults.min_improvement,
        help="plateau schedule: relative drop of the validation loss that counts as "
        "improvement (default %(default)s)",
    )
    parser.add_argument(
        "--loss",
        choices=("auto", "mse", "mae"),
        default=defaults.loss,
        help="training loss (default auto: the model's own, mse for all but care-unet)",
    )
    parser.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=defaults.amp,
        help="bf16 autocast (default: on where bf16 has fast kernels: CUDA with bf16, CPUs "
        "with oneDNN bf16 such as AVX-512; with channels-last a CPU step on 64² crops takes "
        "0.3-0.75 of the float32 time, benchmarks/results/precision.json; --no-amp for float32)",
    )
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=defaults.channels_last,
        help="channels-last memory for the model and batches (default: on with bf16 on the CPU)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument(
        "--workers", type=int, default=defaults.num_workers, help="DataLoader worker processes"
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=_run)
