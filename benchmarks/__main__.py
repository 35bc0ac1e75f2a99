"""Run every ``benchmarks/bench_*.py`` (or those named) and write one JSON file each.

Each module exposes ``run(quick: bool) -> dict``. Results go to
``benchmarks/results/<name>.json`` together with the machine, versions, the time they
were measured and the load average at start and end (the machine may be shared).
Timings are compared as ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

from benchmarks.timing import load
from coordgate.atomic import atomic_write_text
from coordgate.provenance import environment

HERE = Path(__file__).parent


def main(argv: list[str] | None = None) -> int:
    names = sorted(
        m.name[len("bench_") :]
        for m in pkgutil.iter_modules([str(HERE)])
        if m.name.startswith("bench_")
    )
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all of {', '.join(names)})",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or names:
        print(f"== benchmark {name}", flush=True)
        at_start = load()
        result = importlib.import_module(f"benchmarks.bench_{name}").run(quick=args.quick)
        record = {
            "benchmark": name,
            "quick": args.quick,
            "environment": environment(),
            "machine_at_start": at_start,
            "machine_at_end": load(),
            "results": result,
        }
        path = args.out / f"{name}.json"
        atomic_write_text(path, json.dumps(record, indent=2))
        print(json.dumps(result, indent=2))
        print(f"-> {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
