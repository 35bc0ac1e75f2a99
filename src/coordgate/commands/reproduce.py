"""``coordgate reproduce STUDY``: run one of the paper's experiments.

Every module in :mod:`coordgate.experiments` is a study; it exposes
``add_arguments(parser)`` and ``run(args) -> int`` and its docstring's first line is the
help text.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil

__all__ = ["register", "studies"]


def studies() -> dict[str, object]:
    """The experiment modules by command name (the module's, ``-`` for ``_``)."""
    import coordgate.experiments as package

    return {
        info.name.replace("_", "-"): importlib.import_module(f"{package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    }


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("reproduce", help="reproduce one of the paper's experiments")
    study_parsers = parser.add_subparsers(dest="study", metavar="STUDY", required=True)
    for name, module in sorted(studies().items()):
        summary = (module.__doc__ or name).strip().splitlines()[0]
        sub = study_parsers.add_parser(name, help=summary, description=module.__doc__)
        module.add_arguments(sub)
        sub.set_defaults(func=module.run)
