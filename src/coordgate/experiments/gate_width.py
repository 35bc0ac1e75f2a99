"""Gate width: CG U-Net(3) with gates as wide as the channels they gate, on every lens (ours).

A CG U-Net(3)'s gate encoders are 32 wide at every level. The paper's CG(L,k,c,p) encodes
the coordinates with p fully connected layers of c nodes, c the channels of the layer it
gates: at base_channels 8 that is 8, 16, 16 and 32 (``cg-unet3-narrow``). On random
training crops, where every sample has its own sensor origin, a gate's encoder runs over
every distinct pixel of the batch, and the narrow encoders make that step cheaper. This
study asks what the narrow gates cost in accuracy: it trains both models in the lens
study's sensor regime (same data, seeds and schedule; :mod:`.lenses`) on each lens and
judges narrow − wide with the deblurring study's "performs like" rule. It also times one
training step of each, per-sample origins, against U-Net(3).

Three steps: run (each lens is one :func:`coordgate.experiments.deblur.run_study` in
``OUT/LENS``, resumable run by run), claims and report (from the results alone).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from coordgate.atomic import atomic_write_text
from coordgate.claims import per_lens_claim
from coordgate.experiments import deblur
from coordgate.experiments import lenses as lens_study
from coordgate.models import build_model
from coordgate.provenance import environment
from coordgate.report import (
    Claim,
    Column,
    claims_markdown,
    environment_section,
    markdown_table,
    write_json,
)
from coordgate.timing import adam_step, threads, time_clocks

__all__ = ["MODELS", "PRESETS", "add_arguments", "gate_width_claims", "run", "run_study"]

WIDE, NARROW = "cg-unet3", "cg-unet3-narrow"
MODELS = (WIDE, NARROW)
COMPARISONS = ((NARROW, WIDE),)

PRESETS = {
    # the lens study's sensor preset, both models with three seeds
    "sensor": replace(
        lens_study.PRESETS["sensor"], name="gate-width", models=MODELS, classical=(), budget_test=()
    ),
    # a smoke run of the whole pipeline in a few minutes (one seed, not converged)
    "quick": replace(
        lens_study.PRESETS["quick"], name="gate-width-quick", models=MODELS, classical=()
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    lens_study.add_arguments(parser, PRESETS, "about 25 min on 2 cores, one process per lens")


def run(args: argparse.Namespace) -> int:
    deblur.set_threads(args.threads)
    results = run_study(
        PRESETS[args.preset],
        args.out,
        lenses=tuple(args.lenses or lens_study.LENSES),
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )
    print(f"\ngate width study, preset {args.preset!r} (test PSNR, mean over seeds):")
    for lens in results["lenses"]:
        for row in lens["comparisons"]:
            print(f"  {lens['name']}: {row['text']}: {row['verdict']}")
    for label, ratio in results["training_step"]["ratios"].items():
        print(f"  training step {label}: {ratio:.2f}")
    print(f"report: {args.out / 'report.md'}")
    return 0


def run_study(
    preset: deblur.Preset,
    out: str | Path,
    *,
    lenses: tuple[str, ...] = tuple(lens_study.LENSES),
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Train or reuse both models for each lens (``OUT/LENS``), compare them, time a
    training step, judge the claims and write the outputs. Returns ``results.json``'s
    content."""
    out = Path(out)
    results = {
        "preset": preset.to_dict(),
        "seed": seed,
        "environment": environment(),
        "lenses": lens_study.train_lenses(preset, out, lenses, COMPARISONS, seed, device, progress),
        "training_step": training_step_cost(preset),
    }
    results["claims"] = [claim.to_dict() for claim in gate_width_claims(results)]
    write_json(results, out / "results.json")
    atomic_write_text(out / "report.md", report_markdown(results))
    return results


def training_step_cost(preset: deblur.Preset, repeats: int = 7) -> dict:
    """Thread-CPU seconds of one Adam step of U-Net(3) and both CG U-Nets on a batch of
    the preset's crops, each with its own sensor origin, timed in turns on one thread;
    and their ratios to U-Net(3)."""
    crop, frame = preset.crop or preset.frame, preset.frame
    generator = torch.Generator().manual_seed(0)
    batch = preset.training.batch_size
    blurred, sharp = torch.rand(2, batch, 1, crop, crop, generator=generator)
    origins = torch.randint(0, frame - crop + 1, (batch, 2), generator=generator)
    steps = {}
    for name in ("unet3", *MODELS):
        torch.manual_seed(0)
        model = build_model(name, base_channels=preset.base_channels)
        steps[name] = adam_step(
            model, blurred, sharp, origins, (frame, frame), lr=preset.training.lr
        )
    with threads(1):
        seconds = time_clocks(steps, repeats=repeats, warmup=2)["thread_cpu"]
    return {
        "batch": batch,
        "crop": crop,
        "frame": frame,
        "seconds": {name: round(s, 5) for name, s in seconds.items()},
        "ratios": {f"{n} / unet3": round(seconds[n] / seconds["unet3"], 3) for n in MODELS},
    }


_LIKE = per_lens_claim(
    "(ours) Gates as wide as their channels perform like 32-wide gates, lens by lens",
    "the paper's CG(L,k,c,p) encodes coordinates with p layers of c nodes; the U-Net "
    "experiments do not say how wide the gates are",
    NARROW,
    WIDE,
    equivalence=True,
)


def gate_width_claims(results: dict) -> list[Claim]:
    """The study's claim, judged from the stored per-lens comparisons."""
    return [_LIKE(results)]


def report_markdown(results: dict) -> str:
    """The study's report, from its results alone."""
    rows = []
    for lens in results["lenses"]:
        wide, narrow = lens["models"][WIDE], lens["models"][NARROW]
        row = lens["comparisons"][0] if lens["comparisons"] else {}
        rows.append(
            {
                "lens": lens["name"],
                "input": lens["blurred_input"],
                "wide": wide["psnr"],
                "narrow": narrow["psnr"],
                "delta": f"{row['delta']:+.2f} ± {row['uncertainty']:.2f}" if row else None,
                "verdict": row.get("verdict"),
                "inner": f"{wide['real_inner_psnr']:.2f} / {narrow['real_inner_psnr']:.2f}",
                "seeds": ", ".join(f"{d:+.2f}" for d in row.get("seed_deltas", [])),
            }
        )
    columns = [
        Column("lens", "lens"),
        Column("input", "blurred input", ".2f"),
        Column("wide", "CG U-Net(3), 32-wide gates", ".2f"),
        Column("narrow", "narrow gates", ".2f"),
        Column("delta", "narrow − wide, paired per frame"),
        Column("verdict", "verdict"),
        Column("inner", "real images inside the edge band, wide / narrow"),
        Column("seeds", "narrow − wide per seed"),
    ]
    step = results["training_step"]
    params = {name: results["lenses"][0]["models"][name]["params"] for name in MODELS}
    cost = ", ".join(f"{label} {ratio:.2f}" for label, ratio in step["ratios"].items())
    preset = results["preset"]
    return "\n".join(
        [
            "# Gate width: CG U-Net(3) with gates as wide as their channels (ours)",
            "",
            f"Preset `{preset['name']}`: {preset['frame']}² sensor frames, "
            f"{preset['crop']}² training crops with their sensor origins, whole-frame "
            f"evaluation; {preset['headline_seeds']} seeds per model. Gate encoders: "
            f"`{WIDE}` 32 wide at every level ({params[WIDE]} parameters), `{NARROW}` as "
            f"wide as the gated channels ({params[NARROW]} parameters).",
            "",
            "## Test PSNR (dB, mean over seeds)",
            "",
            markdown_table(rows, columns),
            "",
            "## Training step",
            "",
            f"One Adam step on {step['batch']} crops of {step['crop']}² at their own "
            f"origins in a {step['frame']}² sensor, thread CPU time on one thread, timed in "
            f"turns, as ratios to U-Net(3): {cost}.",
            "",
            "## Claims",
            "",
            claims_markdown([Claim(**claim) for claim in results["claims"]]),
            "",
            environment_section(results["environment"]),
        ]
    )
