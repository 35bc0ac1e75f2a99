"""Outputs of the lens study, generated from its results alone: ``results.json``,
``lenses.png`` (each lens's PSFs and what CoordGate adds on it) and ``report.md``."""

from __future__ import annotations

from pathlib import Path

from coordgate.atomic import atomic_write_text
from coordgate.claims import EQUIVALENCE_DB, comparison, from_row
from coordgate.experiments.deblur import budget_lines, schedule_text
from coordgate.optics import PSFField
from coordgate.plots.lenses import lens_gain_figure
from coordgate.report import Claim, claims_markdown, environment_section, write_json

__all__ = ["advice", "report_markdown", "write_outputs"]

_MODELS = ("unet3", "cg-unet3", "cg-unet3-narrow", "unet6", "coordconv-unet6", "care-unet",
           "sv-wiener", "sv-rl")  # fmt: skip
_HEADERS = {"unet3": "U-Net(3)", "cg-unet3": "CG U-Net(3)",
            "cg-unet3-narrow": "CG U-Net(3), narrow gates", "unet6": "U-Net(6)",
            "coordconv-unet6": "CoordConv-UNet(6)", "care-unet": "care-unet",
            "sv-wiener": "SV Wiener (true field)", "sv-rl": "SV RL (true field)"}  # fmt: skip


def write_outputs(results: dict, out: Path) -> None:
    """results.json, lenses.png and report.md in ``out`` (each lens's own outputs are in
    ``out/LENS``)."""
    write_json(results, out / "results.json")
    psfs = {
        lens["name"]: PSFField.from_config(lens["psf_field"]).grid(3) for lens in results["lenses"]
    }
    lens_gain_figure(psfs, results["lenses"], out / "lenses.png")
    atomic_write_text(out / "report.md", report_markdown(results))


def _delta(row: dict) -> str:
    return f"{row['delta']:+.2f} ± {row['uncertainty']:.2f} dB"


def _gain_sentence(row: dict | None) -> str:
    if row is None:
        return "CoordGate's gain at depth 3 was not measured"
    return {
        "supported": f"CoordGate adds {_delta(row)} to U-Net(3)",
        "within noise": f"CoordGate adds nothing measurable to U-Net(3) ({_delta(row)})",
        "not supported": f"CoordGate makes U-Net(3) worse ({_delta(row)})",
    }[row["verdict"]]


def _depth_sentence(row: dict | None, ratio: float) -> str:
    if row is None:
        return "CG U-Net(3) was not compared with U-Net(6)"
    return {
        "supported": f"CG U-Net(3) beats U-Net(6) by {_delta(row)} with 1/{ratio:.0f} of its "
        "parameters: choose the CG U-Net",
        "within noise": f"CG U-Net(3) matches U-Net(6) within noise ({_delta(row)}) with "
        f"1/{ratio:.0f} of its parameters: choose it where memory or speed matters",
        "not supported": f"U-Net(6) beats CG U-Net(3) by {-row['delta']:.2f} ± "
        f"{row['uncertainty']:.2f} dB: a deep plain U-Net is the better choice if its "
        f"{ratio:.0f}× parameters are affordable",
    }[row["verdict"]]


def _real_scores(lens: dict, key: str, blurred: float) -> str:
    """CG U-Net(3)'s real-image PSNR ``key`` beside the plain U-Nets' and the input's."""
    models = lens["models"]
    plain = ", ".join(
        f"{_HEADERS[n]} {models[n][key]:.2f}" for n in ("unet3", "unet6") if n in models
    )
    return f"{models['cg-unet3'][key]:.2f} dB ({plain}; blurred input {blurred:.2f})"


def _real_sentence(lens: dict) -> str:
    models = lens["models"]
    if "cg-unet3" not in models:
        return ""
    whole, inner = lens["blurred_input_real"], lens["blurred_input_real_inner"]
    text = (
        f" On the real images CG U-Net(3) scores {_real_scores(lens, 'real_psnr', whole)}, "
        f"and more than {lens['edge_band_px']} px from the sensor's edge "
        f"{_real_scores(lens, 'real_inner_psnr', inner)}"
    )
    if models["cg-unet3"]["real_psnr"] < whole:
        text += (
            ": it makes whole real frames worse, so check a model on your own images, "
            "near the sensor's edge too, before using it"
        )
    return text + "."


def advice(lens: dict) -> str:
    """What the numbers of one lens say to a user choosing a model."""
    models = lens["models"]
    ratio = (
        models["unet6"]["params"] / models["cg-unet3"]["params"]
        if {"unet6", "cg-unet3"} <= set(models)
        else float("nan")
    )
    text = (
        f"**{lens['name']}.** {_gain_sentence(comparison(lens, 'cg-unet3', 'unet3'))}; "
        f"{_depth_sentence(comparison(lens, 'cg-unet3', 'unet6'), ratio)}."
    )
    return (
        text + _coordconv_sentence(lens) + _gates_sentence(lens) + _classical_sentence(lens)
        + _real_sentence(lens)
    )  # fmt: skip


def _gates_sentence(lens: dict) -> str:
    row = comparison(lens, "cg-unet3-narrow", "cg-unet3")
    if row is None:
        return ""
    like = from_row(row).equivalent
    return (
        f" Gates as wide as their channels change CG U-Net(3) by {_delta(row)}: "
        + ("they perform like the 32-wide ones and train faster" if like
           else f"more than max({EQUIVALENCE_DB} dB, 2u) apart, so not alike")
        + "."
    )  # fmt: skip


def _classical_sentence(lens: dict) -> str:
    rows = lens.get("versus_classical") or []
    if not rows:
        return ""
    parts = []
    for row in rows:
        method = _HEADERS[row["b"]]
        parts.append({
            "supported": f"beats {method} by {_delta(row)}",
            "within noise": f"matches {method} within noise ({_delta(row)})",
            "not supported": f"loses to {method} by {-row['delta']:.2f} ± "
            f"{row['uncertainty']:.2f} dB",
        }[row["verdict"]])  # fmt: skip
    return (
        f" The best network on the validation split ({_HEADERS[lens['best_network']]}) "
        f"{' and '.join(parts)}, with the true field known."
    )


def _coordconv_sentence(lens: dict) -> str:
    inputs = comparison(lens, "coordconv-unet6", "unet6")
    against = comparison(lens, "cg-unet3", "coordconv-unet6")
    if inputs is None or against is None:
        return ""
    verdict = against["verdict"]
    outcome = {
        "supported": f"CG U-Net(3) beats it by {_delta(against)}",
        "within noise": f"it does as well as CG U-Net(3) within noise ({_delta(against)})",
        "not supported": f"it beats CG U-Net(3) by {-against['delta']:.2f} ± "
        f"{against['uncertainty']:.2f} dB",
    }[verdict]
    return (
        f" Coordinates as input channels change U-Net(6) by {_delta(inputs)} "
        f"({inputs['verdict']}); {outcome}."
    )


def _scores_table(results: dict) -> list[str]:
    present = [m for m in _MODELS if any(m in lens["models"] for lens in results["lenses"])]
    header = "| lens | blurred input | " + " | ".join(_HEADERS[m] for m in present) + " |"
    lines = [header, "|" + "---|" * (len(present) + 2)]
    for lens in results["lenses"]:
        cells = []
        for m in present:
            row = lens["models"].get(m)
            seeds = row and ", ".join(f"{v:.2f}" for v in row["psnr_seeds"])
            cells.append("—" if row is None else f"{row['psnr']:.2f} ({seeds})")
        lead = f"| {lens['name']} | {lens['blurred_input']:.2f} | "
        lines.append(lead + " | ".join(cells) + " |")
    return lines


def _comparisons_table(results: dict) -> list[str]:
    pairs = [(c["a"], c["b"]) for c in results["lenses"][0]["comparisons"]]
    header = "| lens | " + " | ".join(f"{a} − {b}" for a, b in pairs) + " |"
    lines = [header, "|" + "---|" * (len(pairs) + 1)]
    for lens in results["lenses"]:
        cells = []
        for a, b in pairs:
            row = comparison(lens, a, b)
            cells.append("—" if row is None else f"{_delta(row)} ({row['verdict']})")
        lines.append(f"| {lens['name']} | " + " | ".join(cells) + " |")
    return lines


def _bands(row: dict, keys: tuple[str, ...] = ("real_psnr", "real_inner_psnr", "real_edge_psnr")):
    """Whole / inside / edge real-image PSNR of a model row (or, with ``keys``, the lens's
    blurred input)."""
    return " / ".join("—" if row.get(k) is None else f"{row[k]:.2f}" for k in keys)


_INPUT_BANDS = ("blurred_input_real", "blurred_input_real_inner", "blurred_input_real_edge")


def _real_table(results: dict) -> list[str]:
    present = [m for m in _MODELS if any(m in lens["models"] for lens in results["lenses"])]
    lines = ["| lens | blurred input | " + " | ".join(_HEADERS[m] for m in present) + " |"]
    lines.append("|" + "---|" * (len(present) + 2))
    for lens in results["lenses"]:
        cells = [_bands(lens["models"][m]) if m in lens["models"] else "—" for m in present]
        blurred = _bands(lens, _INPUT_BANDS)
        lines.append(f"| {lens['name']} | {blurred} | " + " | ".join(cells) + " |")
    return lines


def _harm(results: dict) -> list[str]:
    lines = []
    for lens in results["lenses"]:
        lines += [f"**{lens['name']}.** " + lens["harm"][0], *lens["harm"][1:]]
    return lines


def _setup_text(results: dict) -> str:
    preset = results["preset"]
    hours = sum(lens.get("training_s", 0.0) for lens in results["lenses"]) / 3600
    return (
        f"Preset **{preset['name']}**: {preset['frame']}×{preset['frame']} sensor frames of "
        f"synthetic microscopy ({preset['images']} frames, split 80/10/10), blurred whole by "
        f"each lens; models train on random {preset['crop']}×{preset['crop']} crops that carry "
        "their sensor origin and are evaluated on whole test frames through "
        "`coordgate.inference.predict`, as in the deblurring study's sensor regime "
        f"(residual learning, base width {preset['base_channels']}; {schedule_text(preset)}). "
        f"Seeds: {preset['headline_seeds']} per model (data seed {results['seed']}); "
        "each lens has the same sharp frames, so differences between lenses are differences "
        "of blur alone. SV Wiener and SV Richardson–Lucy deconvolve with the lens's true "
        "field, their setting chosen on the validation split (each lens's own report states "
        f"it). Training took {hours:.1f} h in all (sum over lenses, models, seeds and halving "
        "runs, one torch thread per run)."
    )


def _budget(results: dict) -> list[str]:
    for lens in results["lenses"]:
        rows = [{"name": name, **row} for name, row in lens["models"].items()]
        if any(row.get("doubling") for row in rows):
            return [f"On the {lens['name']} lens:", "", *budget_lines(rows)]
    return []


def report_markdown(results: dict) -> str:
    """The study's report, generated from ``results``."""
    claims = [Claim(**c) for c in results["claims"]]
    lenses = results["lenses"]
    lines = [
        "# Where CoordGate pays: lenses whose blur cannot be read from the image",
        "",
        _setup_text(results),
        "",
        "## The lenses",
        "",
        *[f"- **{lens['name']}**: {lens['description']}; `{lens['psf_field']}`" for lens in lenses],
        "",
        "![PSFs and gains per lens](lenses.png)",
        "",
        "`lenses.png`: top, each lens's PSFs at 3×3 field points (square root of intensity); "
        "bottom, each comparison's paired test-PSNR difference Δ per lens, whiskers ±2u.",
        "",
        "## Test PSNR (dB): mean over seeds (each seed)",
        "",
        *_scores_table(results),
        "",
        "## Differences (paired per test frame, mean over seeds ± u) and verdicts",
        "",
        *_comparisons_table(results),
        "",
        "## When to choose a CG U-Net",
        "",
        *[line for lens in lenses for line in (advice(lens), "")],
        "## Claims",
        "",
        claims_markdown(claims),
        "",
        "## Real images (PSNR, dB, mean over seeds and images: whole frame / more than an "
        "eighth of the frame from the sensor's edge / within it)",
        "",
        *_real_table(results),
        "",
        *_harm(results),
        *_budget(results),
        "## Per lens",
        "",
        *[
            f"- `{lens['name']}/`: `report.md` (every model and seed, convergence), "
            "`error_vs_position.png` (error over the sensor), `fig5.png` (a test frame)"
            for lens in lenses
        ],
        "",
        _convergence(results),
        "",
        environment_section(results["environment"]),
    ]
    return "\n".join(lines)


def _convergence(results: dict) -> str:
    stops = sorted({s for lens in results["lenses"] for s in lens["stopped"]})
    return f"How the runs ended, over all lenses, models and seeds: {', '.join(stops)}."
