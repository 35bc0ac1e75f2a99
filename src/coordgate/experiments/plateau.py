"""Plateau: the smallest training budget at which doubling it gains < 0.15 dB (ours).

For each model of a deblurring-study preset (the same data, lens, seeds and schedule as
:mod:`.deblur`), train runs of ``start``, ``2 start``, ``4 start`` ... epochs — one epoch
of warm-up and a cosine stretched over each run — score each on the test split (whole
frames, the sensor frame's coordinates) and stop at the first budget whose doubling gains
less than :data:`~coordgate.training.plateau.DOUBLING_TOLERANCE_DB`
(:func:`~coordgate.training.plateau.plateau_search`). That budget becomes the preset's
``epochs``. Each run is resumable and reused when finished (``OUT/eE/runs/MODEL/seedS``).

Three steps: run (train and score, ``results.json`` per model as it completes), claims (one
per model: did its search reach a plateau within the cap) and report (``report.md``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from coordgate.atomic import atomic_write_text
from coordgate.data.pairs import PairDataset
from coordgate.experiments import deblur
from coordgate.provenance import environment
from coordgate.report import (
    Claim,
    Column,
    claims_markdown,
    environment_section,
    markdown_table,
    write_json,
)
from coordgate.training.fit import BlurredInput, evaluate
from coordgate.training.plateau import plateau_search

__all__ = ["add_arguments", "plateau_claims", "run", "run_study"]

PRESETS = {name: deblur.PRESETS[name] for name in ("quick", "cpu", "sensor")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument(
        "--models", nargs="+", choices=deblur.ALL_MODELS, default=["cg-unet3", "unet6"]
    )
    parser.add_argument("--start", type=int, default=35, help="first budget, epochs")
    parser.add_argument("--limit", type=int, default=1120, help="largest budget scored, epochs")
    deblur.add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    deblur.set_threads(args.threads)
    results = run_study(
        PRESETS[args.preset],
        args.out,
        models=args.models,
        start=args.start,
        limit=args.limit,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )
    for row in results["models"]:
        rungs = ", ".join(f"{r['epochs']}: {r['psnr']:.2f}" for r in row["rungs"])
        print(f"{row['name']}: plateau {row['plateau_epochs']} epochs ({rungs} dB)")
    return 0


def run_study(
    preset: deblur.Preset,
    out: str | Path,
    *,
    models: list[str],
    start: int,
    limit: int,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Search each model's plateau; write ``results.json`` and ``report.md`` after each
    model (``OUT/models/MODEL.json`` holds one model's search, so processes searching
    different models into one ``out`` combine). Returns the results."""
    out = Path(out)
    cache = deblur.study_pairs(preset, out, seed=seed, progress=progress)
    test = PairDataset(cache, "test")
    baseline = evaluate(BlurredInput(), test)["psnr"]
    for name in models:
        runs: dict[int, dict] = {}

        def score(epochs: int, name: str = name, runs: dict = runs) -> float:
            print(f"== {name}: {epochs} epochs", flush=True)
            started = time.process_time()
            model, result, _ = deblur.train_model(
                name, replace(preset.with_training(epochs=epochs), headline_epochs=None), cache,
                out / f"e{epochs}", seed=seed, device=device, progress=progress,
            )  # fmt: skip
            psnr = evaluate(model, test, device=device)["psnr"]
            runs[epochs] = {
                "epochs": epochs,
                "psnr": psnr,
                "train_s": result.train_time_s,
                "cpu_s_this_process": time.process_time() - started,
                "best_epoch": result.best_epoch,
                "stopped": result.stop_reason,
                "final_lr": result.history[-1]["lr"],
                "plan": result.plan,
            }
            return psnr

        search = plateau_search(score, start=start, limit=limit)
        row = {"name": name, **search.to_dict(), "runs": [runs[e] for e in sorted(runs)]}
        write_json(row, out / "models" / f"{name}.json")
    return write_outputs(out, preset, seed, baseline)


def write_outputs(out: Path, preset: deblur.Preset, seed: int, baseline: float) -> dict:
    """``results.json`` and ``report.md`` from every finished model search in ``out``."""
    rows = [_read_search(p) for p in sorted((out / "models").glob("*.json"))]
    results = {
        "preset": preset.to_dict(),
        "seed": seed,
        "blurred_input_psnr": baseline,
        "models": rows,
        "environment": environment(),
    }
    results["claims"] = [c.to_dict() for c in plateau_claims(results)]
    write_json(results, out / "results.json")
    atomic_write_text(out / "report.md", report(results))
    return results


def _read_search(path: Path) -> dict:
    """One model's search as ``OUT/models/MODEL.json`` holds it, in today's words."""
    row = json.loads(path.read_text())
    # Migration: searches written before the largest budget was named limit
    return {("limit" if k == "max_epochs" else k): v for k, v in row.items()}


def plateau_claims(results: dict) -> list[Claim]:
    """One claim per model: its training reaches a plateau within the searched budgets."""
    claims = []
    for row in results["models"]:
        rungs = "; ".join(
            f"{r['epochs']} epochs {r['psnr']:.2f} dB"
            + (f" (doubling {r['doubling_gain_db']:+.2f})" if "doubling_gain_db" in r else "")
            for r in row["rungs"]
        )
        reached = row["plateau_epochs"] is not None
        claims.append(
            Claim(
                title=f"{row['name']} reaches its plateau within {row['limit']} epochs",
                paper="the paper trains 600 epochs and reports no convergence test",
                evidence=f"{rungs}; one seed",
                verdict="supported" if reached else "not supported",
                rule=f"a budget passes when doubling it gains < {row['tolerance']} dB test "
                "PSNR; the plateau is the smallest budget that passes",
            )
        )
    return claims


def report(results: dict) -> str:
    preset = results["preset"]
    rows = [
        {"model": row["name"], **run, "plan": (run["plan"] or {}).get("by", "")}
        for row in results["models"]
        for run in row["runs"]
    ]
    columns = [
        Column("model", "model"),
        Column("epochs", "epochs"),
        Column("psnr", "test PSNR (dB)", ".2f"),
        Column("train_s", "training (s)", ".0f"),
        Column("final_lr", "final lr", ".2g"),
        Column("stopped", "stopped"),
    ]
    plateaus = "\n".join(
        f"- **{row['name']}**: plateau at **{row['plateau_epochs']}** epochs "
        f"(doubling gain {row['doubling_gain_db']:+.3f} dB)"
        if row["plateau_epochs"] is not None
        else f"- **{row['name']}**: no plateau within {row['limit']} epochs "
        f"(last doubling gained {row['doubling_gain_db']:+.3f} dB)"
        for row in results["models"]
    )
    total = sum(run["train_s"] for row in results["models"] for run in row["runs"])
    return (
        f"# Plateau search, preset `{preset['name']}`\n\n"
        f"Data: {preset['images']} synthetic frames of {preset['frame']}² (the deblurring "
        f"study's), blurred input {results['blurred_input_psnr']:.2f} dB test PSNR. Each run: "
        f"Adam, {preset['warmup_epochs']} epoch of warm-up to lr {preset['lr']:g}, a cosine to "
        f"{preset['lr'] / 100:g} over the rest of its epochs, seed {results['seed']}, "
        "one torch thread.\n\n"
        f"{plateaus}\n\n{markdown_table(rows, columns)}\n\n"
        f"Total training time: {total / 3600:.2f} h.\n\n"
        f"## Claims\n\n{claims_markdown([Claim(**c) for c in results['claims']])}\n\n"
        f"{environment_section(results['environment'])}"
    )
