"""The lens study end to end at a tiny size, and its verdicts and advice on set numbers."""

import json
from dataclasses import replace

import pytest

from coordgate.claims import combine_verdicts, comparison
from coordgate.cli import main
from coordgate.experiments import lenses
from coordgate.experiments._lenses_report import advice

TINY = replace(
    lenses.PRESETS["quick"].with_training(epochs=1, batch_size=4), frame=64, crop=32,
    images=10, base_channels=2, crops_per_frame=1, seeds=1, headline_seeds=1, rl_max_iterations=2,
)  # fmt: skip


def test_every_lens_trains_every_model_and_the_outputs_follow(tmp_path):
    results = lenses.run_study(TINY, tmp_path, lenses=("defocus", "tilted"), progress=False)
    assert [lens["name"] for lens in results["lenses"]] == ["defocus", "tilted"]
    for lens in results["lenses"]:
        assert set(lens["models"]) == {*lenses.MODELS, "sv-wiener", "sv-rl"}
        assert [(c["a"], c["b"]) for c in lens["comparisons"]] == list(lenses.COMPARISONS)
        assert (tmp_path / lens["name"] / "error_vs_position.png").is_file()
    # each lens blurs the same sharp frames with its own field
    assert results["lenses"][1]["psf_field"]["tilt"] == lenses.LENSES["tilted"].aberrations["tilt"]
    assert results["lenses"][0]["blurred_input"] != results["lenses"][1]["blurred_input"]
    stored = json.loads((tmp_path / "results.json").read_text())
    assert len(stored["claims"]) == 8 and all(c["rule"] for c in stored["claims"])
    # the best network on val against each classical method with the true field, per lens
    for lens in stored["lenses"]:
        assert lens["best_network"] in lenses.MODELS
        assert [(c["a"], c["b"]) for c in lens["versus_classical"]] == [
            (lens["best_network"], "sv-wiener"), (lens["best_network"], "sv-rl")
        ]  # fmt: skip
        assert lens["training_s"] > 0 and lens["harm"]
    classical = next(c for c in stored["claims"] if "classical SV deconvolution" in c["title"])
    per_lens = [combine_verdicts([c["verdict"] for c in lens["versus_classical"]])
                for lens in stored["lenses"]]  # fmt: skip
    assert classical["verdict"] == combine_verdicts(per_lens)
    for lens in stored["lenses"]:
        assert [c["verdict"] for c in lens["comparisons"]] == [
            _paired_verdict(c) for c in lens["comparisons"]
        ]
    gains = [comparison(lens, "cg-unet3", "unet3")["verdict"] for lens in stored["lenses"]]
    assert stored["claims"][0]["verdict"] == combine_verdicts(gains)
    report = (tmp_path / "report.md").read_text()
    assert "When to choose a CG U-Net" in report and "**tilted.**" in report
    assert "care-unet" in report and "SV RL (true field)" in report
    assert "Training took" in report and "with the true field known" in report
    assert (tmp_path / "lenses.png").stat().st_size > 0
    # no checkpoints are exported for the lens study
    assert not (tmp_path / "defocus" / "checkpoints").exists()


def _paired_verdict(row: dict) -> str:
    """'a beats b' from a stored comparison's numbers: Δ beyond ±2u, every seed agreeing."""
    agree = len({d > 0 for d in row["seed_deltas"]}) == 1
    if agree and row["delta"] > 2 * row["uncertainty"]:
        return "supported"
    if agree and row["delta"] < -2 * row["uncertainty"]:
        return "not supported"
    return "within noise"


def test_without_training_only_the_classical_rows_are_scored(tmp_path):
    results = lenses.run_study(TINY, tmp_path, lenses=("tilted",), progress=False, train=False)
    (lens,) = results["lenses"]
    assert set(lens["models"]) == {"sv-wiener", "sv-rl"} and not lens["comparisons"]
    assert lens["best_network"] is None and lens["versus_classical"] == []
    assert not (tmp_path / "tilted" / "runs").exists()
    assert "not measured" in results["claims"][0]["evidence"]


def test_unknown_lens_is_a_clean_error(tmp_path, capsys):
    with pytest.raises(ValueError, match="lenses must be some of"):
        lenses.run_study(TINY, tmp_path, lenses=("fisheye",))
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "lenses", "--out", str(tmp_path), "--lenses", "fisheye"])
    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reproduce", "lenses", "--out", str(tmp_path), "--models", "unet9"])
    assert "invalid choice" in capsys.readouterr().err


def _comparison(a, b, delta, u, verdict, seeds=(0.1,)):
    return {"a": a, "b": b, "delta": delta, "uncertainty": u, "verdict": verdict,
            "seed_deltas": list(seeds), "text": f"{a} − {b}"}  # fmt: skip


def _lens(name, gain, depth, seeds=(0.1,)):
    models = {n: {"params": p, "real_psnr": 25.0, "real_inner_psnr": 27.5, "psnr": 25.0,
                  "psnr_seeds": [25.0]}
              for n, p in (("unet3", 100), ("cg-unet3", 110), ("unet6", 6600))}  # fmt: skip
    return {
        "name": name,
        "models": models,
        "blurred_input_real": 26.0,
        "blurred_input_real_inner": 27.0,
        "edge_band_px": 32,
        "comparisons": [
            _comparison("cg-unet3", "unet3", gain[0], gain[1], gain[2], seeds),
            _comparison("cg-unet3", "unet6", depth[0], depth[1], depth[2]),
        ],
    }


def test_advice_follows_the_verdicts():
    text = advice(_lens("a", (0.5, 0.1, "supported"), (0.3, 0.1, "supported")))
    assert "CoordGate adds +0.50 ± 0.10 dB" in text and "choose the CG U-Net" in text
    assert "1/60 of its parameters" in text
    text = advice(_lens("b", (0.05, 0.1, "within noise"), (-0.6, 0.1, "not supported")))
    assert "nothing measurable" in text and "a deep plain U-Net is the better choice" in text
    # worse than the blurred input on whole real frames: the user is warned, and told how
    # it does away from the sensor's edge
    assert "makes whole real frames worse" in text
    assert "more than 32 px from the sensor's edge 27.50 dB" in text


def test_gain_claim_compares_each_lens_with_the_default():
    results = {"lenses": [
        _lens("defocus", (0.10, 0.02, "supported"), (0, 0.1, "within noise"), seeds=(0.1, 0.1)),
        _lens("tilted", (0.50, 0.05, "supported"), (0, 0.1, "within noise"), seeds=(0.4, 0.6)),
        _lens("other", (0.12, 0.05, "supported"), (0, 0.1, "within noise"), seeds=(0.0, 0.2)),
    ]}  # fmt: skip
    claim = lenses.lens_claims(results)[-1]
    assert "tilted: gain +0.50 dB vs defocus +0.10 dB, difference +0.40" in claim.evidence
    assert "(supported)" in claim.evidence and "(within noise)" in claim.evidence
    assert claim.verdict == "partly supported"


def test_advice_says_when_coordinates_as_input_do_as_well():
    lens = _lens("c", (0.2, 0.05, "supported"), (0.1, 0.05, "supported"))
    lens["comparisons"] += [
        _comparison("coordconv-unet6", "unet6", 0.5, 0.1, "supported"),
        _comparison("cg-unet3", "coordconv-unet6", -0.4, 0.3, "within noise"),
    ]
    text = advice(lens)
    assert "change U-Net(6) by +0.50 ± 0.10 dB (supported)" in text
    assert "it does as well as CG U-Net(3) within noise" in text
