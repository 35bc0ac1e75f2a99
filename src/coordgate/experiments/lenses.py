"""Lens study: where CoordGate pays, on lenses whose blur the image cannot reveal (ours).

The default lens blurs more toward the corners, and a deep, position-blind network can
read how blurred a region looks and correct it without knowing where it lies. This study
repeats the deblurring study's sensor regime (256×256 frames, 64×64 training crops that
carry their sensor origin, whole-frame evaluation through
:func:`coordgate.inference.predict`) for lenses whose PSF depends on position in ways the
content reveals less and less: field curvature (the default), off-axis astigmatism and
coma oriented along the field angle, and a tilted focal plane with spherical aberration
(equally wide blur in front of and behind focus, but of different form). Per lens it
trains U-Net(3), CG U-Net(3), CG U-Net(3) with gates as wide as the channels they gate
(``cg-unet3-narrow``: the paper's CG(L,k,c,p) encoder of c nodes per layer; the default
encoders are 32 wide at every level), U-Net(6), CoordConv-UNet(6) and CAREamics' CARE
configuration with the same budget and seeds, runs the classical SV Wiener and
Richardson–Lucy with the true field (tuned on the validation split), and judges the
differences with the deblurring study's rule. (The narrow gates were a study of their own,
``results/gate-width``, until it was folded in here.)

Three steps: run (each lens is one :func:`coordgate.experiments.deblur.run_study` in
``OUT/LENS``, resumable run by run), claims (:mod:`._lenses_claims`) and report
(:mod:`._lenses_report`, from the results alone).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

from coordgate.claims import best_network, compare, comparison_row
from coordgate.experiments import deblur
from coordgate.experiments._lenses_claims import lens_claims
from coordgate.experiments._lenses_report import write_outputs
from coordgate.optics import DEFAULT_MAX_DEFOCUS
from coordgate.provenance import environment

__all__ = [
    "COMPARISONS",
    "LENSES",
    "MODELS",
    "PRESETS",
    "Lens",
    "add_arguments",
    "lens_claims",
    "lens_preset",
    "lens_summary",
    "train_lenses",
    "run",
    "run_study",
]


@dataclass(frozen=True)
class Lens:
    """One lens of the study: :class:`~coordgate.optics.LensField` parameters (RMS waves)
    and what a user would see through it."""

    name: str
    description: str
    max_defocus: float
    aberrations: dict[str, float]


LENSES = {
    lens.name: lens
    for lens in (
        Lens(
            "defocus",
            "the default lens: in focus at the centre, defocus growing toward the corners "
            "(field curvature); how blurred a region looks tells how far out it lies",
            DEFAULT_MAX_DEFOCUS,
            {},
        ),
        Lens(
            "astigmatism-coma",
            "off-axis astigmatism and coma oriented along the field angle (comet tails "
            "pointing away from the centre) over mild field curvature: the blur's "
            "direction, not only its width, depends on where a region lies",
            0.25,
            {"astigmatism": 0.35, "coma": 0.35},
        ),
        Lens(
            "tilted",
            "a focal plane tilted about the sensor's vertical centre line, with spherical "
            "aberration: in front of focus on the left, behind it on the right; equally "
            "defocused regions on either side are blurred by PSFs of different form",
            0.0,
            {"tilt": 0.75, "spherical": 0.25},
        ),
    )
}

#: The models trained for every lens.
MODELS = ("unet3", "cg-unet3", "cg-unet3-narrow", "unet6", "coordconv-unet6", "care-unet")
#: The per-lens comparisons (a − b, test PSNR): CoordGate at equal depth, the shallow CG
#: net against the deep plain one, coordinates as input at depth 6, the two ways of
#: giving a network its position against each other, CG U-Net(3) against CARE's
#: configuration, and narrow gates against the default 32-wide ones.
COMPARISONS = (
    ("cg-unet3", "unet3"),
    ("cg-unet3", "unet6"),
    ("coordconv-unet6", "unet6"),
    ("cg-unet3", "coordconv-unet6"),
    ("cg-unet3", "care-unet"),
    ("cg-unet3-narrow", "cg-unet3"),
)

PRESETS = {
    # the deblurring study's sensor preset, every model with three seeds
    # one budget for every model (half the headline budget of the sensor study); the
    # halving test of CG U-Net(3) on the tilted lens (BUDGET_TEST_LENS) only
    "sensor": replace(
        deblur.PRESETS["sensor"], name="lenses", models=MODELS, seeds=3, headline_seeds=3,
        headline_epochs=None, budget_test=("cg-unet3",),
    ),
    # a smoke run of the whole pipeline in a few minutes (one seed, not converged)
    "quick": replace(
        deblur.PRESETS["sensor"].with_training(epochs=3, time_budget_s=None),
        name="lenses-quick", frame=64, crop=32, images=40, models=MODELS,
        headline_epochs=None, budget_test=(),
    ),
}  # fmt: skip
#: The lens on which the preset's budget_test models are also trained at half the budget.
BUDGET_TEST_LENS = "tilted"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The study's command line: ``--preset``, ``--lenses``, ``--models``, ``--no-train``
    and the deblurring study's run options."""
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="quick",
        help="scale (quick: a smoke run in minutes; sensor: the committed study, about 8 h "
        "on 2 cores with two processes, 280 epochs per run)",
    )
    parser.add_argument(
        "--lenses",
        nargs="+",
        choices=sorted(LENSES),
        default=None,
        help="lenses to run (default: all; run subsets in parallel processes on the same "
        "--out, then once with all to write the combined report)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=MODELS,
        default=None,
        help="models to train (default: all; like --lenses, subsets may run in parallel "
        "processes on the same --out)",
    )
    deblur.add_no_train_argument(parser)
    deblur.add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    deblur.set_threads(args.threads)
    preset = PRESETS[args.preset]
    if args.models:
        preset = replace(preset, models=tuple(args.models))
    results = run_study(
        preset,
        args.out,
        lenses=tuple(args.lenses or LENSES),
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        train=not args.no_train,
    )
    print(f"\nlens study, preset {args.preset!r} (test PSNR, mean over seeds):")
    for lens in results["lenses"]:
        print(f"  {lens['name']}: blurred input {lens['blurred_input']:.2f} dB")
        for row in lens["comparisons"]:
            print(f"    {row['text']}: {row['verdict']}")
    print(f"report: {args.out / 'report.md'}")
    return 0


def lens_preset(preset: deblur.Preset, lens: Lens) -> deblur.Preset:
    """``preset`` with the lens ``lens`` (and its budget test on :data:`BUDGET_TEST_LENS`
    only)."""
    return replace(
        preset,
        max_defocus=lens.max_defocus,
        aberrations=dict(lens.aberrations),
        budget_test=preset.budget_test if lens.name == BUDGET_TEST_LENS else (),
    )


def run_study(
    preset: deblur.Preset,
    out: str | Path,
    *,
    lenses: tuple[str, ...] = tuple(LENSES),
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    train: bool = True,
) -> dict:
    """Train or reuse every model and seed for each lens (``OUT/LENS``), compare them,
    judge the claims and write the combined outputs (without ``train``, only finished runs
    are scored, as in :func:`coordgate.experiments.deblur.run_study`). Returns
    ``results.json``'s content."""
    out = Path(out)
    results = {
        "preset": preset.to_dict(),
        "seed": seed,
        "environment": environment(),
        "lenses": train_lenses(preset, out, lenses, seed, device, progress, train),
    }
    results["claims"] = [claim.to_dict() for claim in lens_claims(results)]
    write_outputs(results, out)
    return results


def train_lenses(
    preset: deblur.Preset,
    out: Path,
    lenses: tuple[str, ...],
    seed: int,
    device: str,
    progress: bool,
    train: bool = True,
) -> list[dict]:
    """Train (or, without ``train``, only score) the preset's models and seeds on each lens
    (one deblurring study in ``out/LENS``) and summarise each lens (:func:`lens_summary`)."""
    unknown = sorted(set(lenses) - set(LENSES))
    if unknown or not lenses:
        raise ValueError(f"lenses must be some of {sorted(LENSES)}, got {list(lenses)}")
    summaries = []
    for name in lenses:
        print(f"=== lens {name}", flush=True)
        per_lens = deblur.run_study(
            lens_preset(preset, LENSES[name]),
            out / name,
            seed=seed,
            device=device,
            progress=progress,
            export=False,
            train=train,
        )
        summaries.append(lens_summary(LENSES[name], per_lens))
    return summaries


def lens_summary(lens: Lens, results: dict) -> dict:
    """One lens's entry of the combined results: its field, each model's scores, the
    :data:`COMPARISONS` (a − b) with their verdicts, and the network with the best validation
    PSNR against each classical method with the true field (``versus_classical``)."""
    have = {row["name"] for row in results["models"]}
    models = {
        row["name"]: {
            key: row[key]
            for key in (
                "params",
                "psnr",
                "psnr_seeds",
                "real_psnr",
                "real_inner_psnr",
                "real_edge_psnr",
                "ssim",
                "train_s",
                "frame256_ms",
                "doubling",
            )
        }
        for row in results["models"]
    }
    rows = [comparison_row(compare(results, a, b)) for a, b in COMPARISONS if {a, b} <= have]
    classical = [name for name in deblur.CLASSICAL if name in have]
    best = best_network(results) if have - set(classical) else None
    versus = [comparison_row(compare(results, best, c)) for c in classical if best]
    baseline = results["blurred_input"]
    return {
        "name": lens.name,
        "description": lens.description,
        "psf_field": results["psf_field"],
        "blurred_input": baseline["psnr"],
        "blurred_input_real": baseline["real_psnr"],
        "blurred_input_real_inner": baseline["real_inner_psnr"],
        "blurred_input_real_edge": baseline["real_edge_psnr"],
        "edge_band_px": baseline["edge_band_px"],
        "models": models,
        "comparisons": rows,
        "best_network": best,
        "versus_classical": versus,
        "harm": deblur.harm_lines(results),
        "training_s": deblur.training_seconds(results["models"]),
        "error_profiles": results["error_profiles"],
        "stopped": sorted({run["stopped"] for row in results["models"] for run in row["runs"]}),
    }
