"""The 1D study's outputs: figures, results.json, results.csv and report.md.

Every number in the report comes from the results: :func:`write_outputs` draws the
figures and writes them with the claims that :func:`._conv1d_claims.judge` finds in the
results, each carrying the rule that decides its verdict, and :func:`rejudge` judges and
reports a finished study again from its ``results.json`` alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from coordgate import report
from coordgate.atomic import atomic_write_text
from coordgate.experiments._conv1d_claims import judge, psnr_text
from coordgate.experiments._varying_conv1d import __doc__ as MATRIX_NOTE
from coordgate.report import (
    Claim,
    Column,
    claims_markdown,
    environment_markdown,
    markdown_table,
    write_csv,
    write_json,
)

__all__ = [
    "ABLATION_TABLE",
    "CSV_KEYS",
    "TABLE",
    "rejudge",
    "render_report",
    "write_outputs",
]

Row = Mapping[str, object]

CSV_KEYS = (
    "name family layers kernel channels encoder_layers params psnr_median psnr_min psnr_max "
    "failed_runs capped_runs diverged_runs epochs_median infer_ms train_s train_cpu_s median_seed"
).split()

TABLE = (
    Column("name", "model"),
    Column("family", "family"),
    Column("params", "params", "d"),
    Column("psnr_median", "PSNR median (dB)", ".2f"),
    Column("psnr_min", "min", ".2f"),
    Column("psnr_max", "max", ".2f"),
    Column("infer_ms", "inference (ms / 2000)", ".3f"),
    Column("train_s", "train (s, median)", ".1f"),
    Column("epochs_median", "epochs", ".0f"),
    Column("failed_runs", "failed", "d"),
    Column("capped_runs", "hit epoch cap", "d"),
)

ABLATION_TABLE = (
    Column("name", "model"),
    Column("channels", "c", "d"),
    Column("encoder_layers", "p", "d"),
    Column("gate_params", "gate params", "d"),
    Column("params", "params", "d"),
    Column("psnr_median", "PSNR median (dB)", ".2f"),
    Column("psnr_min", "min", ".2f"),
    Column("psnr_max", "max", ".2f"),
    Column("epochs_median", "epochs", ".0f"),
    Column("capped_runs", "hit epoch cap", "d"),
)

FIGURES = {
    "fig3_matrices.png": "True H beside each model's effective matrix (median-PSNR seed).",
    "fig3_psnr_vs_time.png": "PSNR vs inference time; spot area proportional to parameters.",
    "learning_curves.png": "Validation PSNR per epoch (median-PSNR seed of each model).",
}
GATE_SIZE_FIGURE = {
    "gate_size.png": "Gate-size ablation: test PSNR of CG(1,13,c,p) vs the gate's parameters, "
    "one line per number p of encoder layers, points labelled with c.",
}


def _kernel_notes(rows: Sequence[Row]) -> list[str]:
    def twin_key(row: Row, kernel: int) -> tuple:
        return (
            row["family"],
            kernel,
            *(row.get(k) for k in ("layers", "channels", "encoder_layers")),
        )

    by_shape = {twin_key(r, r["kernel"]): r for r in rows}
    notes = []
    for row in rows:
        if row["kernel"] != 7:
            continue
        wide = by_shape.get(twin_key(row, 13))
        if wide is not None:
            notes.append(
                f"- {wide['name']} vs {row['name']}: "
                f"{wide['psnr_median'] - row['psnr_median']:+.2f} dB"
            )
    return notes


def _health(rows: Sequence[Row], failed_db: float) -> list[str]:
    lines = []
    for row in rows:
        if row["failed_runs"] or row["diverged_runs"]:
            lines.append(
                f"- {row['name']}: {row['failed_runs']} of {len(row['psnr_runs'])} runs failed to "
                f"train (more than {failed_db:g} dB below its best seed), "
                f"{row['diverged_runs']} diverged; runs: "
                + ", ".join(f"{p:.2f}" for p in row["psnr_runs"])
                + " dB"
            )
    capped = [r for r in rows if r["capped_runs"]]
    if capped:
        lines.append(
            "- Runs stopped by the epoch cap before the validation loss plateaued: "
            + ", ".join(f"{r['name']} ({r['capped_runs']})" for r in capped)
            + ". Their PSNR is a lower bound on what the architecture reaches."
        )
    return lines or ["- Every run trained (none failed, diverged or hit the epoch cap)."]


def _gate_size_notes(rows: Sequence[Row], negligible_db: float) -> list[str]:
    """What the gate-size ablation shows, in numbers."""
    if not rows:
        return ["- No gate-size ablation in this preset."]
    best = max(rows, key=lambda r: r["psnr_median"])
    small = min(
        (r for r in rows if r["psnr_median"] >= best["psnr_median"] - negligible_db),
        key=lambda r: r["gate_params"],
    )
    lines = [
        f"- Best: {psnr_text(best)} with a gate of {best['gate_params']} parameters; "
        + (
            f"no smaller gate comes within {negligible_db:g} dB of it."
            if small is best
            else f"the smallest gate within {negligible_db:g} dB of it: {small['name']} "
            f"({small['psnr_median']:.2f} dB, {small['gate_params']} gate parameters)."
        )
    ]
    for p in sorted({r["encoder_layers"] for r in rows}):
        line = sorted((r for r in rows if r["encoder_layers"] == p), key=lambda r: r["channels"])
        rising = all(b["psnr_median"] > a["psnr_median"] for a, b in zip(line, line[1:]))
        lines.append(
            f"- p = {p}: "
            + ", ".join(f"c = {r['channels']}: {r['psnr_median']:.2f}" for r in line)
            + " dB"
            + ("; PSNR rises with every added channel." if rising and len(line) > 1 else ".")
        )
    return lines


def _loss_words(loss: str) -> str:
    """The training loss named in the setup: ``"auto"`` is each model's own (MSE here)."""
    return {"auto": "MSE", "mse": "MSE", "mae": "mean absolute error"}[loss]


def _timing(result: Mapping[str, object]) -> str:
    workers = result["workers"]
    reused = result["resumed_runs"]
    return (
        f"This invocation took {result['wall_s']:.0f} s with {workers} training process(es)"
        + (f", reusing {reused} runs finished earlier in OUT/runs" if reused else "")
        + f". Training took {result['train_s_total']:.0f} s of wall time summed over runs and "
        f"{result['train_cpu_s_total']:.0f} s of CPU time (one thread each), i.e. about "
        f"{result['train_cpu_s_total'] / workers / 60:.1f} min on {workers} otherwise idle "
        "core(s); wall time above that means other work shared the machine."
    )


def render_report(result: Mapping[str, object]) -> str:
    """report.md from the results alone: preset, machine, setup, figures, the stored claims
    with their verdicts and rules, tables."""
    config, rows = result["config"], result["models"]
    checked = [Claim(**claim) for claim in result["claims"]]
    criteria = result["criteria"]
    ablation = result["ablation"]
    captions = {**FIGURES, **GATE_SIZE_FIGURE}
    verdicts = ", ".join(f"({i}) {c.verdict}" for i, c in enumerate(checked, 1))
    lines = [
        "# §IV.A reproduced: learning a 1D spatially-varying convolution",
        "",
        f"Preset **{result['preset']}**, seeds {result['seeds']}, {len(rows)} models.",
        "",
        _timing(result),
        "",
        environment_markdown(result["environment"]),
        "",
        "## Setup",
        "",
        f"- Data: {config['samples']} inputs m ~ U(0,1)^{config['size']} (seed "
        f"{config['data_seed']}), n = H m, split 80/10/10 into train/validation/test.",
        f"- Training: Adam (default betas), lr {config['lr']:g}, batch {config['batch_size']}, "
        f"{_loss_words(config['loss'])} loss; lr multiplied by {config['lr_factor']:g} after "
        f"{config['lr_patience']} epochs without a "
        f"{100 * config['min_improvement']:g}% improvement of the validation loss; stopped "
        f"after {config['early_stopping_patience']} such epochs or at {config['epochs']} "
        "epochs; best validation weights kept. One torch thread per training.",
        "- Models (§IV.A): CNN(L,k,c) = L 'same'-padded convolutions of kernel k, c channels "
        "(the last one), ReLU between; CCNN(L,k,c) = the same with every convolution a "
        "CoordConv (a coordinate channel appended to its input); CG(L,k,c,p) = L convolutions "
        "to c channels, a CoordGate whose encoder has p fully-connected layers of c nodes "
        "(GELU between, gate starting at one), a 1x1 convolution to one channel; "
        "CG-random = CG whose encoder reads one fixed U(-1,1) number per position (seeded by "
        "the run's seed) instead of the coordinate.",
        "- Baselines (§II): PAC(L,k,c) = CNN(L,k,c) whose convolutions are pixel-adaptive "
        "(Su et al. 2019): the shared kernel times exp(-|f_i - f_j|^2 / 2) of guidance features "
        "f = g(C) that a pixel-wise MLP learns from the coordinate (raw coordinates would give "
        "the same weights at every position), starting close to a plain convolution; "
        "LCN(L,k) = L locally-connected layers of kernel k with one channel: every output "
        "sample has its own kernel and bias (LCN(1,13) can represent H but for entries more "
        "than 6 samples off the diagonal, at most 0.11 % of the peak).",
        "- PSNR = 10 log10(1 / MSE) on the test split; median and range over seeds. "
        f"Inference: one forward pass of a batch of {config['infer_batch']}, median of "
        f"{config['infer_repeats']} repeats, all models in the same run, one thread.",
        "- The matrix H (Eq. 5 as we read it):",
        "",
        *("  > " + line.strip() for line in MATRIX_NOTE.strip().splitlines()[2:] if line.strip()),
        "",
        "## Figures",
        "",
        *(f"![{captions[name]}]({name})\n\n{captions[name]}\n" for name in result["figures"]),
        "## Claims",
        "",
        "Each claim states the rule its verdict follows from; PSNR medians and ranges are "
        "over seeds.",
        "",
        claims_markdown(checked),
        "",
        "## Training health",
        "",
        *_health(rows, criteria["failed_db"]),
        "",
        "## Kernel size (k = 7 truncates the sigma = 2 Gaussian)",
        "",
        *(_kernel_notes(rows) or ["- No model pairs differing only in k = 7 vs 13."]),
        "",
        "## Gate size (supplement): CG(1,13,c,p)",
        "",
        f"Seeds {ablation['seeds']} for every cell (fewer than the main table's, to keep the "
        "study's time in bounds; cells also in the main table use these seeds here too). "
        "Gate parameters: the CoordGate's encoder (p layers of c nodes on one coordinate). "
        "With p = 1 the encoder is one linear layer, so the gate is affine in the coordinate "
        "and any c >= 2 spans the same models: a convolution plus the coordinate times another.",
        "",
        *_gate_size_notes(ablation["models"], criteria["negligible_db"]),
        "",
        "## Closing note",
        "",
        f"Verdicts: {verdicts}. The numbers behind them:",
        "",
        markdown_table(rows, TABLE),
        "",
        *(
            ["Gate-size ablation:", "", markdown_table(ablation["models"], ABLATION_TABLE), ""]
            if ablation["models"]
            else []
        ),
    ]
    return "\n".join(lines)


def write_outputs(
    out: Path,
    result: Mapping[str, object],
    true_matrix: torch.Tensor,
    matrices: Mapping[str, torch.Tensor],
    median_runs: Mapping[str, Mapping[str, object]],
) -> dict[str, object]:
    """Figures, results.json, results.csv and report.md into ``out``; returns the results
    written: ``result`` (left unchanged) with the figures' names and the judged claims.

    ``matrices`` and ``median_runs`` (records with ``psnr`` and ``val_loss``) belong to each
    model's median-PSNR run."""
    from coordgate.plots.conv1d import (
        plot_gate_size,
        plot_learning_curves,
        plot_matrices,
        plot_psnr_vs_time,
    )

    rows = result["models"]
    psnr = {label: run["psnr"] for label, run in median_runs.items()}
    curves = {label: run["val_loss"] for label, run in median_runs.items()}
    plot_matrices(true_matrix, matrices, psnr, out / "fig3_matrices.png")
    plot_psnr_vs_time(rows, out / "fig3_psnr_vs_time.png")
    plot_learning_curves(
        curves, {r["name"]: r["family"] for r in rows}, out / "learning_curves.png"
    )
    figures = list(FIGURES)
    if result["ablation"]["models"]:
        plot_gate_size(result["ablation"]["models"], out / "gate_size.png")
        figures += list(GATE_SIZE_FIGURE)
    final = {**result, "figures": figures, "claims": [c.to_dict() for c in judge(result)]}
    write_json(final, out / "results.json")
    write_csv(rows, out / "results.csv", CSV_KEYS)
    atomic_write_text(out / "report.md", render_report(final))
    return final


def rejudge(out: str | Path) -> dict[str, object]:
    """Judge the claims and write report.md again from ``out/results.json`` alone (no
    training; figures and results.csv stay as they are); returns the new results."""
    return report.rejudge(out, judge, render_report)
