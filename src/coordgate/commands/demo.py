"""``coordgate demo``: the main job on the embedded data, in a few minutes on a CPU.

Runs the quick 1D study (paper §IV.A) and the quick deblurring study (§IV.B) and ends
with the reports' paths and a summary table.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="quick 1D and deblurring studies on the embedded data (minutes, CPU)"
    )
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output directory")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from coordgate.experiments import conv1d, deblur

    print("== 1D spatially-varying convolution (paper §IV.A), quick preset", flush=True)
    conv1d_out = args.out / "conv1d"
    # the gate-size ablation is left to `coordgate reproduce conv1d --quick`: the demo
    # must stay within a few minutes
    quick_1d = replace(conv1d.PRESETS["quick"], ablation=())
    results_1d = conv1d.run_study(quick_1d, conv1d_out, progress=False)
    print("\n== deblurring with the default lens (paper §IV.B), quick preset", flush=True)
    deblur_out = args.out / "deblur"
    results = deblur.run_study(
        deblur.PRESETS["quick"], deblur_out, device=args.device, progress=False
    )
    print(f"\n1D study, {len(results_1d['models'])} models (median test PSNR over seeds):")
    for row in results_1d["models"]:
        print(f"  {row['name']:<16}{row['psnr_median']:>8.2f} dB  {row['params']:>6} parameters")
    print(f"report: {conv1d_out / 'report.md'}")
    deblur.print_summary(results, deblur_out)
    return 0
