"""The ``coordgate`` command.

Each sub-command lives in its own module under :mod:`coordgate.commands` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable taking the
parsed arguments and returning an exit code). This keeps the entry point free of the
stages' imports: a command's heavy dependencies load only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from coordgate import commands

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coordgate",
        description="CoordGate: spatially-varying convolution and deconvolution in CNNs.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"coordgate {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
