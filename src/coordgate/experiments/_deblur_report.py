"""Outputs of the deblurring study, generated from its results alone: ``results.json``,
``results.csv``, the figures and ``report.md`` (no numbers typed by hand)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from coordgate.atomic import atomic_write_text
from coordgate.experiments._deblur_claims import deblur_claims
from coordgate.plots.deblur import (
    error_map_figure,
    metric_vs_params_figure,
    reconstruction_figure,
    validation_curves_figure,
)
from coordgate.report import (
    Claim,
    Column,
    claims_markdown,
    environment_section,
    markdown_table,
    write_csv,
    write_json,
)
from coordgate.training.metrics import psnr

__all__ = [
    "COLUMNS",
    "budget_lines",
    "convergence_note",
    "harm_lines",
    "report_markdown",
    "schedule_text",
    "training_seconds",
    "write_outputs",
]

# the models whose error maps the study draws, when present
_MAP_MODELS = ("unet3", "cg-unet3", "unet6")


def _seeds(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


COLUMNS = (
    Column("name", "model"),
    Column("params", "parameters", ","),
    Column("psnr", "PSNR (dB)", ".2f"),
    Column("psnr_std", "± std", ".2f"),
    Column("psnr_seeds", "PSNR per seed", _seeds),
    Column("ssim", "SSIM", ".3f"),
    Column("real_psnr", "real PSNR (dB)", ".2f"),
    Column("real_inner_psnr", "real, inside (dB)", ".2f"),
    Column("real_edge_psnr", "real, edge band (dB)", ".2f"),
    Column("budget_epochs", "budget (epochs)"),
    Column("epochs", "epochs"),
    Column("best_epoch", "best epoch"),
    Column("stopped", "stopped"),
    Column("train_s", "train (s)", ".0f"),
    Column("infer_ms", "infer (ms/img)", ".2f"),
)


def write_outputs(results: dict, out: Path, *, views: dict, frames) -> None:
    """results.json / results.csv, the figures and report.md; ``views``: per model, its
    first seed's first test and real outputs and test error map (``test0``, ``real0``,
    ``error_map``, each (H, W)); ``frames``: the evaluation frames."""
    rows = results["models"]
    write_json(results, out / "results.json")
    flat = [k for k in rows[0] if k not in ("val_psnr", "runs") and not k.endswith("_frames")]
    write_csv(rows, out / "results.csv", keys=flat)
    images = results["dataset"]["test"]
    metric_vs_params_figure(rows, "psnr", "test PSNR (dB)", out / "fig4b.png", images)
    metric_vs_params_figure(rows, "ssim", "test SSIM", out / "fig7.png", images)
    validation_curves_figure(rows, out / "fig6.png")
    sharp, blurred = frames.test_sharp[0, 0], frames.test_blurred[0, 0]
    outputs = {name: v["test0"] for name, v in views.items()}
    scores = {name: float(psnr(o, sharp)) for name, o in outputs.items()}
    scores["blurred"] = float(psnr(blurred, sharp))
    reconstruction_figure(sharp, blurred, outputs, out / "fig5.png", scores)
    real_outputs = {name: v["real0"] for name, v in views.items()}
    reconstruction_figure(
        frames.real_sharp[0, 0], frames.real_blurred[0, 0], real_outputs, out / "fig5_real.png"
    )
    shown = [n for n in _MAP_MODELS if n in views]
    if shown:
        maps = {n: views[n]["error_map"] for n in shown}
        profiles = results["error_profiles"]
        error_map_figure(maps, profiles, profiles["radius"], out / "error_vs_position.png")
    atomic_write_text(out / "report.md", report_markdown(results))


def skipped_lines(skipped: list[dict]) -> list[str]:
    """Report lines for the models this machine could not train (none: no lines)."""
    if not skipped:
        return []
    return ["Not trained here:", ""] + [f"- {s['name']}: {s['reason']}" for s in skipped] + [""]


def convergence_note(rows: list[dict]) -> str:
    """How the runs ended: the networks' runs counted by stop reason (an annealed cosine
    that reached its planned epochs is no plateau: the halving test judges that), and a
    classical method whose best validation setting is the last one tried."""
    runs = [(r["name"], run) for r in rows if r["params"] for run in r.get("runs", [])]
    reasons = Counter(run["stopped"] for _, run in runs)
    text = (
        f"**How the runs ended:** {len(runs)} network runs: "
        + ", ".join(
            f"{count} by {_STOP_WORDS.get(reason, reason)}"
            for reason, count in sorted(reasons.items())
        )
        + "."
    )
    stopped_early = sorted({f"{name} (seed {run['seed']}: {run['stopped']})" for name, run in runs
                            if run["stopped"] not in ("epochs", "early_stopping")})  # fmt: skip
    if stopped_early:
        text += f" Cut short: {', '.join(stopped_early)}; their scores are lower bounds."
    capped = [r for r in rows if r["name"] == "sv-rl" and r["val_psnr"]
              and max(r["val_psnr"]) == r["val_psnr"][-1]]  # fmt: skip
    for r in capped:
        text += (
            f" {r['name']} still improved on the validation split at its last iteration "
            f"({len(r['val_psnr'])}): its score is a lower bound."
        )
    return text


_STOP_WORDS = {
    "epochs": "reaching the planned epochs (the cosine annealed)",
    "early_stopping": "early stopping",
    "time_budget": "the time budget",
}


def schedule_text(preset: dict) -> str:
    if preset["schedule"] == "cosine" and "anneal_epochs" in preset:
        # results of the 12-epoch cosine (before runs were planned): kept as they ran
        return (
            f"Adam, {preset['warmup_epochs']} epochs of linear warm-up to lr {preset['lr']:g}, "
            f"then a cosine down to {preset['lr'] / 100:g} over {preset['anneal_epochs']} "
            f"epochs; early stopping after {preset['early_stopping_patience']} epochs whose "
            f"validation loss fell by less than {100 * preset['min_improvement']:g} %, at most "
            f"{preset['epochs']} epochs. This short schedule stops 3-4 dB below what the same "
            "models reach when trained longer (see results/plateau): these scores compare "
            "learning speed, not capacity"
        )
    if preset["schedule"] == "cosine":
        headline = preset.get("headline_epochs")
        budget = (
            f"{preset['epochs']} planned epochs"
            if headline in (None, preset["epochs"])
            else f"planned {headline} epochs for the headline models and {preset['epochs']} "
            "for the others"
        )
        precision = ", bf16 autocast and channels-last" if preset.get("amp") else ", float32"
        return (
            f"Adam, {preset['warmup_epochs']} epoch(s) of linear warm-up to lr {preset['lr']:g}, "
            f"then a cosine down to {preset['lr'] / 100:g} over the rest of the {budget} "
            f"(no early stopping: every run ends annealed){precision}"
        )
    return (
        f"Adam lr {preset['lr']:g} halved after {preset['lr_patience']} epochs without "
        f"validation improvement, early stopping after {preset['early_stopping_patience']}, "
        f"at most {preset['epochs']} epochs"
    )


def _noise_text(preset: dict) -> str:
    if preset.get("noise"):
        return "with the NoiseModel default Poisson-Gaussian noise (as `coordgate dataset build`)"
    return "no noise (as in the paper)"


def _data_text(results: dict) -> str:
    preset, dataset = results["preset"], results["dataset"]
    frame = f"{preset['frame']}×{preset['frame']}"
    if preset["crop"]:
        regime = (
            f"{frame} sensor frames; models train on random {preset['crop']}×{preset['crop']} "
            f"crops ({preset['crops_per_frame']} per frame per epoch) that carry their sensor "
            f"origin, and are evaluated on whole frames through `coordgate.inference.predict`"
        )
    else:
        regime = f"{frame} sensor frames; models train and are evaluated on whole frames"
    return (
        f"Preset **{preset['name']}**: {regime}. {preset['images']} synthetic microscopy "
        f"frames (train {dataset.get('train')}, val {dataset.get('val')}, test "
        f"{dataset.get('test')}), base width {preset['base_channels']}, batch "
        f"{preset['batch_size']}; {schedule_text(preset)}. Seeds: {preset['headline_seeds']} "
        f"for the headline models (U-Net(3), U-Net(6), CG U-Net(3), care-unet), "
        f"{preset['seeds']} for the others (data seed {results['seed']}). Blur: the lens "
        f"{results['psf_field']}, {_noise_text(preset)}. Residual learning (output = input "
        f"+ network): {preset['residual']}. "
        f"Real images: {', '.join(results['real_images'])}."
    )


def budget_lines(rows: list[dict], untested: list[str] = ()) -> list[str]:
    """The budget tests (halving form of the doubling test) as report lines, and the
    models whose test is still to run (``untested``); none when no model had one."""
    tested = [r for r in rows if r.get("doubling")]
    if not tested and not untested:
        return []
    lines = [
        "## Is the budget enough? (halving test)",
        "",
        "Each model below was also trained (first seed) over half its budget, same schedule "
        "shape. A run is at its plateau when doubling its budget gains less than 0.15 dB; "
        "the gain from half to the full budget bounds what the next doubling would gain.",
        "",
        "| model | half budget | full budget | gain (dB) | verdict |",
        "|---|---|---|---|---|",
    ]
    short = []
    for row in tested:
        test = row["doubling"]
        if test["passed"]:
            verdict = f"at its plateau by {test['epochs']} epochs"
        else:
            verdict = "**not at its plateau**: the budget was not enough"
            short.append(f"{row['name']} (+{test['doubling_gain_db']:.2f} dB)")
        lines.append(
            f"| {row['name']} | {test['epochs']} epochs: {test['psnr']:.2f} dB | "
            f"{test['budget_epochs']} epochs: {test['doubled_psnr']:.2f} dB | "
            f"{test['doubling_gain_db']:+.2f} | {verdict} |"
        )
    lines.append("")
    if untested:
        lines += [
            f"Halving test not run yet (its half-budget run is still to train): "
            f"{', '.join(untested)}; their budgets are untested.",
            "",
        ]
    if short:
        lines += [
            f"Still gaining from the last doubling: {', '.join(short)}. Their scores are "
            "lower bounds, and any claim comparing them could change with a larger budget; "
            "the verdicts below hold for this budget only.",
            "",
        ]
    return lines


#: Why a model may score below the blurred input in a band of the real images.
_BAND_CAUSES = {
    "real_edge_psnr": "the sensor's edge band, where the lens blurs most and a frame's "
    "border hides half of each PSF",
    "real_inner_psnr": "the inside of the frame",
    "real_psnr": "the whole frame",
}


def harm_lines(results: dict) -> list[str]:
    """Report lines naming every model below the blurred input in a band of the real
    images (whole, inside, edge), with the likely cause."""
    baseline = results["blurred_input"]
    noisy = results["preset"].get("noise", False)
    # only uniform crop origins leave the sensor's edge with fewer training crops
    starved_edge = bool(results["preset"].get("crop")) and (
        results["preset"].get("crop_origins") == "uniform"
    )
    lines = []
    for row in results["models"]:
        for key, band in _BAND_CAUSES.items():
            if row.get(key) is None or row[key] >= baseline[key]:
                continue
            if row["params"] == 0:
                cause = "its regularisation amplifies noise" if noisy else "ringing"
            else:
                cause = "it learned synthetic microscopy only; real images' textures differ" + (
                    ", and it saw few training crops there"
                    if key == "real_edge_psnr" and starved_edge
                    else ""
                )
            lines.append(
                f"- **{row['name']}** is below the blurred input in {band}: "
                f"{row[key]:.2f} vs {baseline[key]:.2f} dB (likely cause: {cause})."
            )
    if not lines:
        return ["No model is below the blurred input in any band of the real images.", ""]
    return ["Below the blurred input on the real images:", "", *lines, ""]


def training_seconds(models: list[dict]) -> float:
    """One-thread training time of a study's model rows: every run and halving run."""
    runs = sum(run["train_s"] for row in models for run in row.get("runs", ()))
    return runs + sum(row["doubling"].get("half_train_s", 0.0) for row in models
                      if row.get("doubling"))  # fmt: skip


def report_markdown(results: dict) -> str:
    """The study's report, generated from ``results``."""
    baseline = results["blurred_input"]
    total = training_seconds(results["models"])
    claims = [Claim(**c) for c in results["claims"]] if "claims" in results else None
    title = (
        "# Sensor regime: crops that carry their sensor origin (beyond the paper)"
        if results["preset"]["crop"]
        else "# Deblurring study (paper §IV.B, Figs. 4b, 5, 6, 7)"
    )
    lines = [
        title,
        "",
        _data_text(results),
        "",
        markdown_table(results["models"], COLUMNS),
        "",
        convergence_note(results["models"]),
        f"Training took {total / 60:.0f} min in all (sum over models, seeds and halving "
        "runs, one torch thread per run).",
        "",
        f"The blurred input itself scores {baseline['psnr']:.2f} ± {baseline['psnr_std']:.2f} dB "
        f"PSNR and {baseline['ssim']:.3f} SSIM on the test frames, {baseline['real_psnr']:.2f} dB "
        f"on the real images ({baseline['real_inner_psnr']:.2f} dB more than "
        f"{baseline['edge_band_px']} px from the sensor's edge: the 'inside' column).",
        "",
        "PSNR: mean over the test frames and seeds (± std over the first seed's frames); SSIM "
        "likewise (whole frames, data range 1). Inference: milliseconds per 1-channel frame, "
        "CPU, eval mode (gates cached), timed while other runs shared the machine: see "
        "`benchmarks/results/models.json` for side-by-side speed ratios.",
        "",
        *harm_lines(results),
        *skipped_lines(results.get("skipped", [])),
        *budget_lines(results["models"], results.get("budget_untested", [])),
        "## The paper's claims at this scale",
        "",
        claims_markdown(claims if claims is not None else deblur_claims(results)),
        "",
        "## Figures",
        "",
        "- `fig4b.png` PSNR vs log10(parameters); `fig7.png` SSIM vs log10(parameters) "
        "(bars: standard error of the mean over the test frames)",
        "- `fig5.png` one test frame: sharp, blurred, every model (corner zoomed); "
        "`fig5_real.png` the same for a real image",
        "- `fig6.png` validation PSNR per epoch (first seed)",
        "- `error_vs_position.png` mean squared error per pixel over the whole frame and vs "
        "radius, for " + ", ".join(_MAP_MODELS),
        "",
        environment_section(results["environment"]),
    ]
    return "\n".join(lines)
