"""Claims of the lens study, judged from its per-lens comparisons with the studies' paired
rule (:mod:`coordgate.claims`): each comparison is stored as a row of
``results.json`` and judged again from it."""

from __future__ import annotations

from coordgate.claims import (
    COMPARISON_RULE,
    Comparison,
    combine_verdicts,
    comparison,
    per_lens_claim,
)
from coordgate.report import Claim

__all__ = ["lens_claims"]


def _network_beats_classical(results: dict) -> Claim:
    """Per lens, the network with the best validation PSNR against SV Wiener and SV
    Richardson–Lucy with the true field (each tuned on the validation split)."""
    title = "(ours) a trained network beats classical SV deconvolution with the true PSF field"
    paper = (
        "not in the paper: per lens, the network with the best validation PSNR against SV "
        "Wiener and SV Richardson–Lucy on the low-rank operator of the true field, their "
        "setting chosen on the validation split"
    )
    parts, verdicts = [], []
    for lens in results["lenses"]:
        rows = lens.get("versus_classical") or []
        if not rows:
            continue
        verdict = combine_verdicts([row["verdict"] for row in rows])
        verdicts.append(verdict)
        texts = "; ".join(row["text"] for row in rows)
        parts.append(f"{lens['name']}: best network on val {lens['best_network']}: {texts} "
                     f"({verdict})")  # fmt: skip
    if not verdicts:
        missing = "not measured: no lens has a network and a classical method"
        return Claim(title, paper, missing, "inconclusive")
    return Claim(title, paper, "; ".join(parts), combine_verdicts(verdicts), COMPARISON_RULE)


def _gain_grows(results: dict) -> Claim:
    """CoordGate's gain at depth 3 on each other lens against the default lens's."""
    title = "(ours) CoordGate pays more where the blur cannot be read from the image"
    paper = (
        "not in the paper: the gain cg-unet3 − unet3 on each lens against the default "
        "(defocus-only) lens"
    )
    rule = (
        "difference of the gains, u = the two gains' uncertainties added in quadrature; "
        "supported if larger than 2u and every seed's gain difference agrees in sign"
    )
    by_name = {lens["name"]: comparison(lens, "cg-unet3", "unet3") for lens in results["lenses"]}
    reference = by_name.get("defocus")
    others = [(n, row) for n, row in by_name.items() if n != "defocus" and row is not None]
    if reference is None or not others:
        missing = "not measured: needs the defocus lens and one other"
        return Claim(title, paper, missing, "inconclusive", rule)
    parts, verdicts = [], []
    for name, row in others:
        difference = Comparison(
            name,
            "defocus",
            row["delta"] - reference["delta"],
            (row["uncertainty"] ** 2 + reference["uncertainty"] ** 2) ** 0.5,
            tuple(x - y for x, y in zip(row["seed_deltas"], reference["seed_deltas"])),
        )
        verdicts.append(difference.verdict)
        parts.append(
            f"{name}: gain {row['delta']:+.2f} dB vs defocus {reference['delta']:+.2f} dB, "
            f"difference {difference.delta:+.2f} ± {difference.uncertainty:.2f} dB "
            f"({difference.verdict})"
        )
    return Claim(title, paper, "; ".join(parts), combine_verdicts(verdicts), rule)


_CLAIMS = (
    per_lens_claim(
        "Adding CoordGate improves U-Net(3), lens by lens",
        "the addition of CoordGate causes a large increase in performance and efficiency",
        "cg-unet3",
        "unet3",
    ),
    per_lens_claim(
        "CG U-Net(3) beats U-Net(6), lens by lens",
        "CG U-Net(3) outperforms U-Net(6) despite 60× fewer parameters",
        "cg-unet3",
        "unet6",
    ),
    per_lens_claim(
        "Coordinates as input channels add nothing: CoordConv-UNet(6) performs like U-Net(6)",
        "CoordConv-UNet performed nearly identically to U-Net(6)",
        "coordconv-unet6",
        "unet6",
        equivalence=True,
    ),
    per_lens_claim(
        "(ours) CG U-Net(3) beats CoordConv-UNet(6), lens by lens",
        "not in the paper: gating by position against coordinates fed as input channels",
        "cg-unet3",
        "coordconv-unet6",
    ),
    per_lens_claim(
        "(ours) CG U-Net(3) beats CARE's configuration at equal budget, lens by lens",
        "not in the paper: care-unet is CAREamics' CARE U-Net (depth 2, 32 channels), "
        "trained by this project's engine on the same data and budget",
        "cg-unet3",
        "care-unet",
    ),
    _network_beats_classical,
    per_lens_claim(
        "(ours) Gates as wide as their channels perform like 32-wide gates, lens by lens",
        "the paper's CG(L,k,c,p) encodes coordinates with p layers of c nodes; the U-Net "
        "experiments do not say how wide the gates are",
        "cg-unet3-narrow",
        "cg-unet3",
        equivalence=True,
    ),
    _gain_grows,
)


def lens_claims(results: dict) -> list[Claim]:
    """The lens study's claims, judged from the combined results."""
    return [claim(results) for claim in _CLAIMS]
