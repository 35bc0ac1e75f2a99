"""The deblurring study's verdict rule: paired per-frame differences, seeds, noise."""

import math

import pytest

from coordgate.claims import combine_verdicts, compare
from coordgate.experiments._deblur_claims import deblur_claims


def _row(name: str, seeds: list[list[float]], params: int = 1000) -> dict:
    mean = sum(map(sum, seeds)) / sum(map(len, seeds))
    return {
        "name": name,
        "params": params,
        "psnr": mean,
        "ssim": mean / 40,
        "train_s": 1.0,
        "infer_ms": 1.0,
        "psnr_frames": seeds,
        "centre_psnr_frames": seeds,
        "real_psnr_frames": seeds,
        "real_inner_psnr_frames": seeds,
        "val_psnr": [mean - 1, mean],
    }


def _frames(base: float, n: int = 40, wiggle: float = 0.3, phase: float = 0.0) -> list[float]:
    return [base + wiggle * math.sin(1.7 * i + phase) for i in range(n)]


def test_clear_paired_difference_is_supported_and_its_reverse_not():
    results = {
        "models": [
            _row("cg-unet3", [_frames(30.5), _frames(30.6)]),
            _row("unet3", [_frames(30.0), _frames(30.1)]),
        ]
    }
    forward = compare(results, "cg-unet3", "unet3")
    assert forward.delta == pytest.approx(0.5)
    assert forward.verdict == "supported"
    assert compare(results, "unet3", "cg-unet3").verdict == "not supported"


def test_difference_smaller_than_its_uncertainty_is_within_noise():
    # frame-to-frame differences of ±0.3 dB around +0.05 dB over 40 frames: SE ~0.03 dB
    results = {
        "models": [
            _row("a", [_frames(30.05, phase=0.0)]),
            _row("b", [_frames(30.0, phase=2.0)]),
        ]
    }
    comparison = compare(results, "a", "b")
    assert abs(comparison.delta) < 2 * comparison.uncertainty
    assert comparison.verdict == "within noise"


def test_seeds_that_disagree_in_sign_are_within_noise():
    # every frame better in seed 0, worse in seed 1: the seed spread decides
    results = {
        "models": [
            _row("a", [_frames(31.0), _frames(29.9)]),
            _row("b", [_frames(30.0), _frames(30.0)]),
        ]
    }
    comparison = compare(results, "a", "b")
    assert comparison.delta > 0 and not comparison.signs_agree
    assert comparison.verdict == "within noise"


@pytest.mark.parametrize(
    ("verdicts", "combined"),
    [
        (["supported", "supported"], "supported"),
        (["partly supported", "partly supported"], "partly supported"),
        (["within noise", "within noise"], "within noise"),
        (["supported", "within noise"], "partly supported"),
        (["partly supported", "not supported"], "partly supported"),
        (["not supported", "within noise"], "not supported"),
    ],
)
def test_one_combiner_for_every_study(verdicts, combined):
    assert combine_verdicts(verdicts) == combined


def test_claims_cover_the_paper_and_say_what_is_missing():
    results = {
        "models": [
            _row("unet3", [_frames(29.0)] * 3, params=29_000),
            _row("unet6", [_frames(30.0)] * 3, params=1_900_000),
            _row("cg-unet3", [_frames(30.5)] * 3, params=32_000),
        ]
    }
    claims = {c.title: c for c in deblur_claims(results)}
    assert len(claims) == 13
    headline = claims["CG U-Net(3) beats U-Net(6) with ~60× fewer parameters"]
    assert headline.verdict == "supported" and "59×" in headline.evidence
    assert "seed" in headline.rule
    assert claims["CoordConv-UNet performs like U-Net(6)"].verdict == "inconclusive"
    assert "lacks coordconv-unet6" in claims["CoordConv-UNet performs like U-Net(6)"].evidence


def test_network_against_care_and_classical_deconvolution():
    network = _row("cg-unet3", [_frames(31.0)] * 3, params=32_000)
    rl = {**_row("sv-rl", [_frames(31.5, phase=0.4)], params=0), "stopped": "iterations 300"}
    wiener = {**_row("sv-wiener", [_frames(28.0)], params=0), "stopped": "balance 0.01"}
    care = _row("care-unet", [_frames(30.0)] * 3, params=334_000)
    claims = {c.title: c for c in deblur_claims({"models": [network, rl, wiener, care]})}
    classical = claims[
        "(ours) a trained network beats classical SV deconvolution with the true PSF field"
    ]
    # loses to RL with the true field, beats Wiener: one of each
    assert classical.verdict == "partly supported" and "iterations 300" in classical.evidence
    assert (
        claims["(ours) CG U-Net(3) beats CARE's configuration at equal budget"].verdict
        == "supported"
    )
    # judged with the network that is best on the val split, CG U-Net(3) shown beside
    better_care = _row("care-unet", [_frames(32.5)] * 3, params=334_000)
    claims = {c.title: c for c in deblur_claims({"models": [network, rl, wiener, better_care]})}
    classical = claims[
        "(ours) a trained network beats classical SV deconvolution with the true PSF field"
    ]
    assert classical.verdict == "supported"
    assert "best network on the val split: care-unet" in classical.evidence
    assert "cg-unet3 − sv-rl: Δ = -0.50" in classical.evidence
    claims = {c.title: c.verdict for c in deblur_claims({"models": [network, care]})}
    assert (
        claims["(ours) a trained network beats classical SV deconvolution with the true PSF field"]
        == "inconclusive"
    )
