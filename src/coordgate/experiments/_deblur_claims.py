"""Claims of the deblurring study (paper §IV.B), each a :class:`~coordgate.claims.Rule` judged
from ``results`` with the paired comparison rule of :mod:`coordgate.claims`."""

from __future__ import annotations

from coordgate.claims import (
    COMPARISON_RULE,
    EQUIVALENCE_DB,
    Rule,
    best_network,
    combine_verdicts,
    compare,
    model_row,
)
from coordgate.report import Claim

__all__ = ["deblur_claims"]


def _beats(a: str, b: str, key: str = "psnr_frames", note: str = ""):
    def judge(results: dict) -> tuple[str, str]:
        comparison = compare(results, a, b, key)
        return comparison.verdict, note + comparison.text()

    return judge


def _cg3_vs_unet6(results: dict) -> tuple[str, str]:
    comparison = compare(results, "cg-unet3", "unet6")
    ratio = model_row(results, "unet6")["params"] / model_row(results, "cg-unet3")["params"]
    return comparison.verdict, f"{comparison.text()}; U-Net(6) has {ratio:.0f}× the parameters"


def _each_depth(results: dict) -> tuple[str, str]:
    have = {r["name"] for r in results["models"]}
    pairs = [
        (f"cg-unet{d}", f"unet{d}") for d in range(3, 7) if {f"cg-unet{d}", f"unet{d}"} <= have
    ]
    comparisons = [compare(results, a, b) for a, b in pairs]
    text = "; ".join(f"{c.text()} ({c.verdict})" for c in comparisons)
    return combine_verdicts([c.verdict for c in comparisons]), text


def _depth(results: dict) -> tuple[str, str]:
    names = [f"unet{d}" for d in range(3, 7)]
    steps = [compare(results, b, a) for a, b in zip(names, names[1:])]
    verdicts = [s.verdict for s in steps[:-1]]
    last = steps[-1]
    # "only marginally better": the last step not significantly larger than zero or
    # smaller than the step before it
    marginal = last.verdict != "supported" or last.delta < steps[-2].delta
    verdict = combine_verdicts(verdicts + ["supported" if marginal else "not supported"])
    return verdict, "; ".join(s.text() for s in steps)


def _coordconv_like_unet6(results: dict) -> tuple[str, str]:
    comparison = compare(results, "coordconv-unet6", "unet6")
    verdict = "supported" if comparison.equivalent else "not supported"
    return verdict, (
        f"{comparison.text()} ('nearly identical' taken as |Δ| ≤ max({EQUIVALENCE_DB} dB, 2u))"
    )


def _multiwiener_between(results: dict) -> tuple[str, str]:
    above = compare(results, "multiwiener-unet6", "unet6")
    below = compare(results, "cg-unet3", "multiwiener-unet6")
    return combine_verdicts([above.verdict, below.verdict]), f"{above.text()}; {below.text()}"


def _adaptive_baselines(results: dict) -> tuple[str, str]:
    cg = model_row(results, "cg-unet3")
    parts, verdicts = [], []
    for name in ("lcn-unet3", "pac-unet3"):
        other = model_row(results, name)
        comparison = compare(results, "cg-unet3", name)
        # "matches": not significantly worse
        verdicts.append("not supported" if comparison.verdict == "not supported" else "supported")
        parts.append(
            f"{comparison.text()}; {name} has {other['params']:,} parameters, "
            f"{other['train_s']:.0f} s training, {other['infer_ms']:.2f} ms/frame "
            f"(cg-unet3: {cg['params']:,}, {cg['train_s']:.0f} s, {cg['infer_ms']:.2f} ms)"
        )
    return combine_verdicts(verdicts), "; ".join(parts)


def _network_beats_classical(results: dict) -> tuple[str, str]:
    """The network with the best validation PSNR (chosen without the test frames) against
    each classical method with the true field, combined; CG U-Net(3)'s comparisons beside."""
    best = best_network(results)
    parts, verdicts = [f"best network on the val split: {best}"], []
    for name in ("sv-rl", "sv-wiener"):
        comparison = compare(results, best, name)
        verdicts.append(comparison.verdict)
        parts.append(
            f"{comparison.text()} ({name}: {model_row(results, name)['stopped']}, chosen on "
            "the val split)"
        )
    if best != "cg-unet3":
        parts += [f"{compare(results, 'cg-unet3', name).text()}" for name in ("sv-rl", "sv-wiener")]
    return combine_verdicts(verdicts), "; ".join(parts)


def _ssim_follows_psnr(results: dict) -> tuple[str, str]:
    rows = results["models"]
    n = len(rows)
    if n < 3:
        return "inconclusive", f"a rank correlation needs 3 or more models, this run has {n}"
    rank_p = _ranks([r["psnr"] for r in rows])
    rank_s = _ranks([r["ssim"] for r in rows])
    rho = 1 - 6 * sum((a - b) ** 2 for a, b in zip(rank_p, rank_s)) / (n * (n * n - 1))
    verdict = "supported" if rho >= 0.8 else "partly supported" if rho >= 0.5 else "not supported"
    return verdict, f"Spearman rank correlation of PSNR and SSIM over the {n} models: ρ = {rho:.2f}"


def _ranks(values: list[float]) -> list[int]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0] * len(values)
    for rank, i in enumerate(order):
        ranks[i] = rank
    return ranks


_RULES = (
    Rule(
        "(§II) CoordGate matches locally-connected and pixel-adaptive U-Nets at lower cost",
        "LCNs need far more parameters and run slowly; PAC's fixed pairwise form cannot use "
        "fast convolutions",
        ("cg-unet3", "lcn-unet3", "pac-unet3"),
        _adaptive_baselines,
        COMPARISON_RULE + "; 'matches' = cg-unet3 not significantly worse",
    ),
    Rule(
        "Adding CoordGate improves the U-Net it is added to",
        "the addition of CoordGate causes a large increase in performance and efficiency",
        ("cg-unet3", "unet3"),
        _each_depth,
        COMPARISON_RULE + "; one comparison per depth, combined",
    ),
    Rule(
        "CG U-Net(3) beats U-Net(6) with ~60× fewer parameters",
        "CG U-Net(3) outperforms U-Net(6) despite 60× fewer parameters",
        ("cg-unet3", "unet6"),
        _cg3_vs_unet6,
    ),
    Rule(
        "PSNR grows with U-Net depth, U-Net(6) only marginally above U-Net(5)",
        "PSNR increases with depth; U-Net(6) only marginally better than U-Net(5)",
        ("unet3", "unet4", "unet5", "unet6"),
        _depth,
        COMPARISON_RULE + "; each step deeper must be supported except the last, which must "
        "be within noise or smaller than the step before",
    ),
    Rule(
        "CoordConv-UNet performs like U-Net(6)",
        "CoordConv-UNet performed nearly identically to U-Net(6)",
        ("coordconv-unet6", "unet6"),
        _coordconv_like_unet6,
        f"supported if |Δ| ≤ max({EQUIVALENCE_DB} dB, 2u), with Δ and u as in: " + COMPARISON_RULE,
    ),
    Rule(
        "MultiWienerNet beats U-Net(6) but loses to CG U-Net(3)",
        "MultiWienerNet improves over U-Net(6) but is outperformed by the shallower "
        "CoordGate model",
        ("multiwiener-unet6", "unet6", "cg-unet3"),
        _multiwiener_between,
    ),
    Rule(
        "CG U-Net(6) beats CG U-Net(3)",
        "CG U-Net(6) performs better than CG U-Net(3)",
        ("cg-unet6", "cg-unet3"),
        _beats("cg-unet6", "cg-unet3"),
    ),
    Rule(
        "CoordGate's error is much lower near the centre",
        "significantly lower loss close to the centre of the image for CoordGate",
        ("cg-unet3", "unet6"),
        _beats("cg-unet3", "unet6", "centre_psnr_frames", "PSNR within radius 0.5 of the centre: "),
    ),
    Rule(
        "SSIM follows PSNR",
        "SSIM results follow the trend of the PSNR (appendix, Fig. 7)",
        (),
        _ssim_follows_psnr,
        "Spearman ρ of the models' PSNR and SSIM: supported ≥ 0.8, partly ≥ 0.5",
    ),
    Rule(
        "(ours) CG U-Net(3) beats CARE's configuration at equal budget",
        "not in the paper: care-unet is CAREamics' CARE U-Net (depth 2, 32 channels, batch "
        "norm, MAE loss), trained by the same engine on the same data and schedule",
        ("cg-unet3", "care-unet"),
        _beats("cg-unet3", "care-unet"),
    ),
    Rule(
        "(ours) a trained network beats classical SV deconvolution with the true PSF field",
        "not in the paper: Richardson-Lucy and Wiener on the true field, their iteration "
        "count and balance chosen on the validation split, no training",
        ("cg-unet3", "sv-rl", "sv-wiener"),
        _network_beats_classical,
        COMPARISON_RULE + "; the network with the best validation PSNR against each "
        "classical method, combined (CG U-Net(3)'s comparisons shown beside)",
    ),
    Rule(
        "(ours) the advantage carries over to real images blurred by the same lens",
        "not in the paper: real microscopy/astronomy images shipped with scikit-image",
        ("cg-unet3", "unet6"),
        _beats("cg-unet3", "unet6", "real_psnr_frames", "on real images: "),
    ),
    Rule(
        "(ours) away from the sensor's edge, the advantage carries over to real images",
        "not in the paper: PSNR of the real images over the pixels more than an eighth of "
        "the frame from the sensor's edge",
        ("cg-unet3", "unet6"),
        _beats("cg-unet3", "unet6", "real_inner_psnr_frames", "on real images, inside: "),
    ),
)


def deblur_claims(results: dict) -> list[Claim]:
    """Each claim of §IV.B beside our numbers, with a verdict by the module's rule."""
    return [rule.claim(results) for rule in _RULES]
