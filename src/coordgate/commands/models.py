"""``coordgate models``: the registered models, what they are, and their parameter counts."""

from __future__ import annotations

import argparse

__all__ = ["model_table", "register"]


def model_table(base_channels: int | None = None) -> list[tuple[str, str, str]]:
    """(name, parameter count, description) of every registered model, built at its
    default options (or with ``base_channels`` where the model takes it)."""
    from coordgate.models import count_parameters, list_models

    rows = []
    for spec in list_models():
        options = {}
        if base_channels is not None and "base_channels" in spec.options:
            options["base_channels"] = base_channels
        try:
            count = f"{count_parameters(spec.builder(**options)):,}"
        except (ValueError, TypeError) as error:
            count = f"n/a ({error})"
        rows.append((spec.name, count, spec.description))
    return rows


def _run(args: argparse.Namespace) -> int:
    if args.base_channels is not None and args.base_channels < 1:
        raise ValueError(f"--base-channels must be a positive integer, got {args.base_channels}")
    rows = [("name", "parameters", "description")] + model_table(args.base_channels)
    name_width = max(len(r[0]) for r in rows)
    count_width = max(len(r[1]) for r in rows)
    for name, count, description in rows:
        print(f"{name:<{name_width}}  {count:>{count_width}}  {description}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models", help="list the models with their parameter counts", description=__doc__
    )
    parser.add_argument(
        "--base-channels",
        type=int,
        default=None,
        metavar="N",
        help="count parameters at this base width (default: each model's default)",
    )
    parser.set_defaults(func=_run)
